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

// A channel to HOST:PORT (insecure; TLS arrives with authentication). Throws InvalidArgument for
// an address without a port.
std::shared_ptr<grpc::Channel> MakeChannel(const std::string& address);

// Sets ctx's deadline to now + timeout.
void SetDeadline(grpc::ClientContext* ctx, std::chrono::milliseconds timeout);

// The coordinator address from --coordinator, else $TRM_COORDINATOR, else localhost:50051.
std::string CoordinatorAddress(const std::string& flag_value);

}  // namespace trm::rpc
