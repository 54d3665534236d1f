#include "grpc_services.h"

#include <chrono>
#include <functional>

#include "trm/common/error.h"
#include "trm/rpc/status.h"
#include "trm/rpc/transfer.h"

namespace trm::coordinator {
namespace {

using Clock = std::chrono::steady_clock;

// Times a handler into the RPC histogram.
// An RPC's time and, through Done, its status code (trm_rpc_seconds, trm_rpc_errors_total).
// The `code` label of trm_rpc_errors_total and trm_rpc_seconds: our code's name.
std::string CodeLabel(const grpc::Status& s) {
  return s.ok() ? std::string("OK") : std::string(CodeName(rpc::FromGrpcCode(s.error_code())));
}

class RpcTimer {
 public:
  RpcTimer(CoordinatorMetrics* m, const char* method) : m_(m), method_(method), t0_(Clock::now()) {}
  ~RpcTimer() {
    if (m_) m_->ObserveRpc(method_, std::chrono::duration<double>(Clock::now() - t0_).count(), code_);
  }
  grpc::Status Done(grpc::Status s) {
    code_ = CodeLabel(s);
    return s;
  }

 private:
  CoordinatorMetrics* m_;
  const char* method_;
  Clock::time_point t0_;
  std::string code_ = "OK";
};

// Streams are not timed (a watch lasts as long as its job: no latency to speak of), but their
// failures count in trm_rpc_errors_total as the unary calls' do.
grpc::Status Counted(CoordinatorMetrics* m, const char* method, grpc::Status s) {
  if (m && !s.ok()) m->CountRpcError(method, CodeLabel(s));
  return s;
}

std::string AuthHeader(const grpc::ServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  auto it = md.find("authorization");
  return it == md.end() ? std::string() : std::string(it->second.data(), it->second.size());
}

// `recheck` runs about once a second while the stream lasts: a user's token that was removed
// meanwhile ends a download (it throws).
grpc::Status Stream(const FileSet& files, uint64_t offset, grpc::ServerContext* ctx,
                    grpc::ServerWriter<v1::TransferMessage>* w, const std::function<void()>& recheck = {}) {
  auto last = Clock::now();
  const bool done = rpc::SendFiles(files.dir, files.manifest, offset, [&](const v1::TransferMessage& m) {
    if (recheck && Clock::now() - last > std::chrono::seconds(1)) {
      recheck();
      last = Clock::now();
    }
    return !ctx->IsCancelled() && w->Write(m);
  });
  return done ? grpc::Status::OK : grpc::Status(grpc::StatusCode::CANCELLED, "the client went away");
}

// Runs a mutating call and records it in the audit log, refusals included. `fn` sets the
// principal once authenticated and may refine the target (a new job's id).
grpc::Status Audited(Coordinator* c, grpc::ServerContext* ctx, const std::string& method, std::string target,
                     const std::function<void(Principal*, std::string*)>& fn) {
  Principal who{"", Role::kNone};
  const grpc::Status s = rpc::Guard([&] { fn(&who, &target); });
  v1::AuditEntry e;
  e.set_principal(who.name);
  e.set_peer(ctx->peer());
  e.set_method(method);
  e.set_target(target.substr(0, 512));
  e.set_result(s.ok() ? std::string("OK")
                      : std::string(CodeName(rpc::FromGrpcCode(s.error_code()))) + ": " + s.error_message().substr(0, 1024));
  c->RecordAudit(e);
  return s;
}

}  // namespace

grpc::Status JobServiceImpl::SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req,
                                       v1::SubmitJobResponse* resp) {
  RpcTimer t(m_, "SubmitJob");
  const auto& spec = req->spec();
  const bool eval = spec.has_eval();
  const std::string target = eval ? spec.eval().source_job() + "/" + spec.eval().checkpoint()
                                  : (spec.dataset().empty() ? spec.data_path() : spec.dataset());
  return t.Done(Audited(c_, ctx, eval ? "SubmitJob(eval)" : "SubmitJob", target, [&](Principal* who, std::string* tgt) {
    *who = auth_->RequireUser(AuthHeader(ctx), Role::kSubmit, "SubmitJob");
    resp->set_job_id(c_->SubmitJob(spec, *who));
    *tgt = resp->job_id() + " (" + *tgt + ")";
  }));
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req, v1::Job* resp) {
  RpcTimer t(m_, "GetJob");
  return t.Done(rpc::Guard([&] { *resp = c_->GetJob(req->job_id(), auth_->RequireUser(AuthHeader(ctx), Role::kRead, "GetJob")); }));
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                                      v1::ListJobsResponse* resp) {
  RpcTimer t(m_, "ListJobs");
  return t.Done(rpc::Guard([&] {
    const Principal who = auth_->RequireUser(AuthHeader(ctx), Role::kRead, "ListJobs");
    std::vector<v1::JobState> states;
    for (int s : req->states()) states.push_back(static_cast<v1::JobState>(s));
    if (req->mine() && !req->owner().empty() && req->owner() != who.name)
      InvalidArgument("mine and owner '" + req->owner() + "' ask for different owners");
    const std::string owner = req->mine() ? who.name : req->owner();
    for (auto& j : c_->ListJobs(states, req->limit(), who, owner)) *resp->add_jobs() = std::move(j);
  }));
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req, v1::Job* resp) {
  RpcTimer t(m_, "CancelJob");
  return t.Done(Audited(c_, ctx, "CancelJob", req->job_id(), [&](Principal* who, std::string*) {
    *who = auth_->RequireUser(AuthHeader(ctx), Role::kSubmit, "CancelJob");
    *resp = c_->CancelJob(req->job_id(), *who);
  }));
}

