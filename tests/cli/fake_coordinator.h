// An in-process stand-in for the coordinator's user API, for trmctl's tests: it serves a fixed
// list of job events and one checkpoint directory, and can break its streams on purpose the way
// a restarting coordinator does (UNAVAILABLE mid-stream).
#pragma once

#include <grpcpp/grpcpp.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "trm/cli/cli.h"
#include "trm/rpc/client.h"
#include "trm/rpc/transfer.h"
#include "trm/v1/trm.grpc.pb.h"

namespace trm::cli::testing {

class FakeJobService final : public v1::JobService::Service {
 public:
  // --- configuration, set before the calls
  std::vector<v1::JobEvent> events;  // seq 1..N, the last one a terminal state
  int watch_break_after = -1;        // the first N WatchJob calls break after this many events
  int watch_breaks = 1;
  bool watch_resend_seen = false;    // misbehave: resend the event at after_seq on reconnect
  int watch_hang_after = -1;         // after this many events, hold the stream open until cancelled
  std::atomic<int> watch_sent{0};    // events written so far, over all calls
  std::string checkpoint_dir;        // served by DownloadCheckpoint
  v1::Manifest manifest;             // its manifest (built before any corruption)
  int download_break_after_chunks = -1;  // the first download breaks after this many chunks
  int download_breaks = 1;
  std::vector<v1::CheckpointInfo> checkpoints;  // served by ListCheckpoints for job-1
  std::vector<v1::Job> jobs;                    // served by ListJobs
  std::vector<v1::WorkerInfo> workers;          // served by ListWorkers
  std::vector<v1::StepMetrics> metrics;         // served by GetMetrics for job-1 (from_step applied)
  std::string resolved_config_json;             // job-1's, in GetJob

  // --- what the calls saw
  std::mutex mu;
  std::vector<v1::WatchJobRequest> watch_requests;
  std::vector<v1::DownloadCheckpointRequest> download_requests;
  std::vector<v1::SubmitJobRequest> submits;

  grpc::Status SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest* req, v1::SubmitJobResponse* resp) override {
    std::lock_guard<std::mutex> l(mu);
    submits.push_back(*req);
    resp->set_job_id("job-" + std::to_string(submits.size()));
    return grpc::Status::OK;
  }

  grpc::Status ListCheckpoints(grpc::ServerContext*, const v1::ListCheckpointsRequest* req,
                               v1::ListCheckpointsResponse* resp) override {
    if (req->job_id() != "job-1") return grpc::Status(grpc::StatusCode::NOT_FOUND, "job '" + req->job_id() + "' not found");
    for (const auto& c : checkpoints) *resp->add_checkpoints() = c;
    return grpc::Status::OK;
  }

  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest*, v1::ListJobsResponse* resp) override {
    for (const auto& j : jobs) *resp->add_jobs() = j;
    return grpc::Status::OK;
  }

  grpc::Status ListWorkers(grpc::ServerContext*, const v1::ListWorkersRequest*, v1::ListWorkersResponse* resp) override {
    for (const auto& w : workers) *resp->add_workers() = w;
    return grpc::Status::OK;
  }

  grpc::Status GetMetrics(grpc::ServerContext*, const v1::GetMetricsRequest* req, v1::GetMetricsResponse* resp) override {
    if (req->job_id() != "job-1") return grpc::Status(grpc::StatusCode::NOT_FOUND, "job '" + req->job_id() + "' not found");
    for (const auto& m : metrics)
      if (m.step() >= req->from_step()) *resp->add_points() = m;
    return grpc::Status::OK;
  }

  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest* req, v1::Job* job) override {
    if (req->job_id() != "job-1") return grpc::Status(grpc::StatusCode::NOT_FOUND, "job '" + req->job_id() + "' not found");
    job->set_id("job-1");
    job->set_state(v1::JOB_RUNNING);
    job->set_step(7);
    job->set_total_steps(10);
    job->set_resolved_config_json(resolved_config_json);
    return grpc::Status::OK;
  }

  grpc::Status WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                        grpc::ServerWriter<v1::JobEvent>* writer) override {
    int call;
    {
      std::lock_guard<std::mutex> l(mu);
      watch_requests.push_back(*req);
      call = static_cast<int>(watch_requests.size());
    }
    if (req->job_id() != "job-1") return grpc::Status(grpc::StatusCode::NOT_FOUND, "job '" + req->job_id() + "' not found");
    const bool breaks = watch_break_after >= 0 && call <= watch_breaks;
    int sent = 0;
    for (const auto& ev : events) {
      const bool resend = watch_resend_seen && ev.seq() == req->after_seq() && ev.seq() > 0;
      if (ev.seq() <= req->after_seq() && !resend) continue;
      if (ev.has_log() && !req->include_logs()) continue;
      if (breaks && sent == watch_break_after) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "coordinator restarting");
      if (sent == watch_hang_after) {
        // A live job with nothing new to say; only the server going down ends the call.
        while (!ctx->IsCancelled()) std::this_thread::sleep_for(std::chrono::milliseconds(5));
        return grpc::Status(grpc::StatusCode::CANCELLED, "server shutting down");
      }
      if (!writer->Write(ev)) return grpc::Status(grpc::StatusCode::CANCELLED, "client gone");
      ++sent;
      ++watch_sent;
    }
    return grpc::Status::OK;
  }

  grpc::Status DownloadCheckpoint(grpc::ServerContext*, const v1::DownloadCheckpointRequest* req,
                                  grpc::ServerWriter<v1::TransferMessage>* writer) override {
    int call;
    {
      std::lock_guard<std::mutex> l(mu);
      download_requests.push_back(*req);
      call = static_cast<int>(download_requests.size());
    }
    if (req->job_id() != "job-1") return grpc::Status(grpc::StatusCode::NOT_FOUND, "job '" + req->job_id() + "' not found");
    const bool breaks = download_break_after_chunks >= 0 && call <= download_breaks;
    int chunks = 0;
    bool broke = false;
    rpc::SendFiles(checkpoint_dir, manifest, req->offset(), [&](const v1::TransferMessage& m) {
      if (m.has_chunk() && breaks && chunks == download_break_after_chunks) {
        broke = true;
        return false;
      }
      if (m.has_chunk()) ++chunks;
      return writer->Write(m);
    });
    if (broke) return grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection reset");
    return grpc::Status::OK;
  }
};

