#include "trm/coordinator/auth.h"

#include <sstream>

#include "trm/common/error.h"
#include "trm/common/file_util.h"

namespace trm::coordinator {
namespace {

// Compares without an early exit, so response time does not reveal how much of a guess matched.
bool SecretEquals(const std::string& a, const std::string& b) {
  if (a.size() != b.size()) return false;
  unsigned char diff = 0;
  for (size_t i = 0; i < a.size(); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

std::string BearerToken(const std::string& header) {
  static const std::string kPrefix = "Bearer ";
  if (header.compare(0, kPrefix.size(), kPrefix) != 0) return "";
  return header.substr(kPrefix.size());
}

}  // namespace

const char* RoleName(Role r) {
  switch (r) {
    case Role::kRead: return "read";
    case Role::kSubmit: return "submit";
    case Role::kAdmin: return "admin";
    default: return "none";
  }
}

AuthConfig LoadTokenFile(const std::string& path) {
  AuthConfig c;
  c.enabled = true;
  std::istringstream in(ReadFile(path));
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    const auto hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::istringstream f(line);
    std::string token, role, name;
    if (!(f >> token)) continue;
    const std::string where = path + ":" + std::to_string(n);
    if (!(f >> role)) InvalidArgument(where + ": expected 'TOKEN ROLE [NAME]'");
    f >> name;
    if (token.size() < 16) InvalidArgument(where + ": token shorter than 16 characters");
    Role r = role == "read" ? Role::kRead : role == "submit" ? Role::kSubmit : role == "admin" ? Role::kAdmin : Role::kNone;
    if (r == Role::kNone) InvalidArgument(where + ": role '" + role + "': expected read, submit or admin");
    if (c.tokens.count(token)) InvalidArgument(where + ": the same token appears twice");
    c.tokens[token] = r;
    c.names[token] = name.empty() ? "token@line" + std::to_string(n) : name;
  }
  if (c.tokens.empty()) InvalidArgument(path + ": no tokens");
  return c;
}

std::string Authorizer::RequireUser(const std::string& header, Role needed, const char* method) const {
  if (!config_.enabled) return "";
  const std::string token = BearerToken(header);
  if (token.empty())
    ThrowError(Code::kUnauthenticated, std::string(method) + ": no credentials; set TRM_TOKEN or TRM_TOKEN_FILE");
  for (const auto& [t, role] : config_.tokens) {
    if (!SecretEquals(t, token)) continue;
    if (static_cast<int>(role) < static_cast<int>(needed))
      ThrowError(Code::kPermissionDenied, std::string(method) + " needs the " + RoleName(needed) + " role; " +
                                              config_.names.at(t) + " has " + RoleName(role));
    return config_.names.at(t);
  }
  ThrowError(Code::kUnauthenticated, std::string(method) + ": unknown token");
}

void Authorizer::RequireWorker(const std::string& header, bool peer_cert_verified, const char* method) const {
  if (config_.require_worker_cert && !peer_cert_verified)
    ThrowError(Code::kUnauthenticated, std::string(method) + ": workers must present a client certificate (mutual TLS)");
  if (config_.worker_secret.empty()) return;
  if (!SecretEquals(BearerToken(header), config_.worker_secret))
    ThrowError(Code::kUnauthenticated, std::string(method) + ": workers must present the worker secret");
}

}  // namespace trm::coordinator
