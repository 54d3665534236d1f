// Which directories of a run directory are committed checkpoints (checkpoint.h has the layout).
// Torch-free, in trm_train_config: the worker agent uploads what it lists here, by the same rule
// trm-train loads and keeps checkpoints by.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace trm::worker {

// "step_<N>" with N in decimal (at most 18 digits) -> N; false for any other name
// (".tmp-step_<N>-<pid>", "step_<N>.quarantined-<time>", ...).
bool ParseStepDirName(const std::string& name, int64_t* step);

// All committed step_<N> directories of run_dir (with manifest.json, or legacy with state.json),
// oldest first, as (step, path). Structural only: contents are verified when loaded.
// Temporary and quarantined directories are not listed; a missing run_dir lists nothing.
std::vector<std::pair<int64_t, std::string>> ListCheckpoints(const std::string& run_dir);

}  // namespace trm::worker