grpc::Status JobServiceImpl::WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                                      grpc::ServerWriter<v1::JobEvent>* w) {
  return Counted(m_, "WatchJob", rpc::Guard([&] {
    Principal who = auth_->RequireUser(AuthHeader(ctx), Role::kRead, "WatchJob");
    c_->GetJob(req->job_id(), who);  // INVALID_ARGUMENT / NOT_FOUND before the stream starts
    const auto slot = watches_.Acquire();
    uint64_t after = req->after_seq();
    while (!ctx->IsCancelled() && !stopping_->load()) {
      // Every pass (at most 500 ms apart): a token removed by a reload ends the stream.
      who = auth_->RequireUser(AuthHeader(ctx), Role::kRead, "WatchJob");
      auto events = c_->ReadEvents(req->job_id(), after, req->include_logs(), 500, who);
      for (const auto& e : events) {
        if (!w->Write(e)) return;
        after = e.seq();
      }
      if (!events.empty()) continue;
      if (!req->follow()) return;
      // Wakes on the job's next event; the timeout bounds how late a cancel is noticed.
      if (!c_->WaitForEvents(req->job_id(), after, std::chrono::milliseconds(500))) {
        // Ended: deliver anything that raced in, then close.
        for (const auto& e : c_->ReadEvents(req->job_id(), after, req->include_logs(), 100000, who))
          if (!w->Write(e)) return;
        return;
      }
    }
    if (stopping_->load()) ThrowError(Code::kUnavailable, "the coordinator is shutting down; reconnect");
  }));
}

grpc::Status JobServiceImpl::GetMetrics(grpc::ServerContext* ctx, const v1::GetMetricsRequest* req,
                                        v1::GetMetricsResponse* resp) {
  RpcTimer t(m_, "GetMetrics");
  return t.Done(rpc::Guard([&] {
    const Principal who = auth_->RequireUser(AuthHeader(ctx), Role::kRead, "GetMetrics");
    for (auto& m : c_->GetMetrics(req->job_id(), req->from_step(), req->limit(), who)) *resp->add_points() = std::move(m);
  }));
}

grpc::Status JobServiceImpl::ListCheckpoints(grpc::ServerContext* ctx, const v1::ListCheckpointsRequest* req,
                                             v1::ListCheckpointsResponse* resp) {
  RpcTimer t(m_, "ListCheckpoints");
  return t.Done(rpc::Guard([&] {
    const Principal who = auth_->RequireUser(AuthHeader(ctx), Role::kRead, "ListCheckpoints");
    for (auto& c : c_->ListCheckpoints(req->job_id(), who)) *resp->add_checkpoints() = std::move(c);
  }));
}

