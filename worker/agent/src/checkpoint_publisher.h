// On the worker hosting global rank 0: follows the run's metrics.jsonl into metric events and
// uploads every committed step_<N> checkpoint (trm/worker/checkpoint_list.h) with the agent's
// retry policy, on its own thread, so a slow upload never delays reading output or stopping
// ranks. Rank 0's clean exit is reported only after the last checkpoint is uploaded (the job
// succeeds when every rank exited 0, so its final checkpoint must be there by then).
#pragma once

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "event_buffer.h"
#include "retry.h"
#include "stop_signal.h"
#include "trm/agent/coordinator_client.h"

namespace trm::agent {

class AgentMetrics;
class MetricsTailer;

struct PublisherSetup {
  v1::Assignment assignment;
  std::string worker_id;
  std::string run_dir;  // the ranks' run_dir: metrics.jsonl and step_<N>/
  RetryPolicy retry;
};

class CheckpointPublisher {
 public:
  CheckpointPublisher(PublisherSetup setup, CoordinatorClient* client, AgentMetrics* metrics, EventBuffer& events,
                      StopSignal* stop, Clock* clock);
  ~CheckpointPublisher();  // Join()

  void Start();
  // Rank 0 exited 0: reported once every checkpoint is uploaded.
  void OnRankZeroSuccess(v1::WorkerEvent exit);
  // Every rank was reaped: one last round of uploads, then the thread ends.
  void OnRanksDone();
  // The stop was raised: no more uploads.
  void Wake();
  void Join();

  int64_t last_step() const { return last_step_; }  // the latest training step seen, -1 before

 private:
  enum class Upload { kDone, kStopped, kFailed };
  void Publish();
  void PublishUntilDone();
  void Close();
  void ReportFinalExit(v1::WorkerEvent exit);  // under mu_
  void DrainMetrics();
  Upload UploadNew(std::string* why);
  Upload UploadOne(int64_t step, const std::string& dir, std::string* why);
  void UploadStep(int64_t step, const std::string& dir, const std::string& name);

  PublisherSetup s_;
  CoordinatorClient* client_;
  AgentMetrics* metrics_;
  EventBuffer& events_;
  StopSignal* stop_;
  Clock* clock_;
  std::unique_ptr<MetricsTailer> tailer_;  // publisher thread only
  int64_t uploaded_step_ = -1;             // publisher thread only
  std::atomic<int64_t> last_step_{-1};

  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<v1::WorkerEvent> final_exit_;
  bool ranks_done_ = false;
  bool closed_ = false;  // the thread ended: exits are reported at once
  std::string failed_;   // why an upload was refused for good, if one was
  std::thread thread_;
};

}  // namespace trm::agent
