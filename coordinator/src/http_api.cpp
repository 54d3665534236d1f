#include "http_api.h"

#include <google/protobuf/util/json_util.h>

#include <chrono>
#include <cmath>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "trm/common/error.h"
#include "trm/common/net.h"
#include "tar_stream.h"
#include "web_assets.h"

namespace trm::coordinator {
namespace {

// trm::Error codes as HTTP statuses (docs/error-policy.md: converted at the edge, as for gRPC).
int HttpStatus(Code c) {
  switch (c) {
    case Code::kInvalidArgument: return 400;
    case Code::kUnauthenticated: return 401;
    case Code::kPermissionDenied: return 403;
    case Code::kNotFound: return 404;
    case Code::kFailedPrecondition: return 409;
    case Code::kResourceExhausted: return 429;
    case Code::kUnavailable: return 503;
    default: return 500;
  }
}

std::string Json(const google::protobuf::Message& m) {
  google::protobuf::util::JsonPrintOptions o;
  o.preserve_proto_field_names = true;
  std::string out;
  if (!google::protobuf::util::MessageToJsonString(m, &out, o).ok()) Internal("cannot print " + m.GetTypeName() + " as JSON");
  return out;
}

template <typename Messages>
std::string JsonArray(const Messages& ms) {
  std::string out = "[";
  for (const auto& m : ms) out += (out.size() > 1 ? "," : "") + Json(m);
  return out + "]";
}

HttpResponse JsonResponse(std::string body, int status = 200) {
  HttpResponse r;
  r.status = status;
  r.body = std::move(body);
  r.headers.emplace_back("Cache-Control", "no-store");
  return r;
}

// Invalid UTF-8 (a path or query echoed back) is replaced, never a throw.
std::string Dump(const nlohmann::json& j) { return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace); }

HttpResponse ErrorResponse(int status, const std::string& message) {
  return JsonResponse(Dump(nlohmann::json{{"error", message}}), status);
}

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The host part of a Host or Origin value ("http://h:1" / "h:1" / "[::1]:1" -> h / ::1).
std::string HostOf(std::string v) {
  if (const size_t scheme = v.find("://"); scheme != std::string::npos) v = v.substr(scheme + 3);
  if (!v.empty() && v[0] == '[') return v.substr(1, v.find(']') - 1);
  return v.substr(0, v.find(':'));
}

HttpResponse Asset(const WebAsset& a) {
  HttpResponse r;
  r.content_type = a.content_type;
  r.body = a.body;
  // The pages may only run their own script and talk to this origin.
  r.headers.emplace_back("Content-Security-Policy",
                         "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'");
  r.headers.emplace_back("X-Content-Type-Options", "nosniff");
  return r;
}

int64_t QueryInt(const HttpRequest& r, const std::string& key, int64_t fallback, int64_t lo, int64_t hi) {
  auto it = r.query.find(key);
  if (it == r.query.end() || it->second.empty()) return fallback;
  char* end = nullptr;
  errno = 0;
  const long long v = std::strtoll(it->second.c_str(), &end, 10);
  if (*end || errno == ERANGE || v < lo || v > hi)
    InvalidArgument("query " + key + "='" + it->second + "': expected an integer in [" + std::to_string(lo) + ", " +
                    std::to_string(hi) + "]");
  return v;
}

std::vector<std::string> SplitPath(const std::string& path) {
  std::vector<std::string> parts;
  size_t at = 1;
  while (at <= path.size()) {
    const size_t slash = std::min(path.find('/', at), path.size());
    if (slash > at) parts.push_back(path.substr(at, slash - at));
    at = slash + 1;
  }
  return parts;
}

std::string FormValue(const std::string& body, const std::string& key) {
  size_t at = 0;
  while (at <= body.size()) {
    const size_t amp = std::min(body.find('&', at), body.size());
    const std::string kv = body.substr(at, amp - at);
    const size_t eq = kv.find('=');
    if (eq != std::string::npos && kv.substr(0, eq) == key) {
      std::string v;
      const std::string raw = kv.substr(eq + 1);
      for (size_t i = 0; i < raw.size(); ++i) {
        if (raw[i] == '+') {
          v += ' ';
        } else if (raw[i] == '%' && i + 2 < raw.size() && std::isxdigit(static_cast<unsigned char>(raw[i + 1])) &&
                   std::isxdigit(static_cast<unsigned char>(raw[i + 2]))) {
          v += static_cast<char>(std::stoi(raw.substr(i + 1, 2), nullptr, 16));
          i += 2;
        } else {
          v += raw[i];
        }
      }
      return v;
    }
    at = amp + 1;
  }
  return "";
}

std::string RandomHex(size_t bytes) {
  std::random_device rd;
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (size_t i = 0; i < bytes; ++i) {
    const unsigned b = rd() & 0xff;
    out += kHex[b >> 4];
    out += kHex[b & 15];
  }
  return out;
}

// A job's metrics as the pages draw them: training series downsampled together (by the loss's
// shape), evaluation points (few) whole.
std::string MetricsJson(const std::vector<v1::StepMetrics>& points, size_t max_points, uint64_t last_seq) {
  std::vector<const v1::StepMetrics*> train, eval;
  for (const auto& p : points) (p.eval() ? eval : train).push_back(&p);
  std::vector<double> loss;
  for (const auto* p : train) {
    auto it = p->values().find("lm_loss");
    loss.push_back(it == p->values().end() ? std::numeric_limits<double>::quiet_NaN() : it->second);
  }
  auto series = [](const std::vector<const v1::StepMetrics*>& ps, const std::vector<size_t>& keep) {
    nlohmann::json steps = nlohmann::json::array(), values = nlohmann::json::object();
    for (size_t k = 0; k < keep.size(); ++k) {
      const v1::StepMetrics& p = *ps[keep[k]];
      steps.push_back(p.step());
      for (const auto& [name, v] : p.values()) {
        if (!values.contains(name)) values[name] = nlohmann::json::array();
        auto& column = values[name];
        while (column.size() < k) column.push_back(nullptr);  // a key not every point has
        column.push_back(std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr));
      }
    }
    for (auto& [name, column] : values.items())
      while (column.size() < keep.size()) column.push_back(nullptr);
    return nlohmann::json{{"steps", steps}, {"values", values}};
  };
  std::vector<size_t> all_eval(eval.size());
  for (size_t i = 0; i < eval.size(); ++i) all_eval[i] = i;
  nlohmann::json out = {{"train", series(train, DownsampleIndices(loss, max_points))},
                        {"eval", series(eval, all_eval)},
                        {"train_points", train.size()},
                        {"total_steps", points.empty() ? 0 : points.back().total_steps()},
                        {"last_seq", last_seq}};
  return Dump(out);
}

}  // namespace

