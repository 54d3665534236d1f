// One generation: start this node's ranks, watch them, their output, the launcher's signals and
// the other nodes, and stop everything at the first failure anywhere.
#pragma once

#include <chrono>
#include <vector>

#include "rank_output.h"
#include "rank_process.h"
#include "trm/common/rank_group.h"
#include "rendezvous.h"
#include "signal_watcher.h"

namespace trm::launch {

struct RankPlan {
  int global_rank = 0;
  int local_rank = 0;
  SpawnSpec spawn;
  OutputRoute output;
};

struct GenerationPlan {
  int generation = 0;
  int node_rank = 0;
  std::vector<RankPlan> ranks;
  std::chrono::milliseconds grace{5000};  // SIGTERM -> SIGKILL
};

struct GenerationResult {
  bool failed = false;  // some rank of some node failed, or a launcher was signalled
  int signal = 0;       // the termination signal this launcher got (SIGINT, SIGTERM, ...), 0 if none
};

// Returns once every local rank exited and was reaped, and (when they all succeeded) every other
// node reported the same, or a failure was seen anywhere. Bounded: after a failure, ranks get
// SIGTERM, SIGKILL after `grace` (at once on a second termination signal to the launcher). Throws
// kFailedPrecondition / kIoError when a rank cannot be started (after killing those that were).
GenerationResult RunGeneration(const GenerationPlan& plan, Rendezvous& rdzv, SignalWatcher& signals);

}  // namespace trm::launch
