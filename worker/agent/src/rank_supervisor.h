// The agent's policy over RankGroup (trm/common/rank_group.h) for one attempt: starts one
// trm-train per assigned rank with its environment (torchrun's variables, its GPU, its phase
// file), writes each rank's output to its log and the event buffer, stops the ranks when the
// attempt's stop is raised, and reports each exit with trm-train's failure kinds (exit codes,
// the kernel's OOM killer) and the tail of its output.
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "event_buffer.h"
#include "stop_signal.h"
#include "trm/common/rank_group.h"
#include "trm/common/unique_fd.h"
#include "trm/v1/trm.pb.h"

namespace trm::agent {

// Where rank `rank` of the attempt in `attempt_dir` writes its phase (phase_file.h).
std::string PhaseFilePath(const std::string& attempt_dir, int rank);

struct RankLaunch {
  v1::Assignment assignment;
  std::string attempt_dir;
  std::string train_binary;
  std::string device_kind;                // cpu | cuda
  std::vector<std::string> slot_devices;  // per local rank (a GPU index for cuda)
  std::string dataset_dir, checkpoint_dir;
  int64_t grace_ms = 5000;  // SIGTERM -> SIGKILL
  // Set: the one process to run instead of trm-train's command line (an evaluation run), with
  // the same environment, logs and exit classification.
  std::vector<std::string> command;
  std::function<void(const std::string&)> on_stdout;  // each stdout line too, when set
};

// Spawn() and Run() on one thread that outlives the ranks (their parent-death signal follows
// it); Ranks() from any thread.
class RankSupervisor {
 public:
  // `on_rank0_success` takes rank 0's clean exit instead of the event buffer (the job succeeds
  // once every rank exited 0, so it is reported after the final checkpoint's upload); null:
  // into the buffer like every other exit.
  RankSupervisor(RankLaunch launch, StopSignal* stop, EventBuffer* events,
                 std::function<void(v1::WorkerEvent)> on_rank0_success);

  // Starts every rank. Throws when none could start; when only some could, reports the others
  // as "setup" failures and raises the stop, so Run() stops and reaps those that run.
  void Spawn();
  bool started() const;
  // Until every rank exited and was reaped (or survived SIGKILL past the bound) and its output
  // was drained. Bounded once the stop is raised.
  void Run();

  struct RankView {
    int rank = 0;
    pid_t pid = 0;
    bool exited = false;
  };
  std::vector<RankView> Ranks() const;
  // Exits held back during a preemption (StopSignal::drain), for the caller to report after the
  // uploads; empty otherwise.
  std::vector<v1::WorkerEvent> TakeHeldExits() {
    std::lock_guard<std::mutex> lock(mu_);
    return std::move(held_exits_);
  }

 private:
  struct Rank {
    int rank = 0;
    UniqueFd log;  // supervising thread only
  };
  std::vector<std::string> BaseEnvironment() const;
  SpawnSpec SpecFor(int local_rank, const std::vector<std::string>& base) const;
  void EmitLine(Rank& r, const std::string& line);
  void OnExit(size_t index);

  RankLaunch l_;
  StopSignal* stop_;
  EventBuffer* events_;
  std::function<void(v1::WorkerEvent)> on_rank0_success_;
  RankGroup group_;
  std::vector<std::unique_ptr<Rank>> ranks_;  // by group index; supervising thread only
  mutable std::mutex mu_;
  std::vector<RankView> views_;  // under mu_
  std::vector<v1::WorkerEvent> held_exits_;  // under mu_
};

}  // namespace trm::agent
