// One attempt of a job on this worker: prepares it (dataset, resume checkpoint, config), then
// runs its ranks (RankSupervisor) and, on the worker hosting global rank 0, publishes metrics
// and checkpoints (CheckpointPublisher).
//
// Threads: the attempt's thread prepares, forks the ranks and supervises them until they are
// reaped (the ranks' parent-death signal is tied to the forking thread, so it must be
// long-lived); the publisher has its own.
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "checkpoint_publisher.h"
#include "eval_run.h"
#include "event_buffer.h"
#include "rank_supervisor.h"
#include "trm/common/path_confine.h"
#include "retry.h"
#include "stop_signal.h"
#include "trm/common/path_confine.h"
#include "trm/agent/clock.h"
#include "trm/agent/coordinator_client.h"

namespace trm::agent {

class AgentMetrics;

struct AttemptSetup {
  v1::Assignment assignment;
  std::string worker_id;
  std::string work_dir;
  std::string train_binary;
  std::string eval_binary;                // trm-eval, for evaluation runs (Assignment.eval)
  std::string device_kind;                // cpu | cuda
  std::vector<std::string> slot_devices;  // per local rank (a GPU index for cuda)
  int64_t grace_ms = 5000;
  std::vector<DataRoot> data_roots;  // AgentOptions::data_roots
  RetryPolicy retry;  // fetches and uploads
  // The attempt's directory exists from an earlier run of this worker: its ranks died with
  // that worker. Nothing is started; every rank is reported lost.
  bool already_ran = false;
};

class Attempt {
 public:
  // `clock` outlives the attempt.
  Attempt(AttemptSetup setup, CoordinatorClient* client, std::mutex* fetch_mu, AgentMetrics* metrics, Clock* clock);
  ~Attempt();  // Stop + Join
  Attempt(const Attempt&) = delete;
  Attempt& operator=(const Attempt&) = delete;

  void Start();
  // Prompt and asynchronous: SIGTERM now, SIGKILL after the grace period, then reaped.
  // `drain`: a preemption (stop_signal.h); `grace_ms` >= 0 replaces the SIGKILL grace.
  void Stop(const std::string& reason, bool drain = false, int64_t grace_ms = -1);
  void Join();

  // Ranks reaped and every checkpoint/exit handed to the event buffer.
  bool finished() const { return finished_; }
  int running_ranks() const;
  v1::AttemptStatus Status();
  EventBuffer& events() { return events_; }
  const v1::Assignment& assignment() const { return s_.assignment; }
  std::string attempt_dir() const;
  std::string PhaseFilePath(int rank) const;  // where rank `rank` writes its phase (phase_file.h)
  const std::vector<std::string>& slot_devices() const { return s_.slot_devices; }

 private:
  void Run();
  void Prepare();
  void PrepareEval();  // an evaluation run: weights-only checkpoint, dataset or prompts
  RankLaunch Launch(std::function<void(v1::WorkerEvent)>* on_rank0_success);
  void Fetch(const std::string& what, const std::function<void()>& fetch);
  void FailAll(const std::string& kind, const std::string& message);

  AttemptSetup s_;
  CoordinatorClient* client_;
  std::mutex* fetch_mu_;
  AgentMetrics* metrics_;
  Clock* clock_;
  EventBuffer events_;
  StopSignal stop_;
  std::string dataset_dir_, checkpoint_dir_;
  EvalLaunch eval_;         // an evaluation run's, set by PrepareEval
  EvalOutput eval_output_;  // its stdout's JSON line
  bool hosts_rank0_ = false;

  // Set once on the attempt's thread before the ranks start (under mu_), then read-only.
  mutable std::mutex mu_;
  std::unique_ptr<RankSupervisor> ranks_;
  std::unique_ptr<CheckpointPublisher> publisher_;
  std::atomic<bool> finished_{false};
  std::thread thread_;
};

}  // namespace trm::agent
