#include "trm/coordinator/auth.h"

#include <sstream>

#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/common/sha256.h"
#include "trm/rpc/transfer.h"

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
  c.tokens_file = path;
  std::istringstream in(ReadFile(path));
  std::string line;
  int n = 0;
  while (std::getline(in, line)) {
    ++n;
    const auto hash = line.find('#');
    if (hash != std::string::npos) line.resize(hash);
    std::istringstream f(line);
    std::string token, role, name, extra;
    if (!(f >> token)) continue;
    const std::string where = path + ":" + std::to_string(n);
    if (!(f >> role)) InvalidArgument(where + ": expected 'TOKEN ROLE NAME' or 'sha256:HEX ROLE NAME'");
    f >> name;
    if (f >> extra) InvalidArgument(where + ": '" + extra + "' after the name: expected 'TOKEN ROLE NAME'");
    Role r = role == "read" ? Role::kRead : role == "submit" ? Role::kSubmit : role == "admin" ? Role::kAdmin : Role::kNone;
    if (r == Role::kNone) InvalidArgument(where + ": role '" + role + "': expected read, submit or admin");
    if (name.empty()) name = "token-line" + std::to_string(n);
    // A NAME is a namespace (OWNER/NAME) and an owner: a name component. "local" owns what was
    // made without auth (and data directories from before owners); no token may claim it.
    if (!rpc::NameOk(name) || name.size() > 64)
      InvalidArgument(where + ": name '" + name + "': expected up to 64 letters, digits, '.', '_', '-' or ':' "
                              "(not starting with '.')");
    if (name == "local") InvalidArgument(where + ": the name 'local' is reserved (the owner of work made without auth)");
    if (token.rfind("sha256:", 0) == 0) {
      const std::string hex = token.substr(7);
      if (hex.size() != 64 || hex.find_first_not_of("0123456789abcdef") != std::string::npos)
        InvalidArgument(where + ": expected sha256: and 64 lower-case hex digits (sha256sum of the token)");
      if (c.hashed.count(hex)) InvalidArgument(where + ": the same token hash appears twice");
      c.hashed[hex] = r;
      c.hashed_names[hex] = name;
      continue;
    }
    if (token.size() < 16) InvalidArgument(where + ": token shorter than 16 characters");
    if (c.tokens.count(token)) InvalidArgument(where + ": the same token appears twice");
    c.tokens[token] = r;
    c.names[token] = name;
  }
  if (c.tokens.empty() && c.hashed.empty()) InvalidArgument(path + ": no tokens");
  return c;
}

bool Authorizer::enabled() const {
  std::lock_guard<std::mutex> l(mu_);
  return config_.enabled;
}

Principal Authorizer::RequireUser(const std::string& header, Role needed, const char* method) const {
  std::lock_guard<std::mutex> l(mu_);
  if (!config_.enabled) return Principal{};
  const std::string token = BearerToken(header);
  if (token.empty())
    ThrowError(Code::kUnauthenticated, std::string(method) + ": no credentials; set TRM_TOKEN or TRM_TOKEN_FILE");
  auto check = [&](Role role, const std::string& name) {
    if (static_cast<int>(role) < static_cast<int>(needed))
      ThrowError(Code::kPermissionDenied,
                 std::string(method) + " needs the " + RoleName(needed) + " role; " + name + " has " + RoleName(role));
    return Principal{name, role};
  };
  for (const auto& [t, role] : config_.tokens)
    if (SecretEquals(t, token)) return check(role, config_.names.at(t));
  if (!config_.hashed.empty()) {
    const std::string digest = Sha256Hex(token);
    for (const auto& [h, role] : config_.hashed)
      if (SecretEquals(h, digest)) return check(role, config_.hashed_names.at(h));
  }
  ThrowError(Code::kUnauthenticated, std::string(method) + ": unknown token");
}

void Authorizer::RequireWorker(const std::string& header, bool peer_cert_verified, const char* method) const {
  std::lock_guard<std::mutex> l(mu_);
  if (config_.require_worker_cert && !peer_cert_verified)
    ThrowError(Code::kUnauthenticated, std::string(method) + ": workers must present a client certificate (mutual TLS)");
  if (config_.worker_secret.empty()) return;
  if (!SecretEquals(BearerToken(header), config_.worker_secret))
    ThrowError(Code::kUnauthenticated, std::string(method) + ": workers must present the worker secret");
}

int Authorizer::Reload() {
  std::string path;
  {
    std::lock_guard<std::mutex> l(mu_);
    if (!config_.enabled || config_.tokens_file.empty())
      ThrowError(Code::kFailedPrecondition, "ReloadTokens: the coordinator runs without --auth-tokens");
    path = config_.tokens_file;
  }
  AuthConfig fresh = LoadTokenFile(path);  // read outside the lock; throws, changing nothing
  std::lock_guard<std::mutex> l(mu_);
  config_.tokens = std::move(fresh.tokens);
  config_.names = std::move(fresh.names);
  config_.hashed = std::move(fresh.hashed);
  config_.hashed_names = std::move(fresh.hashed_names);
  return static_cast<int>(config_.tokens.size() + config_.hashed.size());
}

}  // namespace trm::coordinator
