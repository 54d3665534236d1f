#include "checkpoint_publisher.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>

#include "agent_metrics.h"
#include "metrics_tailer.h"
#include "trm/worker/checkpoint_list.h"
#include "trm/worker/step_metrics.h"

namespace trm::agent {
namespace fs = std::filesystem;
using std::chrono::milliseconds;

namespace {

constexpr milliseconds kPublishTick{500};

}  // namespace

CheckpointPublisher::CheckpointPublisher(PublisherSetup setup, CoordinatorClient* client, AgentMetrics* metrics,
                                         EventBuffer& events, StopSignal* stop, Clock* clock)
    : s_(std::move(setup)), client_(client), metrics_(metrics), events_(events), stop_(stop), clock_(clock),
      tailer_(std::make_unique<MetricsTailer>(s_.run_dir + "/metrics.jsonl")) {}

CheckpointPublisher::~CheckpointPublisher() { Join(); }

void CheckpointPublisher::Start() { thread_ = std::thread([this] { Publish(); }); }

void CheckpointPublisher::Join() {
  if (thread_.joinable()) thread_.join();
}

void CheckpointPublisher::OnRankZeroSuccess(v1::WorkerEvent exit) {
  std::lock_guard<std::mutex> lock(mu_);
  if (closed_) {  // no more uploads: the exit goes out as it stands
    ReportFinalExit(std::move(exit));
    return;
  }
  final_exit_ = std::move(exit);
  cv_.notify_all();
}

void CheckpointPublisher::ReportFinalExit(v1::WorkerEvent exit) {
  if (!failed_.empty()) {
    // A clean exit must not make the job succeed without the checkpoint that was refused.
    auto* x = exit.mutable_exit();
    x->set_exit_code(-1);
    x->set_failure_kind("upload");
    x->set_message(failed_ + "\n");
  }
  events_.Add(std::move(exit));
}

void CheckpointPublisher::Close() {
  std::lock_guard<std::mutex> lock(mu_);
  closed_ = true;
  if (final_exit_) ReportFinalExit(std::move(*final_exit_));
  final_exit_.reset();
}

void CheckpointPublisher::OnRanksDone() {
  std::lock_guard<std::mutex> lock(mu_);
  ranks_done_ = true;
  cv_.notify_all();
}

void CheckpointPublisher::Wake() {
  std::lock_guard<std::mutex> lock(mu_);
  cv_.notify_all();
}

void CheckpointPublisher::Publish() {
  PublishUntilDone();
  Close();
}

void CheckpointPublisher::PublishUntilDone() {
  while (true) {
    bool stop, done;
    std::optional<v1::WorkerEvent> final_exit;
    {
      std::unique_lock<std::mutex> lock(mu_);
      clock_->WaitFor(lock, cv_, kPublishTick,
                      [&] { return (stop_->raised() && !stop_->drain()) || final_exit_ || ranks_done_; });
      // A preemption drains: the checkpoint the ranks save on SIGTERM still goes up.
      stop = stop_->raised() && !stop_->drain();
      done = ranks_done_;
      final_exit.swap(final_exit_);
    }
    DrainMetrics();
    std::string why;
    const Upload u = stop ? Upload::kStopped : UploadNew(&why);
    if (u == Upload::kFailed) {
      // The coordinator refused for good (or for longer than the retry deadline): the attempt
      // cannot succeed here; its ranks are stopped.
      spdlog::error("{}/attempt_{}: {}", s_.assignment.job_id(), s_.assignment.attempt(), why);
      {
        std::lock_guard<std::mutex> lock(mu_);
        failed_ = why;
      }
      stop_->Raise(why);
    }
    if (u != Upload::kDone) {
      // No more uploads; the exit is still news (Close() reports one that comes later).
      if (final_exit) {
        std::lock_guard<std::mutex> lock(mu_);
        ReportFinalExit(std::move(*final_exit));
      }
      return;
    }
    if (final_exit) {
      DrainMetrics();
      events_.Add(std::move(*final_exit));
      spdlog::info("{}/attempt_{}: rank 0 finished; every checkpoint uploaded", s_.assignment.job_id(),
                   s_.assignment.attempt());
    }
    if (done) return;
  }
}

void CheckpointPublisher::DrainMetrics() {
  for (auto& m : tailer_->Poll()) {
    if (!m.eval) {
      last_step_ = m.step;
      const worker::StepMetrics step = worker::StepMetrics::FromValues(m.values);
      metrics_->SetStep(s_.assignment.job_id(), 0, static_cast<double>(m.step), step.step_s, step.allreduce_s);
    }
    v1::WorkerEvent e;
    auto* sm = e.mutable_metrics();
    sm->set_step(m.step);
    sm->set_total_steps(m.total_steps);
    sm->set_eval(m.eval);
    for (const auto& [k, v] : m.values) (*sm->mutable_values())[k] = v;
    events_.Add(std::move(e));
  }
}

CheckpointPublisher::Upload CheckpointPublisher::UploadNew(std::string* why) {
  for (const auto& [step, dir] : worker::ListCheckpoints(s_.run_dir)) {
    if (step <= uploaded_step_) continue;
    const Upload u = UploadOne(step, dir, why);
    if (u != Upload::kDone) return u;
    uploaded_step_ = step;
  }
  return Upload::kDone;
}

CheckpointPublisher::Upload CheckpointPublisher::UploadOne(int64_t step, const std::string& dir, std::string* why) {
  const std::string name = "step_" + std::to_string(step);
  const std::string what = s_.assignment.job_id() + ": upload of " + name;
  try {
    RetryCall(
        what, s_.retry, *clock_, [&](milliseconds d) { return stop_->WaitForHardStop(d); },
        [&] {
          if (fs::exists(dir)) UploadStep(step, dir, name);
        });
  } catch (const Error& e) {
    if (e.code() == Code::kCancelled) return Upload::kStopped;
    if (fs::exists(dir)) {
      *why = "checkpoint " + name + " cannot be uploaded: " + e.what();
      return Upload::kFailed;
    }
  } catch (const std::exception& e) {  // not ours (std::filesystem, protobuf): final as well
    if (fs::exists(dir)) {
      *why = "checkpoint " + name + " cannot be uploaded: " + e.what();
      return Upload::kFailed;
    }
  }
  if (!fs::exists(dir)) {
    spdlog::warn("{}: checkpoint {} was removed (retention) before it was uploaded", s_.assignment.job_id(), name);
  }
  return Upload::kDone;
}

void CheckpointPublisher::UploadStep(int64_t step, const std::string& dir, const std::string& name) {
  DrainMetrics();  // the step's metrics line precedes its checkpoint
  v1::CheckpointUploadHeader h;
  h.set_worker_id(s_.worker_id);
  h.set_job_id(s_.assignment.job_id());
  h.set_attempt(s_.assignment.attempt());
  *h.mutable_manifest() = rpc::BuildManifest(dir, name);
  auto* info = h.mutable_info();
  info->set_name(name);
  info->set_step(step);
  info->set_size_bytes(h.manifest().total_bytes());
  info->set_content_sha256(h.manifest().content_sha256());
  info->set_created_unix_ms(clock_->UnixMs());
  for (const auto& [k, v] : tailer_->ValuesForCheckpoint(step)) (*info->mutable_metrics())[k] = v;
  client_->UploadCheckpoint(dir, h);
  spdlog::info("{}: uploaded checkpoint {} ({} bytes)", s_.assignment.job_id(), name, h.manifest().total_bytes());
}

}  // namespace trm::agent