grpc::Status JobServiceImpl::DownloadCheckpoint(grpc::ServerContext* ctx, const v1::DownloadCheckpointRequest* req,
                                                grpc::ServerWriter<v1::TransferMessage>* w) {
  grpc::Status s;
  grpc::Status g = rpc::Guard([&] {
    const Principal who = auth_->RequireUser(AuthHeader(ctx), Role::kRead, "DownloadCheckpoint");
    // Request errors first.
    const FileSet files = c_->ResolveCheckpoint(req->job_id(), req->selector(), req->weights_only(), who);
    const auto slot = downloads_.Acquire();
    s = Stream(files, req->offset(), ctx, w, [&] { auth_->RequireUser(AuthHeader(ctx), Role::kRead, "DownloadCheckpoint"); });
  });
  return Counted(m_, "DownloadCheckpoint", g.ok() ? s : g);
}

grpc::Status JobServiceImpl::ListWorkers(grpc::ServerContext* ctx, const v1::ListWorkersRequest*,
                                         v1::ListWorkersResponse* resp) {
  RpcTimer t(m_, "ListWorkers");
  return t.Done(rpc::Guard([&] {
    const Principal who = auth_->RequireUser(AuthHeader(ctx), Role::kRead, "ListWorkers");
    for (auto& w : c_->ListWorkers(who)) *resp->add_workers() = std::move(w);
  }));
}

grpc::Status JobServiceImpl::GetQueue(grpc::ServerContext* ctx, const v1::GetQueueRequest*, v1::GetQueueResponse* resp) {
  RpcTimer t(m_, "GetQueue");
  return t.Done(rpc::Guard([&] { *resp = c_->GetQueue(auth_->RequireUser(AuthHeader(ctx), Role::kRead, "GetQueue")); }));
}

grpc::Status JobServiceImpl::ListAudit(grpc::ServerContext* ctx, const v1::ListAuditRequest* req,
                                       v1::ListAuditResponse* resp) {
  RpcTimer t(m_, "ListAudit");
  return t.Done(rpc::Guard([&] {
    const Principal who = auth_->RequireUser(AuthHeader(ctx), Role::kAdmin, "ListAudit");
    for (auto& e : c_->ListAudit(req->since_unix_ms(), req->user(), req->limit(), who)) *resp->add_entries() = std::move(e);
  }));
}

grpc::Status JobServiceImpl::ReloadTokens(grpc::ServerContext* ctx, const v1::ReloadTokensRequest*,
                                          v1::ReloadTokensResponse* resp) {
  RpcTimer t(m_, "ReloadTokens");
  return t.Done(Audited(c_, ctx, "ReloadTokens", "--auth-tokens", [&](Principal* who, std::string*) {
    *who = auth_->RequireUser(AuthHeader(ctx), Role::kAdmin, "ReloadTokens");
    resp->set_tokens(auth_->Reload());
  }));
}

grpc::Status JobServiceImpl::Backup(grpc::ServerContext* ctx, const v1::BackupRequest*,
                                    grpc::ServerWriter<v1::TransferMessage>* w) {
  grpc::Status g = Audited(c_, ctx, "Backup", "coordinator state", [&](Principal* who, std::string*) {
    *who = auth_->RequireUser(AuthHeader(ctx), Role::kAdmin, "Backup");
    const auto slot = downloads_.Acquire();
    const FileSet files = c_->Backup(*who);
    struct End {
      Coordinator* c;
      const FileSet& f;
      ~End() { c->EndBackup(f); }
    } end{c_, files};
    const grpc::Status s = Stream(files, 0, ctx, w, [&] { auth_->RequireUser(AuthHeader(ctx), Role::kAdmin, "Backup"); });
    // The audit log records a backup that did not reach its client as such.
    if (!s.ok()) ThrowError(Code::kCancelled, "the backup's stream ended early: " + s.error_message());
  });
  return Counted(m_, "Backup", g);
}

