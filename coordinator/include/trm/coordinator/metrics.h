// The coordinator's Prometheus metrics (prometheus-cpp): job and worker gauges, and each job's
// training metrics labelled by job id. Thread-safe (prometheus-cpp's gauges are).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

namespace prometheus {
class Registry;
}

namespace trm::coordinator {

class CoordinatorMetrics {
 public:
  CoordinatorMetrics();
  ~CoordinatorMetrics();
  std::shared_ptr<prometheus::Registry> registry() const;

  void SetJobCounts(const std::map<std::string, int>& by_state);
  void SetWorkerCounts(int alive, int lost, int slots, int busy_slots);
  void SetJobProgress(const std::string& job_id, int64_t step, int64_t total_steps, double loss, double tokens_per_s,
                      double act_steps);
  void SetJobRestarts(const std::string& job_id, int restarts);
  // trm_job_preemptions_total from the job's record (counts up to `total`; after a coordinator
  // restart the counter starts at the recorded number).
  void SetJobPreemptions(const std::string& job_id, int total);
  void SetJobWorldSize(const std::string& job_id, int ranks);  // trm_job_world_size
  void SetJobCheckpointTime(const std::string& job_id, int64_t unix_ms);  // exported as an age
  // trm_checkpoint_eval{job,checkpoint,dataset,metric}: an evaluation run's result; a deleted
  // checkpoint's series are dropped.
  void SetCheckpointEval(const std::string& job, const std::string& checkpoint, const std::string& dataset,
                         const std::string& metric, double value);
  void DropCheckpointEvals(const std::string& job, const std::string& checkpoint);
  // trm_rpc_seconds{method}; a code other than OK also counts in trm_rpc_errors_total{method,code}.
  void ObserveRpc(const std::string& method, double seconds, const std::string& code = "OK");
  void CountRpcError(const std::string& method, const std::string& code);  // a stream's failure (not timed)
  // Drops the job's own series (progress, state, checkpoints, restarts, phases; its checkpoints'
  // evaluation results stay while the checkpoints do): an ended job's, after a while.
  void ForgetJob(const std::string& job);

  // For the alert rules (deploy/prometheus/rules/): trm_job_running (1 while RUNNING);
  // trm_job_checkpoint_step (0 before the first) and trm_job_checkpoint_interval_steps.
  void SetJobRunning(const std::string& job_id, bool running);
  void SetJobCheckpointStep(const std::string& job_id, int64_t step, int64_t interval_steps);
  // trm_rank_phase_seconds{job,rank,phase}: how long each running rank has been in its phase,
  // computed at scrape time from when it entered it; phase "" drops the rank (it exited). Clear
  // when the attempt ends.
  void SetRankPhase(const std::string& job_id, int rank, const std::string& phase, int64_t entered_unix_ms);
  void ClearRankPhases(const std::string& job_id);
  // trm_coordinator_disk_free_bytes / trm_coordinator_disk_size_bytes of the filesystem that
  // holds `path` (the data directory), read at scrape time.
  void WatchDisk(const std::string& path);
  // Everything in the Prometheus text format, as a scrape returns it (tests, debugging).
  std::string Text() const;

 private:
  friend class MetricsServer;
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Serves `metrics` at http://listen/metrics until destroyed.
class MetricsServer {
 public:
  MetricsServer(const std::string& listen, const CoordinatorMetrics& metrics);
  ~MetricsServer();
  int port() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trm::coordinator
