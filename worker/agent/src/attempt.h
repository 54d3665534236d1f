// One attempt of a job on this worker: prepares it (dataset, resume checkpoint, config), runs
// one trm-train per assigned rank and supervises them, forwards their output, and (on the
// worker hosting global rank 0) follows metrics.jsonl and uploads every step_N checkpoint.
//
// Threads: the supervisor thread forks the ranks and lives until they are reaped (the ranks'
// parent-death signal is tied to the forking thread, so it must be long-lived); the publisher
// thread tails metrics and uploads checkpoints so a slow upload never delays reading output or
// stopping ranks.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "event_buffer.h"
#include "trm/agent/coordinator_client.h"
#include "trm/common/rank_group.h"

namespace trm::agent {

class AgentMetrics;
class MetricsTailer;

struct AttemptSetup {
  v1::Assignment assignment;
  std::string worker_id;
  std::string work_dir;
  std::string train_binary;
  std::string device_kind;                // cpu | cuda
  std::vector<std::string> slot_devices;  // per local rank (a GPU index for cuda)
  int64_t grace_ms = 5000;
  int64_t upload_retry_max_ms = 10000;
  // The attempt's directory exists from an earlier run of this worker: its ranks died with
  // that worker. Nothing is started; every rank is reported lost.
  bool already_ran = false;
};

class Attempt {
 public:
  Attempt(AttemptSetup setup, CoordinatorClient* client, std::mutex* fetch_mu, AgentMetrics* metrics);
  ~Attempt();  // Stop + Join
  Attempt(const Attempt&) = delete;
  Attempt& operator=(const Attempt&) = delete;

  void Start();
  // Prompt and asynchronous: SIGTERM now, SIGKILL after the grace period, then reaped.
  void Stop(const std::string& reason);
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

  bool heartbeat_seen_finished = false;  // owned by the agent (under its mutex)

 private:
  struct Rank;
  void Supervise();
  void Prepare();
  std::string FetchWithRetry(const std::string& what, const std::function<void()>& fetch);
  void SpawnRanks();
  void Loop();
  void EmitLine(Rank& r, const std::string& line);
  void OnExit(size_t index);
  void DrainAndReap();
  void FailAll(const std::string& kind, const std::string& message);

  void Publish();
  void DrainMetrics();
  bool UploadNew(bool until_done);
  bool UploadOne(int64_t step, const std::string& dir);
  bool WaitStop(std::chrono::milliseconds d);

  AttemptSetup s_;
  CoordinatorClient* client_;
  std::mutex* fetch_mu_;
  AgentMetrics* metrics_;
  EventBuffer events_;
  std::string dataset_dir_, checkpoint_dir_;
  bool hosts_rank0_ = false;
  std::unique_ptr<RankGroup> group_;  // supervisor thread only

  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::string stop_reason_;
  std::optional<v1::WorkerEvent> final_exit_;  // rank 0's clean exit, reported after uploads
  bool ranks_done_ = false;
  std::vector<std::unique_ptr<Rank>> ranks_;
  std::atomic<int64_t> last_step_{-1};
  std::atomic<bool> finished_{false};
  std::unique_ptr<MetricsTailer> tailer_;  // publisher thread only
  int64_t uploaded_step_ = -1;             // publisher thread only
  std::thread supervisor_, publisher_;
};

}  // namespace trm::agent
