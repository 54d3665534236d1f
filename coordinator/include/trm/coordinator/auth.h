// Who may call what. Users present a bearer token with a role; workers present the shared
// worker secret. Both travel as "authorization: Bearer <token>" (over TLS outside loopback
// development). Plain logic: the gRPC adapters pass it the header they received.
#pragma once

#include <map>
#include <mutex>
#include <string>

namespace trm::coordinator {

enum class Role { kNone = 0, kRead = 1, kSubmit = 2, kAdmin = 3 };

const char* RoleName(Role r);

// The caller of a user RPC: the token's NAME and role. Without auth every caller is "local",
// an admin (one person on a loopback coordinator).
struct Principal {
  std::string name = "local";
  Role role = Role::kAdmin;
  bool admin() const { return role == Role::kAdmin; }
};

struct AuthConfig {
  bool enabled = false;                 // false: every call is allowed (loopback development)
  std::string tokens_file;              // where the tokens came from (reloads read it again)
  std::map<std::string, Role> tokens;   // user token -> role
  std::map<std::string, std::string> names;  // user token -> name (the owner of what it creates)
  // "sha256:HEX ROLE NAME" lines: the token's SHA-256 (lower-case hex) -> role / name, so the
  // file need not hold the tokens themselves.
  std::map<std::string, Role> hashed;
  std::map<std::string, std::string> hashed_names;
  std::string worker_secret;            // "" = worker calls need no secret
  bool require_worker_cert = false;     // mutual TLS: workers must present a verified certificate
};

// Reads a token file: one "TOKEN ROLE NAME" or "sha256:HEX ROLE NAME" per line (ROLE: read |
// submit | admin; NAME: the user, up to 64 letters, digits, '.', '_', '-' or ':', not "local"),
// '#' comments and blank lines ignored. A line without NAME is named token-lineN. Tokens of
// fewer than 16 characters are refused. Errors name the file and line.
AuthConfig LoadTokenFile(const std::string& path);

// Thread-safe: RequireUser may run on every RPC thread while Reload replaces the tokens.
class Authorizer {
 public:
  explicit Authorizer(AuthConfig config) : config_(std::move(config)) {}
  bool enabled() const;
  // Throws kUnauthenticated (no or unknown token) or kPermissionDenied (role too low). `method`
  // names the call in the message. Returns the caller (Principal{} when auth is off).
  Principal RequireUser(const std::string& authorization_header, Role needed, const char* method) const;
  // Throws kUnauthenticated unless the header carries the worker secret (and, with
  // require_worker_cert, the peer's TLS certificate was verified).
  void RequireWorker(const std::string& authorization_header, bool peer_cert_verified, const char* method) const;
  // Re-reads the tokens file (kFailedPrecondition without auth). On error nothing changes.
  // Returns the number of user tokens now accepted.
  int Reload();

 private:
  mutable std::mutex mu_;
  AuthConfig config_;
};

}  // namespace trm::coordinator
