// Client-side plumbing shared by trmctl, trm-worker and the benchmarks: channels and deadlines.
// Every call made through these helpers has a deadline (DEVELOPERS.md: no RPC waits forever).
#pragma once

#include <grpcpp/channel.h>
#include <grpcpp/client_context.h>

#include <chrono>
#include <memory>
#include <string>

namespace trm::rpc {

// Largest message either side accepts: chunks are 1 MiB, so this only bounds hostile peers.
constexpr int kMaxMessageBytes = 8 << 20;
constexpr size_t kChunkBytes = 1 << 20;

// How a client proves who it is and checks the server.
struct ClientSecurity {
  std::string token;      // sent as "authorization: Bearer <token>" on every call; "" = none
  std::string ca_file;    // TLS: verify the server against this CA; "" = plaintext
  std::string cert_file;  // mutual TLS: this client's certificate and key (PEM)
  std::string key_file;
};
// Users: $TRM_TOKEN (or the file $TRM_TOKEN_FILE), $TRM_TLS_CA, $TRM_TLS_CERT, $TRM_TLS_KEY.
ClientSecurity UserSecurityFromEnv();
// Workers: the shared secret $TRM_WORKER_SECRET (or the file $TRM_WORKER_SECRET_FILE), same TLS.
ClientSecurity WorkerSecurityFromEnv();

// A channel to HOST:PORT. Throws InvalidArgument for an address without a port, NotFound for
// unreadable certificate files.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address, const ClientSecurity& security);
// MakeChannel(address, UserSecurityFromEnv()).
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address);

// Sets ctx's deadline to now + timeout.
void SetDeadline(grpc::ClientContext* ctx, std::chrono::milliseconds timeout);

// The coordinator address from --coordinator, else $TRM_COORDINATOR, else localhost:50051.
std::string CoordinatorAddress(const std::string& flag_value);

}  // namespace trm::rpc
