#include "http_server.h"

#include <civetweb.h>
#include <spdlog/spdlog.h>
#include <fcntl.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <mutex>

#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/common/net.h"

namespace trm::coordinator {
namespace {

constexpr long long kMaxBody = 64 * 1024;  // a login form or a cancel: nothing bigger is accepted


std::string Header(mg_connection* conn, const char* name) {
  const char* v = mg_get_header(conn, name);
  return v ? v : "";
}

std::string Decode(const std::string& s, bool form) {
  std::string out(s.size() + 1, '\0');
  const int n = mg_url_decode(s.c_str(), static_cast<int>(s.size()), out.data(), static_cast<int>(out.size()), form);
  out.resize(n < 0 ? 0 : static_cast<size_t>(n));
  return out;
}

std::map<std::string, std::string> ParseQuery(const char* q) {
  std::map<std::string, std::string> out;
  if (!q) return out;
  const std::string s = q;
  size_t at = 0;
  while (at <= s.size()) {
    const size_t amp = std::min(s.find('&', at), s.size());
    const std::string kv = s.substr(at, amp - at);
    const size_t eq = kv.find('=');
    if (!kv.empty()) out[Decode(kv.substr(0, eq), true)] = eq == std::string::npos ? "" : Decode(kv.substr(eq + 1), true);
    at = amp + 1;
  }
  return out;
}

const char* Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 303: return "See Other";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 503: return "Service Unavailable";
    default: return "Error";
  }
}

}  // namespace

struct HttpServer::Impl {
  const HttpApi* api = nullptr;
  mg_context* ctx = nullptr;
  std::string host, scheme;
  int port = 0;

  static int Handle(mg_connection* conn, void* data) {
    auto* self = static_cast<Impl*>(data);
    const mg_request_info* info = mg_get_request_info(conn);
    HttpRequest req;
    req.method = info->request_method ? info->request_method : "";
    req.path = info->local_uri ? info->local_uri : "/";
    req.query = ParseQuery(info->query_string);
    req.authorization = Header(conn, "Authorization");
    req.cookie = Header(conn, "Cookie");
    req.csrf = Header(conn, "X-TRM-CSRF");
    req.host = Header(conn, "Host");
    req.origin = Header(conn, "Origin");
    req.peer = info->remote_addr;
    req.content_type = Header(conn, "Content-Type");
    HttpResponse resp;
    // The whole body is read (also past the limit, and chunked ones), so the answer is not lost
    // to a reset of a connection closed with unread data.
    char buf[4096];
    int n;
    bool too_big = info->content_length > kMaxBody;
    while (!(info->content_length > 4 * kMaxBody) && (n = mg_read(conn, buf, sizeof(buf))) > 0) {
      if (static_cast<long long>(req.body.size()) + n > kMaxBody) too_big = true;
      if (!too_big) req.body.append(buf, static_cast<size_t>(n));
    }
    if (too_big) {
      resp.status = 413;
      resp.body = "{\"error\":\"request body larger than 64 KiB\"}";
    } else {
      try {
        resp = self->api->Handle(req);
      } catch (const std::exception& e) {  // HttpApi turns trm::Error into statuses; anything else is a bug
        spdlog::error("dashboard: {} {}: {}", req.method, req.path, e.what());
        resp.status = 500;
        resp.body = "{\"error\":\"internal error\"}";
      }
    }
    const uint64_t length = resp.stream ? resp.stream_length : resp.body.size();
    std::string head = "HTTP/1.1 " + std::to_string(resp.status) + " " + Reason(resp.status) + "\r\n" +
                       "Content-Type: " + resp.content_type + "\r\nContent-Length: " + std::to_string(length) +
                       "\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n";
    for (const auto& [k, v] : resp.headers) head += k + ": " + v + "\r\n";
    head += "\r\n";
    mg_write(conn, head.data(), head.size());
    if (req.method == "HEAD") return static_cast<int>(resp.status);
    if (!resp.stream) {
      mg_write(conn, resp.body.data(), resp.body.size());
      return static_cast<int>(resp.status);
    }
    try {
      // mg_write returns the bytes written, 0 or less once the client is gone (each write has
      // request_timeout_ms).
      resp.stream([conn](const char* p, size_t n) { return mg_write(conn, p, n) == static_cast<int>(n); });
    } catch (const std::exception& e) {  // the headers are out: a short body is all that can say it
      spdlog::warn("dashboard: {} {}: stopped midway: {}", req.method, req.path, e.what());
    }
    return static_cast<int>(resp.status);
  }
};

