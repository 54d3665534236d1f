#include "trm/coordinator/server.h"

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <condition_variable>
#include <filesystem>
#include <thread>

#include "grpc_services.h"
#include "http_api.h"
#include "http_server.h"
#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/common/net.h"
#include "trm/coordinator/metrics.h"
#include "trm/rpc/client.h"

namespace trm::coordinator {

namespace {

bool LoopbackAddress(const std::string& listen) {
  std::string host = listen.substr(0, listen.rfind(':'));
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  return IsLoopbackHost(host);
}

std::shared_ptr<grpc::ServerCredentials> ServerCredentials(const ServerOptions& o) {
  if (o.tls_cert.empty() != o.tls_key.empty()) InvalidArgument("--tls-cert and --tls-key go together");
  if (o.tls_cert.empty()) {
    if (!o.tls_client_ca.empty()) InvalidArgument("--tls-client-ca needs --tls-cert/--tls-key");
    if (!LoopbackAddress(o.listen) && !o.insecure)
      InvalidArgument("--listen " + o.listen +
                      ": plaintext outside loopback; give --tls-cert/--tls-key, or --insecure for development");
    if (!o.auth.enabled && !LoopbackAddress(o.listen))
      spdlog::warn("no --auth-tokens: anyone who reaches {} can submit and cancel jobs", o.listen);
    return grpc::InsecureServerCredentials();
  }
  grpc::SslServerCredentialsOptions ssl(o.tls_client_ca.empty()
                                            ? GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE
                                            : GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY);
  ssl.pem_key_cert_pairs.push_back({ReadFile(o.tls_key), ReadFile(o.tls_cert)});
  ssl.pem_root_certs = o.tls_client_ca.empty() ? "" : ReadFile(o.tls_client_ca);
  return grpc::SslServerCredentials(ssl);
}

}  // namespace

struct CoordinatorServer::Impl {
  ServerOptions opt;
  CoordinatorMetrics metrics;
  std::unique_ptr<MetricsServer> metrics_server;
  std::unique_ptr<Coordinator> coordinator;
  std::unique_ptr<Authorizer> auth;
  // After the coordinator and auth: destroyed first, so no request outlives what it uses (also
  // when the constructor throws after starting it).
  std::unique_ptr<HttpApi> http_api;
  std::unique_ptr<HttpServer> http_server;
  std::atomic<bool> stopping{false};
  std::unique_ptr<JobServiceImpl> jobs;
  std::unique_ptr<DatasetServiceImpl> datasets;
  std::unique_ptr<WorkerServiceImpl> workers;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
  std::thread ticker;
  std::mutex mu;
  std::condition_variable cv;
  bool shut = false;
};

CoordinatorServer::CoordinatorServer(ServerOptions options) : impl_(std::make_unique<Impl>()) {
  Impl& s = *impl_;
  s.opt = std::move(options);
  s.opt.coordinator.metrics = &s.metrics;
  // With auth, users must not make workers read arbitrary paths: data_path jobs need roots.
  if (s.opt.auth.enabled) s.opt.coordinator.require_data_roots = true;
  s.coordinator = std::make_unique<Coordinator>(s.opt.coordinator);
  if (!s.opt.metrics_listen.empty()) s.metrics_server = std::make_unique<MetricsServer>(s.opt.metrics_listen, s.metrics);
  s.auth = std::make_unique<Authorizer>(s.opt.auth);
  s.jobs = std::make_unique<JobServiceImpl>(s.coordinator.get(), &s.metrics, s.auth.get(), &s.stopping);
  s.datasets = std::make_unique<DatasetServiceImpl>(s.coordinator.get(), &s.metrics, s.auth.get());
  s.workers = std::make_unique<WorkerServiceImpl>(s.coordinator.get(), &s.metrics, s.auth.get());
  if (!s.opt.http_listen.empty()) {
    HttpApiOptions ho;
    ho.tls = !s.opt.tls_cert.empty();
    ho.hosts.push_back(SplitHostPort(s.opt.http_listen, "--http-listen", /*min_port=*/0).host);
    if (!s.opt.auth.enabled && !LoopbackAddress(s.opt.http_listen))
      spdlog::warn("no --auth-tokens: anyone who reaches the dashboard at {} can read and cancel jobs", s.opt.http_listen);
    s.http_api = std::make_unique<HttpApi>(s.coordinator.get(), s.auth.get(), ho);
    HttpServerOptions hs;
    hs.listen = s.opt.http_listen;
    hs.tls_cert = s.opt.tls_cert;
    hs.tls_key = s.opt.tls_key;
    hs.insecure = s.opt.insecure;
    hs.scratch_dir = (std::filesystem::path(s.opt.coordinator.data_dir) / "tmp").string();
    std::filesystem::create_directories(hs.scratch_dir);
    s.http_server = std::make_unique<HttpServer>(hs, s.http_api.get());
  }

  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder b;
  b.AddListeningPort(s.opt.listen, ServerCredentials(s.opt), &s.port);
  b.SetMaxReceiveMessageSize(rpc::kMaxMessageBytes);
  b.SetMaxSendMessageSize(rpc::kMaxMessageBytes);
  b.RegisterService(s.jobs.get());
  b.RegisterService(s.datasets.get());
  b.RegisterService(s.workers.get());
  s.server = b.BuildAndStart();
  if (!s.server || s.port == 0) ThrowError(Code::kUnavailable, "--listen " + s.opt.listen + ": cannot listen there");
  s.server->GetHealthCheckService()->SetServingStatus(true);
  s.ticker = std::thread([&s] {
    std::unique_lock<std::mutex> l(s.mu);
    std::string last_error;  // one log line per distinct failure, not one per tick
    while (!s.shut) {
      l.unlock();
      try {
        s.coordinator->Tick();
        if (!last_error.empty()) spdlog::info("scheduler: working again");
        last_error.clear();
      } catch (const std::exception& e) {
        // E.g. a full disk: keep serving reads, retry next tick.
        if (e.what() != last_error) spdlog::error("scheduler: {}", e.what());
        last_error = e.what();
      }
      l.lock();
      s.cv.wait_for(l, std::chrono::milliseconds(s.opt.tick_ms), [&] { return s.shut; });
    }
  });
  spdlog::info("coordinator listening on port {}{}{}", s.port,
               s.metrics_server ? ", metrics on port " + std::to_string(s.metrics_server->port()) : "",
               s.http_server ? ", dashboard at " + s.http_server->url() : "");
}

CoordinatorServer::~CoordinatorServer() { Shutdown(); }

int CoordinatorServer::port() const { return impl_->port; }
int CoordinatorServer::metrics_port() const { return impl_->metrics_server ? impl_->metrics_server->port() : 0; }
Coordinator& CoordinatorServer::coordinator() { return *impl_->coordinator; }
std::string CoordinatorServer::dashboard_url() const { return impl_->http_server ? impl_->http_server->url() : ""; }

int CoordinatorServer::ReloadTokens(const std::string& why) {
  v1::AuditEntry e;
  e.set_principal("operator");
  e.set_peer(why);
  e.set_method("ReloadTokens");
  e.set_target("--auth-tokens");
  try {
    const int n = impl_->auth->Reload();
    e.set_result("OK");
    impl_->coordinator->RecordAudit(e);
    spdlog::info("{}: reloaded {} token(s) from {}", why, n, impl_->opt.auth.tokens_file);
    return n;
  } catch (const Error& err) {
    e.set_result(std::string(CodeName(err.code())) + ": " + err.what());
    impl_->coordinator->RecordAudit(e);
    throw;
  }
}

void CoordinatorServer::Shutdown() {
  Impl& s = *impl_;
  {
    std::lock_guard<std::mutex> l(s.mu);
    if (s.shut) return;
    s.shut = true;
  }
  s.cv.notify_all();
  s.stopping = true;
  s.http_server.reset();  // its requests use the coordinator: done before it goes
  if (s.server) {
    s.server->GetHealthCheckService()->SetServingStatus(false);
    s.server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  }
  if (s.ticker.joinable()) s.ticker.join();
}

}  // namespace trm::coordinator