class FakeDatasetService final : public v1::DatasetService::Service {
 public:
  std::string received_dir;  // where pushes land (verified like the coordinator would)
  std::vector<v1::DatasetInfo> listed;  // served by ListDatasets
  grpc::Status ListDatasets(grpc::ServerContext*, const v1::ListDatasetsRequest*,
                            v1::ListDatasetsResponse* resp) override {
    for (const auto& d : listed) *resp->add_datasets() = d;
    return grpc::Status::OK;
  }
  grpc::Status PushDataset(grpc::ServerContext*, grpc::ServerReader<v1::TransferMessage>* reader,
                           v1::DatasetInfo* info) override {
    try {
      rpc::FileReceiver receiver(received_dir + ".tmp", uint64_t{1} << 30);
      v1::TransferMessage msg;
      while (reader->Read(&msg)) receiver.OnMessage(msg);
      const v1::Manifest m = receiver.manifest();
      receiver.Commit(received_dir, true);
      info->set_name(m.name());
      info->set_content_sha256(m.content_sha256());
      info->set_size_bytes(m.total_bytes());
      info->set_files(m.files_size());
      return grpc::Status::OK;
    } catch (const std::exception& e) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, e.what());
    }
  }
};

// Serves the fakes on 127.0.0.1, on `port` or (0) a kernel-chosen one.
class FakeServer {
 public:
  explicit FakeServer(int port = 0) {
    grpc::ServerBuilder b;
    b.AddListeningPort("127.0.0.1:" + std::to_string(port), grpc::InsecureServerCredentials(), &port_);
    b.RegisterService(&jobs);
    b.RegisterService(&datasets);
    server_ = b.BuildAndStart();
  }
  // An immediate deadline cancels calls in flight, as a coordinator that goes down does.
  ~FakeServer() { server_->Shutdown(std::chrono::system_clock::now() + std::chrono::milliseconds(100)); }
  int port() const { return port_; }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  ConnectFn Connect() const {
    return [](const std::string& address) {
      auto ch = rpc::MakeChannel(address);
      return Stubs{v1::JobService::NewStub(ch), v1::DatasetService::NewStub(ch)};
    };
  }

  FakeJobService jobs;
  FakeDatasetService datasets;

 private:
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
};

}  // namespace trm::cli::testing
