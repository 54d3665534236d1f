// The dashboard's HTTP(S) server: civetweb accepting connections and handing each request to
// HttpApi (http_api.h), which holds all the logic. Started by CoordinatorServer when
// --http-listen is given.
#pragma once

#include <memory>
#include <string>

#include "http_api.h"

namespace trm::coordinator {

struct HttpServerOptions {
  std::string listen;              // HOST:PORT (port 0: a free one)
  std::string tls_cert, tls_key;   // PEM files: HTTPS with the gRPC API's certificate
  std::string scratch_dir;         // where the combined certificate file civetweb reads is written
  bool insecure = false;           // allow plaintext on a non-loopback address
  int threads = 8;
  int request_timeout_ms = 30000;  // a client that stalls mid-request is dropped
};

class HttpServer {
 public:
  // Starts serving (throws trm::Error naming the address when it cannot). Borrows `api`.
  HttpServer(const HttpServerOptions& options, const HttpApi* api);
  ~HttpServer();  // stops accepting and waits for requests in flight
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;
  int port() const;
  std::string url() const;  // http(s)://HOST:PORT/

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trm::coordinator
