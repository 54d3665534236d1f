// Every rank of a data-parallel run resumes from the checkpoint rank 0 chose, whether or not the
// ranks share storage. Rank 0 owns run_dir and picks (and repairs) it; the others check that
// their own copy at the same name is byte for byte the same (manifest digest, then verified),
// and any rank without one receives rank 0's files through the collective. Without this, ranks
// on a machine that cannot see rank 0's run_dir would start over while rank 0 resumes, and the
// run would diverge or hang.
// Private to worker/.
#pragma once

#include <c10/core/Device.h>

#include <functional>
#include <string>

#include "trm/worker/collective.h"

namespace trm::worker {

struct SyncedCheckpoint {
  std::string dir;      // what this rank loads, verified; "" = no checkpoint: start afresh
  std::string scratch;  // a received copy to delete once loaded ("" when none was received)
};

// Collective: every rank calls it at the same point. `choose` runs on rank 0 only and returns
// the verified checkpoint directory it loads ("" for none); a trm::Error it throws reaches every
// rank (rank 0 rethrows it; the others throw the same code naming rank 0). `candidate(name)` is
// where this rank keeps a checkpoint named `name` (e.g. run_dir/step_40); a received copy is
// written under `scratch_parent`. `device` is where the collective's tensors live (the GPU for
// NCCL). With comm == nullptr it only runs `choose`. An I/O failure on one rank during the
// transfer fails that rank at once and the others at the collective's timeout (the launcher or
// the coordinator stops them sooner).
SyncedCheckpoint SyncCheckpoint(Collective* comm, c10::Device device, const std::function<std::string()>& choose,
                                const std::function<std::string(const std::string& name)>& candidate,
                                const std::string& scratch_parent);

}  // namespace trm::worker
