// The coordinator as a gRPC server: JobService, DatasetService and WorkerService adapters over
// a Coordinator, the standard health service, server reflection (grpcurl works without the
// .proto files) and, when asked, a Prometheus endpoint.
#pragma once

#include <memory>
#include <string>

#include "trm/coordinator/auth.h"
#include "trm/coordinator/coordinator.h"

namespace trm::coordinator {

struct ServerOptions {
  std::string listen = "127.0.0.1:50051";  // port 0 picks a free one (see port())
  std::string metrics_listen;            // HOST:PORT for /metrics; empty = none
  // HOST:PORT of the web dashboard (docs/dashboard.md; port 0 picks a free one); empty = none.
  // It uses the TLS certificate and the tokens of the gRPC API.
  std::string http_listen;
  int tick_ms = 200;                     // scheduling / liveness cadence
  // TLS (PEM files). Without a certificate the server speaks plaintext, which it accepts only
  // on a loopback address unless `insecure` says otherwise.
  std::string tls_cert, tls_key;
  std::string tls_client_ca;             // verify client certificates against this CA (mutual TLS)
  bool insecure = false;
  AuthConfig auth;
  CoordinatorOptions coordinator;
};

class CoordinatorServer {
 public:
  // Opens the state and starts serving. Throws trm::Error when the address cannot be bound or
  // the state cannot be opened.
  explicit CoordinatorServer(ServerOptions options);
  ~CoordinatorServer();  // Shutdown()
  CoordinatorServer(const CoordinatorServer&) = delete;
  CoordinatorServer& operator=(const CoordinatorServer&) = delete;

  int port() const;
  int metrics_port() const;  // 0 without a metrics endpoint
  std::string dashboard_url() const;  // "" without --http-listen
  Coordinator& coordinator();
  // Re-reads --auth-tokens (SIGHUP; `why` names the trigger in the log and the audit log).
  // Throws trm::Error and keeps the old tokens when the file is bad. Returns the token count.
  int ReloadTokens(const std::string& why);
  // Stops accepting calls, ends open streams within a second, stops the tick thread.
  void Shutdown();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trm::coordinator