HttpServer::HttpServer(const HttpServerOptions& o, const HttpApi* api) : impl_(std::make_unique<Impl>()) {
  impl_->api = api;
  const HostPort hp = SplitHostPort(o.listen, "--http-listen", /*min_port=*/0);  // port 0 picks a free one
  const bool tls = !o.tls_cert.empty();
  if (!tls && !o.insecure && !IsLoopbackHost(hp.host))
    InvalidArgument("--http-listen " + o.listen + ": plaintext off loopback; give --tls-cert/--tls-key (the dashboard "
                    "uses the API's certificate) or --insecure");
  static std::once_flag init;
  std::call_once(init, [] { mg_init_library(MG_FEATURES_TLS); });
  std::string pem;
  if (tls) {
    if (!mg_check_feature(MG_FEATURES_TLS)) ThrowError(Code::kFailedPrecondition, "--http-listen: this civetweb has no TLS support");
    // civetweb reads the certificate and its key from one file: written 0600 from the start,
    // removed once the server has loaded it.
    pem = (std::filesystem::path(o.scratch_dir) / "dashboard.pem").string();
    ::unlink(pem.c_str());
    const std::string both = ReadFile(o.tls_cert) + "\n" + ReadFile(o.tls_key);
    const int fd = ::open(pem.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0 || ::write(fd, both.data(), both.size()) != static_cast<ssize_t>(both.size())) {
      if (fd >= 0) ::close(fd);
      IoError("--http-listen: cannot write " + pem);
    }
    ::close(fd);
  }
  const std::string host = hp.host.find(':') != std::string::npos ? "[" + hp.host + "]" : hp.host;
  const std::string ports = host + ":" + std::to_string(hp.port) + (tls ? "s" : "");
  const std::string threads = std::to_string(o.threads), timeout = std::to_string(o.request_timeout_ms);
  // No CORS: civetweb would otherwise answer every preflight with '*'.
  std::vector<const char*> options = {"listening_ports", ports.c_str(), "num_threads", threads.c_str(),
                                      "request_timeout_ms", timeout.c_str(), "enable_directory_listing", "no",
                                      "access_control_allow_origin", "", "access_control_allow_methods", "",
                                      "access_control_allow_headers", ""};
  if (tls) {
    options.push_back("ssl_certificate");
    options.push_back(pem.c_str());
  }
  options.push_back(nullptr);
  mg_callbacks callbacks{};
  callbacks.log_message = [](const mg_connection*, const char* message) {
    spdlog::warn("dashboard: {}", message);
    return 1;
  };
  char error[256] = {0};
  mg_init_data init_data{};
  init_data.callbacks = &callbacks;
  init_data.configuration_options = options.data();
  mg_error_data error_data{};
  error_data.text = error;
  error_data.text_buffer_size = sizeof(error);
  impl_->ctx = mg_start2(&init_data, &error_data);
  if (!pem.empty()) ::unlink(pem.c_str());
  if (!impl_->ctx) ThrowError(Code::kUnavailable, "--http-listen " + o.listen + ": cannot serve: " + error);
  mg_set_request_handler(impl_->ctx, "/", &Impl::Handle, impl_.get());
  mg_server_port sp[4];
  const int n = mg_get_server_ports(impl_->ctx, 4, sp);
  impl_->port = n > 0 ? sp[0].port : 0;
  impl_->host = host;
  impl_->scheme = tls ? "https" : "http";
}

HttpServer::~HttpServer() {
  if (impl_->ctx) mg_stop(impl_->ctx);
}

int HttpServer::port() const { return impl_->port; }
std::string HttpServer::url() const { return impl_->scheme + "://" + impl_->host + ":" + std::to_string(impl_->port) + "/"; }

}  // namespace trm::coordinator
