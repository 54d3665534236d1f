#include <grpcpp/client_context.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>

#include "trm/agent/coordinator_client.h"
#include "trm/common/error.h"
#include "trm/rpc/client.h"
#include "trm/rpc/status.h"
#include "trm/v1/trm.grpc.pb.h"

namespace trm::agent {
namespace fs = std::filesystem;
using std::chrono::milliseconds;

v1::Manifest ReceiveResumable(const std::function<void(uint64_t offset, rpc::FileReceiver& rx)>& stream_once,
                              const std::string& dest, const std::string& expected_hash, int attempts,
                              uint64_t max_total_bytes) {
  static std::atomic<int> counter{0};
  // Unique per download, so concurrent downloads of one thing never share a directory.
  const std::string tmp = dest + ".tmp-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  std::error_code ec;
  fs::create_directories(fs::path(dest).parent_path(), ec);
  rpc::FileReceiver rx(tmp, max_total_bytes);
  std::string last_error;
  for (int i = 0; i < attempts && !(rx.has_manifest() && rx.complete()); ++i) {
    try {
      stream_once(rx.received(), rx);
    } catch (const Error& e) {
      // A broken stream resumes from what arrived; a refusal (bad name, unknown hash) will not
      // get better by asking again.
      if (e.code() != Code::kUnavailable && e.code() != Code::kDeadlineExceeded && e.code() != Code::kDataLoss) throw;
      last_error = e.what();
      spdlog::warn("download of {} broke after {} bytes ({}); resuming", dest, rx.received(), last_error);
    }
  }
  if (!rx.has_manifest() || !rx.complete()) {
    ThrowError(Code::kUnavailable, dest + ": download incomplete after " + std::to_string(attempts) +
                                       " stream(s)" + (last_error.empty() ? "" : ": " + last_error));
  }
  const v1::Manifest manifest = rx.manifest();
  const std::string hash = rpc::ContentHash(manifest);
  if (!manifest.content_sha256().empty() && hash != manifest.content_sha256())
    DataLoss(dest + ": manifest content_sha256 " + manifest.content_sha256() + " does not match its files (" + hash + ")");
  if (!expected_hash.empty() && hash != expected_hash)
    DataLoss(dest + ": received content " + hash + " but asked for " + expected_hash);
  try {
    rx.Commit(dest);
  } catch (const Error&) {
    if (!fs::exists(dest)) throw;  // else someone else committed the same content first
  }
  return manifest;
}

namespace {

class GrpcCoordinatorClient : public CoordinatorClient {
 public:
  GrpcCoordinatorClient(const std::string& address, const GrpcClientOptions& o)
      : opt_(o), stub_(v1::WorkerService::NewStub(rpc::MakeChannel(address, rpc::WorkerSecurityFromEnv()))) {}

  v1::RegisterResponse Register(const v1::RegisterRequest& req) override {
    grpc::ClientContext ctx;
    rpc::SetDeadline(&ctx, milliseconds(opt_.unary_timeout_ms));
    v1::RegisterResponse resp;
    rpc::ThrowIfFailed(stub_->Register(&ctx, req, &resp), "Register");
    return resp;
  }

  v1::HeartbeatResponse Heartbeat(const v1::HeartbeatRequest& req) override {
    grpc::ClientContext ctx;
    rpc::SetDeadline(&ctx, milliseconds(opt_.unary_timeout_ms));
    v1::HeartbeatResponse resp;
    rpc::ThrowIfFailed(stub_->Heartbeat(&ctx, req, &resp), "Heartbeat");
    return resp;
  }

  v1::ReportEventsResponse ReportEvents(const v1::ReportEventsRequest& req) override {
    grpc::ClientContext ctx;
    rpc::SetDeadline(&ctx, milliseconds(opt_.unary_timeout_ms));
    v1::ReportEventsResponse resp;
    rpc::ThrowIfFailed(stub_->ReportEvents(&ctx, req, &resp), "ReportEvents");
    return resp;
  }

  v1::CheckpointInfo UploadCheckpoint(const std::string& dir, const v1::CheckpointUploadHeader& header) override {
    grpc::ClientContext ctx;
    rpc::SetDeadline(&ctx, milliseconds(opt_.transfer_timeout_ms));
    v1::UploadCheckpointResponse resp;
    auto writer = stub_->UploadCheckpoint(&ctx, &resp);
    v1::CheckpointUpload msg;
    *msg.mutable_header() = header;
    bool ok = writer->Write(msg);
    if (ok) {
      ok = rpc::SendChunks(dir, header.manifest(), 0, [&](const v1::Chunk& c) {
        v1::CheckpointUpload m;
        *m.mutable_chunk() = c;
        return writer->Write(m);
      });
    }
    if (ok) writer->WritesDone();
    rpc::ThrowIfFailed(writer->Finish(), "UploadCheckpoint " + header.job_id() + "/" + header.info().name());
    return resp.info();
  }

  v1::Manifest FetchDataset(const std::string& hash, const v1::ShardSpec& shard, const std::string& dest) override {
    const bool whole = shard.world_size() == 0;
    return ReceiveResumable(
        [&](uint64_t offset, rpc::FileReceiver& rx) {
          v1::FetchDatasetRequest req;
          req.set_content_sha256(hash);
          req.set_offset(offset);
          if (!whole) *req.mutable_shard() = shard;
          grpc::ClientContext ctx;
          rpc::SetDeadline(&ctx, milliseconds(opt_.transfer_timeout_ms));
          auto reader = stub_->FetchDataset(&ctx, req);
          Drain(*reader, rx, "FetchDataset " + hash);
        },
        dest, whole ? hash : std::string(), opt_.transfer_attempts, opt_.max_transfer_bytes);
  }

  v1::Manifest FetchCheckpoint(const std::string& job_id, const std::string& name, const std::string& dest,
                               bool weights_only) override {
    return ReceiveResumable(
        [&](uint64_t offset, rpc::FileReceiver& rx) {
          v1::FetchCheckpointRequest req;
          req.set_job_id(job_id);
          req.set_name(name);
          req.set_offset(offset);
          req.set_weights_only(weights_only);
          grpc::ClientContext ctx;
          rpc::SetDeadline(&ctx, milliseconds(opt_.transfer_timeout_ms));
          auto reader = stub_->FetchCheckpoint(&ctx, req);
          Drain(*reader, rx, "FetchCheckpoint " + job_id + "/" + name);
        },
        dest, "", opt_.transfer_attempts, opt_.max_transfer_bytes);
  }

 private:
  static void Drain(grpc::ClientReader<v1::TransferMessage>& reader, rpc::FileReceiver& rx, const std::string& what) {
    v1::TransferMessage m;
    while (reader.Read(&m)) rx.OnMessage(m);
    rpc::ThrowIfFailed(reader.Finish(), what);
  }

  GrpcClientOptions opt_;
  std::unique_ptr<v1::WorkerService::Stub> stub_;
};

}  // namespace

std::unique_ptr<CoordinatorClient> MakeGrpcCoordinatorClient(const std::string& address,
                                                             const GrpcClientOptions& options) {
  return std::make_unique<GrpcCoordinatorClient>(address, options);
}

}  // namespace trm::agent
