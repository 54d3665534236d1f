// The dashboard's JSON API (/api/...), its pages and its login, as plain logic over a
// Coordinator: the HTTP server (http_server.h) is a thin adapter that hands every request here,
// so each endpoint is unit-tested without a socket. The JSON comes from the same Coordinator
// calls as the gRPC API, with trm.proto's field names; the pages hold no logic of their own.
//
// Security is the gRPC API's: with auth on, every /api call and every page needs a user token,
// sent as "Authorization: Bearer TOKEN" or kept in the HttpOnly, SameSite=Strict cookie that the
// login form sets (Secure under TLS); without one, pages show the login form and /api answers
// 401, never data. The one state-changing call (cancel) also needs the X-TRM-CSRF header to
// equal the trm_csrf cookie (a cross-site page can send neither).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "trm/coordinator/auth.h"
#include "trm/coordinator/coordinator.h"

namespace trm::coordinator {

struct HttpRequest {
  std::string method;                        // GET, POST, ...
  std::string path;                          // decoded, without the query string
  std::map<std::string, std::string> query;  // decoded
  std::string authorization;                 // the Authorization header
  std::string cookie;                        // the Cookie header
  std::string csrf;                          // the X-TRM-CSRF header
  std::string host;                          // the Host header
  std::string origin;                        // the Origin header ("" when the browser sent none)
  std::string peer;                          // the client's address (for the audit log)
  std::string content_type;
  std::string body;
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra: Set-Cookie, Location, ...
  // A body too large to hold (a checkpoint download), set instead of `body`: the server sends
  // stream_length as Content-Length, then calls `stream`, which passes the bytes to `write` and
  // returns false when `write` did (the client went away). It may throw trm::Error midway: the
  // server then closes the connection, and the client sees a short body.
  uint64_t stream_length = 0;
  std::function<bool(const std::function<bool(const char*, size_t)>& write)> stream;
};

struct HttpApiOptions {
  bool tls = false;        // cookies get Secure
  size_t max_points = 2000;  // a metrics series is downsampled to at most this many points
  // The Host names requests may carry besides localhost / 127.0.0.1 / [::1] (the --http-listen
  // host): anything else is refused, so a page of another site whose name was rebound to this
  // address (DNS rebinding) gets nothing. Empty: the loopback names only.
  std::vector<std::string> hosts;
  int64_t session_ttl_ms = 12 * 3600 * 1000;  // a login lasts this long (then the form again)
  // Checkpoint downloads at once (each holds one of the server's threads while it lasts); more
  // get 503 with Retry-After, so the pages stay served.
  int max_downloads = 2;
};

// Thread-safe (every call goes through the Coordinator's own lock); borrows `coordinator` and
// `auth`, which must outlive it.
class HttpApi {
 public:
  HttpApi(Coordinator* coordinator, const Authorizer* auth, HttpApiOptions options = {});
  HttpResponse Handle(const HttpRequest& request) const;

 private:
  std::string NewSession(const std::string& token) const;
  std::string SessionToken(const std::string& id) const;  // "" when unknown or expired
  void EndSession(const std::string& id) const;

  Coordinator* c_;
  const Authorizer* auth_;
  HttpApiOptions opt_;
  // Login sessions: a random id in the cookie, the token here (so the browser never holds the
  // API token, logout ends the session, and every request still checks the token, so a
  // tokens-file reload revokes it).
  mutable std::mutex mu_;
  mutable std::map<std::string, std::pair<std::string, int64_t>> sessions_;  // id -> token, expiry
  // Downloads running; shared with their responses, which may outlive a request's Handle call.
  std::shared_ptr<std::atomic<int>> downloads_ = std::make_shared<std::atomic<int>>(0);
};

// Indices of at most `max_points` of `values` that keep the curve's shape: the first and last,
// and in each of (max_points - 2) / 2 equal buckets of the rest its smallest and largest value
// (spikes survive), in order. All indices when there are no more than max_points.
std::vector<size_t> DownsampleIndices(const std::vector<double>& values, size_t max_points);

// The value of cookie `name` in a Cookie header ("" when absent).
std::string CookieValue(const std::string& cookie_header, const std::string& name);

}  // namespace trm::coordinator
