#include "grpc_services.h"

#include <chrono>

#include "trm/common/error.h"
#include "trm/rpc/status.h"
#include "trm/rpc/transfer.h"

namespace trm::coordinator {
namespace {

using Clock = std::chrono::steady_clock;

// Times a handler into the RPC histogram.
class RpcTimer {
 public:
  RpcTimer(CoordinatorMetrics* m, const char* method) : m_(m), method_(method), t0_(Clock::now()) {}
  ~RpcTimer() {
    if (m_) m_->ObserveRpc(method_, std::chrono::duration<double>(Clock::now() - t0_).count());
  }

 private:
  CoordinatorMetrics* m_;
  const char* method_;
  Clock::time_point t0_;
};

std::string AuthHeader(const grpc::ServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  return it == md.end() ? std::string() : std::string(it->second.data(), it->second.size());
}

void RequireJobId(const std::string& id) {
  if (id.empty()) InvalidArgument("job_id is required");
  rpc::CheckName(id, "job_id");
}

grpc::Status Stream(const FileSet& files, uint64_t offset, grpc::ServerContext* ctx,
                    grpc::ServerWriter<v1::TransferMessage>* w) {
  const bool done = rpc::SendFiles(files.dir, files.manifest, offset, [&](const v1::TransferMessage& m) {
    return !ctx->IsCancelled() && w->Write(m);
  });
  return done ? grpc::Status::OK : grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
}

}  // namespace

grpc::Status JobServiceImpl::SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req,
                                       v1::SubmitJobResponse* resp) {
  RpcTimer t(m_, "SubmitJob");
  return rpc::Guard([&] {
    auth_->RequireUser(AuthHeader(ctx), Role::kSubmit, "SubmitJob"); resp->set_job_id(c_->SubmitJob(req->spec())); });
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req, v1::Job* resp) {
  RpcTimer t(m_, "GetJob");
  return rpc::Guard([&] {
    auth_->RequireUser(AuthHeader(ctx), Role::kRead, "GetJob");
    RequireJobId(req->job_id());
    *resp = c_->GetJob(req->job_id());
  });
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                                      v1::ListJobsResponse* resp) {
  RpcTimer t(m_, "ListJobs");
  return rpc::Guard([&] {
    auth_->RequireUser(AuthHeader(ctx), Role::kRead, "ListJobs");
    std::vector<v1::JobState> states;
    for (int s : req->states()) states.push_back(static_cast<v1::JobState>(s));
    if (req->limit() < 0 || req->limit() > 10000) InvalidArgument("limit: expected 0 to 10000");
    for (auto& j : c_->ListJobs(states, req->limit())) *resp->add_jobs() = std::move(j);
  });
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req, v1::Job* resp) {
  RpcTimer t(m_, "CancelJob");
  return rpc::Guard([&] {
    auth_->RequireUser(AuthHeader(ctx), Role::kSubmit, "CancelJob");
    RequireJobId(req->job_id());
    *resp = c_->CancelJob(req->job_id());
  });
}

grpc::Status JobServiceImpl::WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                                      grpc::ServerWriter<v1::JobEvent>* w) {
  return rpc::Guard([&] {
    auth_->RequireUser(AuthHeader(ctx), Role::kRead, "WatchJob");
    RequireJobId(req->job_id());
    const auto slot = watches_.Acquire();
    uint64_t after = req->after_seq();
    c_->GetJob(req->job_id());  // NOT_FOUND before the stream starts
    while (!ctx->IsCancelled() && !stopping_->load()) {
      auto events = c_->ReadEvents(req->job_id(), after, req->include_logs(), 500);
      for (const auto& e : events) {
        if (!w->Write(e)) return;
        after = e.seq();
      }
      if (!events.empty()) continue;
      if (!req->follow()) return;
      // Wakes on the job's next event; the timeout bounds how late a cancel is noticed.
      if (!c_->WaitForEvents(req->job_id(), after, std::chrono::milliseconds(500))) {
        // Ended: deliver anything that raced in, then close.
        for (const auto& e : c_->ReadEvents(req->job_id(), after, req->include_logs(), 100000))
          if (!w->Write(e)) return;
        return;
      }
    }
    if (stopping_->load()) ThrowError(Code::kUnavailable, "the coordinator is shutting down; reconnect");
  });
}

