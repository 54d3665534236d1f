// What the worker agent needs from the coordinator (WorkerService), behind an interface so the
// agent logic is tested with a fake and never sees gRPC types. Every method either succeeds or
// throws trm::Error (kUnavailable / kDeadlineExceeded when the coordinator cannot be reached);
// every implementation bounds every call with a deadline.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "trm/rpc/transfer.h"
#include "trm/v1/trm.pb.h"

namespace trm::agent {

class CoordinatorClient {
 public:
  virtual ~CoordinatorClient() = default;
  virtual v1::RegisterResponse Register(const v1::RegisterRequest& req) = 0;
  virtual v1::HeartbeatResponse Heartbeat(const v1::HeartbeatRequest& req) = 0;
  virtual v1::ReportEventsResponse ReportEvents(const v1::ReportEventsRequest& req) = 0;
  // Streams `dir` (described by header.manifest) after the header.
  virtual v1::CheckpointInfo UploadCheckpoint(const std::string& dir, const v1::CheckpointUploadHeader& header) = 0;
  // Download into `dest`, which appears only complete and verified (SHA-256 of every file; for a
  // whole dataset also the content hash == `hash`). Resumes broken streams. Returns the manifest.
  // A `shard` with world_size > 0 asks for only that part of the dataset (ShardSpec).
  virtual v1::Manifest FetchDataset(const std::string& hash, const v1::ShardSpec& shard, const std::string& dest) = 0;
  // `weights_only`: the checkpoint's weights-only form (FetchCheckpointRequest.weights_only).
  virtual v1::Manifest FetchCheckpoint(const std::string& job_id, const std::string& name, const std::string& dest,
                                       bool weights_only) = 0;
};

struct GrpcClientOptions {
  int64_t unary_timeout_ms = 5000;        // Register / Heartbeat / ReportEvents
  int64_t transfer_timeout_ms = 600000;   // one upload or download stream
  int transfer_attempts = 5;              // streams tried per download (resuming) before giving up
  uint64_t max_transfer_bytes = uint64_t{64} << 30;
};

// The WorkerService client over a channel to HOST:PORT (trm::rpc::MakeChannel).
std::unique_ptr<CoordinatorClient> MakeGrpcCoordinatorClient(const std::string& address,
                                                             const GrpcClientOptions& options = {});

// The download loop shared by every client: `stream_once(offset, receiver)` runs one stream from
// `offset` into `receiver` and returns when it ends (throwing on a broken stream); it is called
// again from receiver.received() until the transfer is complete (at most `attempts` streams).
// Then the content hash is checked against the manifest's and against `expected_hash` (when not
// empty), the files are verified and renamed to `dest`. A `dest` that appears meanwhile (another
// download of the same content) is accepted.
v1::Manifest ReceiveResumable(const std::function<void(uint64_t offset, rpc::FileReceiver& rx)>& stream_once,
                              const std::string& dest, const std::string& expected_hash, int attempts,
                              uint64_t max_total_bytes);

}  // namespace trm::agent
