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
    for (auto& j : c_->ListJobs(states, req->limit())) *resp->add_jobs() = std::move(j);
  });
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req, v1::Job* resp) {
  RpcTimer t(m_, "CancelJob");
  return rpc::Guard([&] {
    auth_->RequireUser(AuthHeader(ctx), Role::kSubmit, "CancelJob");
    *resp = c_->CancelJob(req->job_id());
  });
}

grpc::Status JobServiceImpl::WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                                      grpc::ServerWriter<v1::JobEvent>* w) {
  return rpc::Guard([&] {
    auth_->RequireUser(AuthHeader(ctx), Role::kRead, "WatchJob");
    c_->GetJob(req->job_id());  // INVALID_ARGUMENT / NOT_FOUND before the stream starts
    const auto slot = watches_.Acquire();
    uint64_t after = req->after_seq();
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
    for (auto& m : c_->GetMetrics(req->job_id(), req->from_step(), req->limit())) *resp->add_points() = std::move(m);
  });
}

grpc::Status JobServiceImpl::ListCheckpoints(grpc::ServerContext* ctx, const v1::ListCheckpointsRequest* req,
                                             v1::ListCheckpointsResponse* resp) {
  RpcTimer t(m_, "ListCheckpoints");
  return rpc::Guard([&] {
    auth_->RequireUser(AuthHeader(ctx), Role::kRead, "ListCheckpoints");
    for (auto& c : c_->ListCheckpoints(req->job_id())) *resp->add_checkpoints() = std::move(c);
  });
}

grpc::Status JobServiceImpl::DownloadCheckpoint(grpc::ServerContext* ctx, const v1::DownloadCheckpointRequest* req,
                                                grpc::ServerWriter<v1::TransferMessage>* w) {
  grpc::Status s;
  grpc::Status g = rpc::Guard([&] {
    auth_->RequireUser(AuthHeader(ctx), Role::kRead, "DownloadCheckpoint");
    const FileSet files = c_->ResolveCheckpoint(req->job_id(), req->selector(), req->weights_only());  // request errors first
    const auto slot = downloads_.Acquire();
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
    *resp = c_->PushDataset([&](v1::TransferMessage* m) { return r->Read(m); });
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
    *resp = c_->ReportEvents(*req);
  });
}

grpc::Status WorkerServiceImpl::UploadCheckpoint(grpc::ServerContext* ctx, grpc::ServerReader<v1::CheckpointUpload>* r,
                                                 v1::UploadCheckpointResponse* resp) {
  return rpc::Guard([&] {
    auth_->RequireWorker(AuthHeader(ctx), ctx->auth_context()->IsPeerAuthenticated(), "UploadCheckpoint");
    const auto slot = transfers_.Acquire();
    *resp->mutable_info() = c_->UploadCheckpoint([&](v1::CheckpointUpload* m) { return r->Read(m); });
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
    s = Stream(c_->CheckpointFiles(req->job_id(), req->name(), req->weights_only()), req->offset(), ctx, w);
  });
  return g.ok() ? s : g;
}

}  // namespace trm::coordinator