grpc::Status JobServiceImpl::GetMetrics(grpc::ServerContext* ctx, const v1::GetMetricsRequest* req,
                                        v1::GetMetricsResponse* resp) {
  RpcTimer t(m_, "GetMetrics");
  return rpc::Guard([&] {
    auth_->RequireUser(AuthHeader(ctx), Role::kRead, "GetMetrics");
    RequireJobId(req->job_id());
    if (req->limit() < 0) InvalidArgument("limit: must not be negative");
    for (auto& m : c_->GetMetrics(req->job_id(), req->from_step(), req->limit())) *resp->add_points() = std::move(m);
  });
}

grpc::Status JobServiceImpl::ListCheckpoints(grpc::ServerContext* ctx, const v1::ListCheckpointsRequest* req,
                                             v1::ListCheckpointsResponse* resp) {
  RpcTimer t(m_, "ListCheckpoints");
  return rpc::Guard([&] {
    auth_->RequireUser(AuthHeader(ctx), Role::kRead, "ListCheckpoints");
    RequireJobId(req->job_id());
    for (auto& c : c_->ListCheckpoints(req->job_id())) *resp->add_checkpoints() = std::move(c);
  });
}

grpc::Status JobServiceImpl::DownloadCheckpoint(grpc::ServerContext* ctx, const v1::DownloadCheckpointRequest* req,
                                                grpc::ServerWriter<v1::TransferMessage>* w) {
  grpc::Status s;
  grpc::Status g = rpc::Guard([&] {
    auth_->RequireUser(AuthHeader(ctx), Role::kRead, "DownloadCheckpoint");
    RequireJobId(req->job_id());
    const auto slot = downloads_.Acquire();
    if (req->selector().size() > 256) InvalidArgument("selector: longer than 256 characters");
    FileSet files = c_->ResolveCheckpoint(req->job_id(), req->selector());
    s = Stream(files, req->offset(), ctx, w);
  });
  return g.ok() ? s : g;
}

grpc::Status JobServiceImpl::ListWorkers(grpc::ServerContext* ctx, const v1::ListWorkersRequest*,
                                         v1::ListWorkersResponse* resp) {
  RpcTimer t(m_, "ListWorkers");
  return rpc::Guard([&] {
    auth_->RequireUser(AuthHeader(ctx), Role::kRead, "ListWorkers");
    for (auto& w : c_->ListWorkers()) *resp->add_workers() = std::move(w);
  });
}

grpc::Status DatasetServiceImpl::PushDataset(grpc::ServerContext* ctx, grpc::ServerReader<v1::TransferMessage>* r,
                                             v1::DatasetInfo* resp) {
  return rpc::Guard([&] {
    auth_->RequireUser(AuthHeader(ctx), Role::kSubmit, "PushDataset");
    v1::TransferMessage msg;
    if (!r->Read(&msg) || !msg.has_manifest()) InvalidArgument("PushDataset: the first message must be the manifest");
    rpc::CheckName(msg.manifest().name(), "manifest.name (the dataset name)");
    rpc::FileReceiver receiver(c_->NewUploadDir("dataset"), c_->max_dataset_bytes());
    receiver.OnManifest(msg.manifest());
    while (r->Read(&msg)) receiver.OnMessage(msg);
    *resp = c_->CommitDataset(&receiver);
  });
}

grpc::Status DatasetServiceImpl::ListDatasets(grpc::ServerContext* ctx, const v1::ListDatasetsRequest*,
                                              v1::ListDatasetsResponse* resp) {
  return rpc::Guard([&] {
    auth_->RequireUser(AuthHeader(ctx), Role::kRead, "ListDatasets");
    for (auto& d : c_->ListDatasets()) *resp->add_datasets() = std::move(d);
  });
}

