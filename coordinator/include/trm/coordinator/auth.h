// Who may call what. Users present a bearer token with a role; workers present the shared
// worker secret. Both travel as "authorization: Bearer <token>" (over TLS outside loopback
// development). Plain logic: the gRPC adapters pass it the header they received.
#pragma once

#include <map>
#include <string>

namespace trm::coordinator {

enum class Role { kNone = 0, kRead = 1, kSubmit = 2, kAdmin = 3 };

const char* RoleName(Role r);

struct AuthConfig {
  bool enabled = false;                 // false: every call is allowed (loopback development)
  std::map<std::string, Role> tokens;   // user token -> role
  std::map<std::string, std::string> names;  // user token -> name, for logs
  std::string worker_secret;            // "" = worker calls need no secret
  bool require_worker_cert = false;     // mutual TLS: workers must present a verified certificate
};

// Reads a token file: one "TOKEN ROLE [NAME]" per line (ROLE: read | submit | admin), '#'
// comments and blank lines ignored. Tokens of fewer than 16 characters are refused. Errors
// name the file and line.
AuthConfig LoadTokenFile(const std::string& path);

class Authorizer {
 public:
  explicit Authorizer(AuthConfig config) : config_(std::move(config)) {}
  bool enabled() const { return config_.enabled; }
  // Throws kUnauthenticated (no or unknown token) or kPermissionDenied (role too low). `method`
  // names the call in the message. Returns the caller's name ("" when auth is off).
  std::string RequireUser(const std::string& authorization_header, Role needed, const char* method) const;
  // Throws kUnauthenticated unless the header carries the worker secret (and, with
  // require_worker_cert, the peer's TLS certificate was verified).
  void RequireWorker(const std::string& authorization_header, bool peer_cert_verified, const char* method) const;

 private:
  AuthConfig config_;
};

}  // namespace trm::coordinator