std::vector<size_t> DownsampleIndices(const std::vector<double>& values, size_t max_points) {
  const size_t n = values.size();
  std::vector<size_t> keep;
  max_points = std::max<size_t>(max_points, 4);  // the ends and one bucket's two extremes
  if (n <= max_points) {
    for (size_t i = 0; i < n; ++i) keep.push_back(i);
    return keep;
  }
  const size_t buckets = std::max<size_t>(1, (max_points - 2) / 2);
  keep.push_back(0);
  const size_t inner = n - 2;
  for (size_t b = 0; b < buckets; ++b) {
    const size_t lo = 1 + inner * b / buckets, hi = 1 + inner * (b + 1) / buckets;
    if (lo >= hi) continue;
    size_t mn = lo, mx = lo;
    for (size_t i = lo; i < hi; ++i) {
      if (!std::isfinite(values[i])) continue;
      if (!std::isfinite(values[mn]) || values[i] < values[mn]) mn = i;
      if (!std::isfinite(values[mx]) || values[i] > values[mx]) mx = i;
    }
    keep.push_back(std::min(mn, mx));
    if (mn != mx) keep.push_back(std::max(mn, mx));
  }
  keep.push_back(n - 1);
  return keep;
}

std::string CookieValue(const std::string& header, const std::string& name) {
  size_t at = 0;
  while (at < header.size()) {
    while (at < header.size() && (header[at] == ' ' || header[at] == ';')) ++at;
    const size_t end = std::min(header.find(';', at), header.size());
    const std::string kv = header.substr(at, end - at);
    const size_t eq = kv.find('=');
    if (eq != std::string::npos && kv.substr(0, eq) == name) return kv.substr(eq + 1);
    at = end + 1;
  }
  return "";
}