grpc::Status DatasetServiceImpl::PushDataset(grpc::ServerContext* ctx, grpc::ServerReader<v1::TransferMessage>* r,
                                             v1::DatasetInfo* resp) {
  return Counted(m_, "PushDataset", Audited(c_, ctx, "PushDataset", "", [&](Principal* who, std::string* target) {
    *who = auth_->RequireUser(AuthHeader(ctx), Role::kSubmit, "PushDataset");
    bool first = true;
    auto last = Clock::now();
    *resp = c_->PushDataset(
        [&](v1::TransferMessage* m) {
          if (Clock::now() - last > std::chrono::seconds(1)) {  // a token removed meanwhile ends the push
            auth_->RequireUser(AuthHeader(ctx), Role::kSubmit, "PushDataset");
            last = Clock::now();
          }
          const bool more = r->Read(m);
          if (first && more && m->has_manifest()) *target = m->manifest().name();
          first = false;
          return more;
        },
        *who);
    *target = resp->owner() + "/" + resp->name() + " (" + resp->content_sha256().substr(0, 12) + ")";
  }));
}

grpc::Status DatasetServiceImpl::ListDatasets(grpc::ServerContext* ctx, const v1::ListDatasetsRequest*,
                                              v1::ListDatasetsResponse* resp) {
  RpcTimer t(m_, "ListDatasets");
  return t.Done(rpc::Guard([&] {
    const Principal who = auth_->RequireUser(AuthHeader(ctx), Role::kRead, "ListDatasets");
    for (auto& d : c_->ListDatasets(who)) *resp->add_datasets() = std::move(d);
  }));
}

grpc::Status WorkerServiceImpl::Register(grpc::ServerContext* ctx, const v1::RegisterRequest* req,
                                         v1::RegisterResponse* resp) {
  RpcTimer t(m_, "Register");
  return t.Done(rpc::Guard([&] {
    auth_->RequireWorker(AuthHeader(ctx), ctx->auth_context()->IsPeerAuthenticated(), "Register"); *resp = c_->Register(*req); }));
}

grpc::Status WorkerServiceImpl::Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest* req,
                                          v1::HeartbeatResponse* resp) {
  RpcTimer t(m_, "Heartbeat");
  return t.Done(rpc::Guard([&] {
    auth_->RequireWorker(AuthHeader(ctx), ctx->auth_context()->IsPeerAuthenticated(), "Heartbeat"); *resp = c_->Heartbeat(*req); }));
}

grpc::Status WorkerServiceImpl::ReportEvents(grpc::ServerContext* ctx, const v1::ReportEventsRequest* req,
                                             v1::ReportEventsResponse* resp) {
  RpcTimer t(m_, "ReportEvents");
  return t.Done(rpc::Guard([&] {
    auth_->RequireWorker(AuthHeader(ctx), ctx->auth_context()->IsPeerAuthenticated(), "ReportEvents");
    *resp = c_->ReportEvents(*req);
  }));
}

grpc::Status WorkerServiceImpl::UploadCheckpoint(grpc::ServerContext* ctx, grpc::ServerReader<v1::CheckpointUpload>* r,
                                                 v1::UploadCheckpointResponse* resp) {
  return Counted(m_, "UploadCheckpoint", rpc::Guard([&] {
    auth_->RequireWorker(AuthHeader(ctx), ctx->auth_context()->IsPeerAuthenticated(), "UploadCheckpoint");
    const auto slot = transfers_.Acquire();
    *resp->mutable_info() = c_->UploadCheckpoint([&](v1::CheckpointUpload* m) { return r->Read(m); });
  }));
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
  return Counted(m_, "FetchDataset", g.ok() ? s : g);
}

grpc::Status WorkerServiceImpl::FetchCheckpoint(grpc::ServerContext* ctx, const v1::FetchCheckpointRequest* req,
                                                grpc::ServerWriter<v1::TransferMessage>* w) {
  grpc::Status s;
  grpc::Status g = rpc::Guard([&] {
    auth_->RequireWorker(AuthHeader(ctx), ctx->auth_context()->IsPeerAuthenticated(), "FetchCheckpoint");
    const auto slot = transfers_.Acquire();
    s = Stream(c_->CheckpointFiles(req->job_id(), req->name(), req->weights_only()), req->offset(), ctx, w);
  });
  return Counted(m_, "FetchCheckpoint", g.ok() ? s : g);
}

}  // namespace trm::coordinator