grpc::Status WorkerServiceImpl::Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                                         v1::RegisterResponse* resp) {
  RpcTimer t(m_, "Register");
  return rpc::Guard([&] {
    auth_->RequireWorker(AuthHeader(ctx), ctx->auth_context()->IsPeerAuthenticated(), "Register"); *resp = c_->Register(*req); });
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                                          v1::HeartbeatResponse* resp) {
  RpcTimer t(m_, "Heartbeat");
  return rpc::Guard([&] {
    auth_->RequireWorker(AuthHeader(ctx), ctx->auth_context()->IsPeerAuthenticated(), "Heartbeat"); *resp = c_->Heartbeat(*req); });
}

grpc::Status WorkerServiceImpl::ReportEvents(grpc::ServerContext* ctx, const v1::ReportEventsRequest* req,
                                             v1::ReportEventsResponse* resp) {
  RpcTimer t(m_, "ReportEvents");
  return rpc::Guard([&] {
    auth_->RequireWorker(AuthHeader(ctx), ctx->auth_context()->IsPeerAuthenticated(), "ReportEvents");
    if (req->events_size() > 10000) InvalidArgument("events: more than 10000 in one report");
    events_.Take("worker " + req->worker_id(), req->events_size());
    *resp = c_->ReportEvents(*req);
  });
}

grpc::Status WorkerServiceImpl::UploadCheckpoint(grpc::ServerContext* ctx, grpc::ServerReader<v1::CheckpointUpload>* r,
                                                 v1::UploadCheckpointResponse* resp) {
  return rpc::Guard([&] {
    auth_->RequireWorker(AuthHeader(ctx), ctx->auth_context()->IsPeerAuthenticated(), "UploadCheckpoint");
    const auto slot = transfers_.Acquire();
    v1::CheckpointUpload msg;
    if (!r->Read(&msg) || !msg.has_header()) InvalidArgument("UploadCheckpoint: the first message must be the header");
    const v1::CheckpointUploadHeader header = msg.header();
    c_->CheckCheckpointUpload(header);
    try {
      rpc::FileReceiver receiver(c_->NewUploadDir("checkpoint"), c_->max_checkpoint_bytes());
      receiver.OnManifest(header.manifest());
      while (r->Read(&msg)) {
        if (!msg.has_chunk()) InvalidArgument("UploadCheckpoint: only chunks may follow the header");
        receiver.OnChunk(msg.chunk());
      }
      *resp->mutable_info() = c_->CommitCheckpoint(header, &receiver);
    } catch (const Error& e) {
      c_->CheckpointUploadFailed(header, e);
      throw;
    }
  });
}

grpc::Status WorkerServiceImpl::FetchDataset(grpc::ServerContext* ctx, const v1::FetchDatasetRequest* req,
                                             grpc::ServerWriter<v1::TransferMessage>* w) {
  grpc::Status s;
  grpc::Status g = rpc::Guard([&] {
    auth_->RequireWorker(AuthHeader(ctx), ctx->auth_context()->IsPeerAuthenticated(), "FetchDataset");
    const auto slot = transfers_.Acquire();
    const bool shard = req->shard().world_size() > 0;  // an absent shard reads as world_size 0
    s = Stream(shard ? c_->DatasetShardFiles(req->content_sha256(), req->shard()) : c_->DatasetFiles(req->content_sha256()),
               req->offset(), ctx, w);
  });
  return g.ok() ? s : g;
}

grpc::Status WorkerServiceImpl::FetchCheckpoint(grpc::ServerContext* ctx, const v1::FetchCheckpointRequest* req,
                                                grpc::ServerWriter<v1::TransferMessage>* w) {
  grpc::Status s;
  grpc::Status g = rpc::Guard([&] {
    auth_->RequireWorker(AuthHeader(ctx), ctx->auth_context()->IsPeerAuthenticated(), "FetchCheckpoint");
    const auto slot = transfers_.Acquire();
    RequireJobId(req->job_id());
    rpc::CheckName(req->name(), "name");
    s = Stream(c_->ResolveCheckpoint(req->job_id(), req->name()), req->offset(), ctx, w);
  });
  return g.ok() ? s : g;
}

}  // namespace trm::coordinator