HttpApi::HttpApi(Coordinator* coordinator, const Authorizer* auth, HttpApiOptions options)
    : c_(coordinator), auth_(auth), opt_(std::move(options)) {}

std::string HttpApi::NewSession(const std::string& token) const {
  const std::string id = RandomHex(24);
  std::lock_guard<std::mutex> l(mu_);
  const int64_t now = NowMs();
  for (auto it = sessions_.begin(); it != sessions_.end();)  // drop the expired ones
    it = it->second.second < now ? sessions_.erase(it) : std::next(it);
  if (sessions_.size() >= 10000) sessions_.erase(sessions_.begin());
  sessions_[id] = {token, now + opt_.session_ttl_ms};
  return id;
}

std::string HttpApi::SessionToken(const std::string& id) const {
  if (id.empty()) return "";
  std::lock_guard<std::mutex> l(mu_);
  auto it = sessions_.find(id);
  if (it == sessions_.end() || it->second.second < NowMs()) return "";
  return it->second.first;
}

void HttpApi::EndSession(const std::string& id) const {
  std::lock_guard<std::mutex> l(mu_);
  sessions_.erase(id);
}

HttpResponse HttpApi::Handle(const HttpRequest& req) const {
  const std::vector<std::string> parts = SplitPath(req.path);
  const bool api = !parts.empty() && parts[0] == "api";
  const bool get = req.method == "GET" || req.method == "HEAD";
  const std::string secure = opt_.tls ? "; Secure" : "";
  {
    const std::string host = HostOf(req.host);
    // Without auth, only this server's names: a page of another site whose name was rebound to
    // this address (DNS rebinding) gets nothing. With auth it has no session for that name.
    bool known = IsLoopbackHost(host);
    for (const auto& h : opt_.hosts) known = known || host == h;
    if (!known && !auth_->enabled())
      return ErrorResponse(421, "Host '" + req.host + "' is not this dashboard's (--http-listen)");
    // A state change only from our own pages (browsers send Origin with every POST).
    if (req.method != "GET" && req.method != "HEAD" && !req.origin.empty() && HostOf(req.origin) != host)
      return ErrorResponse(403, "cross-origin " + req.method + " refused");
  }
  try {
    // Assets and the login page carry no data: they need no token.
    if (get && parts.size() == 2 && parts[0] == "static") {
      if (const WebAsset* a = FindWebAsset(parts[1])) return Asset(*a);
      return ErrorResponse(404, "no such file: " + req.path);
    }
    if (req.method == "POST" && req.path == "/login") {
      const std::string token = FormValue(req.body, "token");
      HttpResponse r;
      r.status = 303;
      r.content_type = "text/plain";
      // The cookie carries the token as it is: only tokens of cookie-safe characters sign in
      // this way (any token works as an Authorization header).
      const bool cookie_safe = !token.empty() && token.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                                                         "0123456789-._~+/=:") == std::string::npos;
      try {
        if (!cookie_safe) ThrowError(Code::kUnauthenticated, "token");
        auth_->RequireUser("Bearer " + token, Role::kRead, "dashboard login");
      } catch (const Error&) {
        r.headers.emplace_back("Location", "/?login=failed");
        return r;
      }
      r.headers.emplace_back("Set-Cookie", "trm_session=" + NewSession(token) + "; Path=/; HttpOnly; SameSite=Strict" + secure);
      r.headers.emplace_back("Set-Cookie", "trm_csrf=" + RandomHex(16) + "; Path=/; SameSite=Strict" + secure);
      r.headers.emplace_back("Location", "/");
      return r;
    }
    if (req.method == "POST" && req.path == "/logout") {
      HttpResponse r;
      r.status = 303;
      r.content_type = "text/plain";
      EndSession(CookieValue(req.cookie, "trm_session"));
      r.headers.emplace_back("Set-Cookie", "trm_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict" + secure);
      r.headers.emplace_back("Location", "/");
      return r;
    }

    // Everything else shows data: the caller must be allowed to read it.
    std::string token = SessionToken(CookieValue(req.cookie, "trm_session"));
    std::string authorization = req.authorization.empty() && !token.empty() ? "Bearer " + token : req.authorization;
    Principal who;
    try {
      who = auth_->RequireUser(authorization, Role::kRead, "dashboard");
    } catch (const Error& e) {
      if (api || !get) return ErrorResponse(HttpStatus(e.code()), e.what());
      HttpResponse r = Asset(*FindWebAsset("login.html"));
      r.status = e.code() == Code::kUnauthenticated ? 401 : HttpStatus(e.code());
      return r;
    }

    if (!api) {
      if (!get) return ErrorResponse(405, req.method + " " + req.path + ": only GET");
      const bool page = parts.empty() || (parts.size() == 2 && parts[0] == "jobs") ||
                        (parts.size() == 1 && (parts[0] == "workers" || parts[0] == "datasets" || parts[0] == "queue"));
      if (!page) return ErrorResponse(404, "no such page: " + req.path);
      HttpResponse r = Asset(*FindWebAsset("index.html"));
      // The page's script sends it back as X-TRM-CSRF with a cancel; set once per browser.
      if (CookieValue(req.cookie, "trm_csrf").empty())
        r.headers.emplace_back("Set-Cookie", "trm_csrf=" + RandomHex(16) + "; Path=/; SameSite=Strict" + secure);
      return r;
    }

    // /api/...
    if (parts.size() == 2 && parts[1] == "whoami" && get)
      return JsonResponse(Dump(nlohmann::json{{"name", who.name}, {"role", RoleName(who.role)}, {"auth", auth_->enabled()}}));
    if (parts.size() == 2 && parts[1] == "jobs" && get) {
      std::vector<v1::JobState> states;
      if (auto it = req.query.find("state"); it != req.query.end() && !it->second.empty()) {
        v1::JobState s;
        std::string name = it->second;
        for (char& ch : name) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
        if (!v1::JobState_Parse("JOB_" + name, &s) || s == v1::JOB_STATE_UNSPECIFIED)
          InvalidArgument("query state='" + it->second + "': expected queued, running, succeeded, failed or cancelled");
        states.push_back(s);
      }
      const auto owner = req.query.count("owner") ? req.query.at("owner") : std::string();
      const int limit = static_cast<int>(QueryInt(req, "limit", 500, 1, 10000));
      return JsonResponse("{\"jobs\":" + JsonArray(c_->ListJobs(states, limit, who, owner)) + "}");
    }
    if (parts.size() == 3 && parts[1] == "jobs" && get) {
      const v1::Job job = c_->GetJob(parts[2], who);
      // Attempts and their reasons are the state events (their own index: a short read).
      const std::vector<v1::JobEvent> states = c_->StateEvents(parts[2], who);
      return JsonResponse("{\"job\":" + Json(job) + ",\"checkpoints\":" + JsonArray(c_->ListCheckpoints(parts[2], who)) +
                          ",\"states\":" + JsonArray(states) + "}");
    }
    if (parts.size() == 4 && parts[1] == "jobs" && parts[3] == "metrics" && get) {
      const size_t points = static_cast<size_t>(QueryInt(req, "points", static_cast<int64_t>(opt_.max_points), 2,
                                                         static_cast<int64_t>(opt_.max_points)));
      uint64_t last_seq = 0;
      std::vector<v1::StepMetrics> all = c_->GetMetrics(parts[2], 0, 0, who, &last_seq);
      return JsonResponse(MetricsJson(all, points, last_seq));
    }
    if (parts.size() == 4 && parts[1] == "jobs" && parts[3] == "events" && get) {
      const auto after = static_cast<uint64_t>(QueryInt(req, "after", 0, 0, std::numeric_limits<int64_t>::max()));
      const int limit = static_cast<int>(QueryInt(req, "limit", 500, 1, 5000));
      const bool logs = req.query.count("logs") && req.query.at("logs") == "1";
      const auto events = c_->ReadEvents(parts[2], after, logs, limit, who);
      const uint64_t last = events.empty() ? after : events.back().seq();
      return JsonResponse("{\"events\":" + JsonArray(events) + ",\"last_seq\":" + std::to_string(last) + "}");
    }
    if (parts.size() == 4 && parts[1] == "jobs" && parts[3] == "logs" && get) {
      const int n = static_cast<int>(QueryInt(req, "lines", 300, 1, 5000));
      return JsonResponse("{\"events\":" + JsonArray(c_->TailLogs(parts[2], n, who)) + "}");
    }
    if (parts.size() == 6 && parts[1] == "jobs" && parts[3] == "checkpoints" && parts[5] == "download" && get) {
      // The checkpoint's directory as one tar (the files trmctl pull writes), read as it is sent.
      const bool weights_only = req.query.count("weights_only") && req.query.at("weights_only") == "1";
      if (downloads_->fetch_add(1) >= opt_.max_downloads) {
        downloads_->fetch_sub(1);
        HttpResponse busy = ErrorResponse(503, std::to_string(opt_.max_downloads) + " checkpoint downloads are running; try again shortly");
        busy.headers.emplace_back("Retry-After", "10");
        return busy;
      }
      // Given back when the response (and its stream) is gone, however the request ends.
      std::shared_ptr<void> slot(nullptr, [d = downloads_](void*) { d->fetch_sub(1); });
      FileSet files = c_->ResolveCheckpoint(parts[2], parts[4], weights_only, who);
      std::string prefix = parts[2] + "-" + parts[4] + (weights_only ? "-weights" : "");
      for (char& ch : prefix)
        if (!std::isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.') ch = '_';
      HttpResponse r;
      r.content_type = "application/x-tar";
      r.headers.emplace_back("Content-Disposition", "attachment; filename=\"" + prefix + ".tar\"");
      r.headers.emplace_back("Cache-Control", "no-store");
      r.stream_length = TarSize(files, prefix);
      r.stream = [files = std::move(files), prefix, slot](const std::function<bool(const char*, size_t)>& write) {
        return WriteTar(files, prefix, write);
      };
      return r;
    }
    if (parts.size() == 4 && parts[1] == "jobs" && parts[3] == "cancel") {
      if (req.method != "POST") return ErrorResponse(405, "cancel: POST only");
      // Recorded in the audit log like the gRPC CancelJob, refusals included.
      v1::AuditEntry audit;
      audit.set_principal(who.name);
      audit.set_peer("dashboard " + req.peer);
      audit.set_method("CancelJob");
      audit.set_target(parts[2].substr(0, 512));
      try {
        const std::string csrf = CookieValue(req.cookie, "trm_csrf");
        if (csrf.empty() || req.csrf != csrf)
          ThrowError(Code::kPermissionDenied,
                     "cancel: the X-TRM-CSRF header must equal the trm_csrf cookie (send it from the dashboard)");
        const Principal canceller = auth_->RequireUser(authorization, Role::kSubmit, "dashboard cancel");
        HttpResponse r = JsonResponse(Json(c_->CancelJob(parts[2], canceller)));
        audit.set_result("OK");
        c_->RecordAudit(audit);
        return r;
      } catch (const Error& e) {
        audit.set_result(std::string(CodeName(e.code())) + ": " + std::string(e.what()).substr(0, 1024));
        c_->RecordAudit(audit);
        throw;
      }
    }
    if (parts.size() == 2 && parts[1] == "workers" && get)
      return JsonResponse("{\"workers\":" + JsonArray(c_->ListWorkers(who)) + "}");
    if (parts.size() == 2 && parts[1] == "datasets" && get)
      return JsonResponse("{\"datasets\":" + JsonArray(c_->ListDatasets(who)) + "}");
    if (parts.size() == 2 && parts[1] == "queue" && get) return JsonResponse(Json(c_->GetQueue(who)));
    return ErrorResponse(404, "no such endpoint: " + req.method + " " + req.path);
  } catch (const Error& e) {
    return ErrorResponse(HttpStatus(e.code()), e.what());
  }
}

}  // namespace trm::coordinator
