// Training checkpoints: one directory per optimiser step, `<run_dir>/step_<N>/`, holding
//   model.safetensors        the weights to use (EMA when enabled), reference state-dict names,
//                            so the PyTorch reference loads them; metadata: arch JSON
//   weights.safetensors      the live training weights (only when EMA is enabled)
//   optimizer.safetensors    exp_avg.<name>, exp_avg_sq.<name>
//   train_state.safetensors  the ACT carry (carry.*) and every RNG state (rng.*)
//   state.json               step, data-iterator position, counters, resolved config and arch
//   tokenizer/               the tokenizer the data was built with (a copy), when known
// A checkpoint is written into a temporary directory, every file fsynced, then renamed into
// place and the run directory fsynced: a crash leaves the previous checkpoints intact and never
// a half-written step_<N>. Retention keeps the newest K.
#pragma once

#include <ATen/Tensor.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace trm::worker {

using NamedTensors = std::vector<std::pair<std::string, at::Tensor>>;

struct CheckpointContents {
  NamedTensors model;        // live weights
  NamedTensors ema;          // empty without EMA
  NamedTensors optimizer;
  NamedTensors train_state;  // carry.* and rng.*
  nlohmann::json state;      // must hold "step" (int)
  nlohmann::json arch;       // ArchConfig JSON, stored in model.safetensors' metadata
  std::string tokenizer_dir; // copied when not empty
};

struct LoadedCheckpoint {
  std::string dir;
  std::map<std::string, at::Tensor> model;    // the inference weights (EMA when it was enabled)
  std::map<std::string, at::Tensor> weights;  // live weights (== model without EMA)
  std::map<std::string, at::Tensor> optimizer;
  std::map<std::string, at::Tensor> train_state;
  nlohmann::json state;
  nlohmann::json arch;
};

// Writes step_<state.step> under run_dir (created if needed); returns its path. Then deletes the
// oldest checkpoints beyond `keep` (0 = keep all). Throws IoError naming the path on failure,
// leaving earlier checkpoints untouched.
std::string SaveCheckpoint(const std::string& run_dir, const CheckpointContents& c, int64_t keep);

// Reads a checkpoint directory. `inference_only` skips optimizer and training state. Throws
// NotFound / DataLoss naming the file.
LoadedCheckpoint LoadCheckpoint(const std::string& dir, bool inference_only = false);

// The newest step_<N> directory in run_dir, or "" when there is none.
std::string LatestCheckpoint(const std::string& run_dir);

// All step_<N> directories of run_dir, oldest first, as (step, path).
std::vector<std::pair<int64_t, std::string>> ListCheckpoints(const std::string& run_dir);

}  // namespace trm::worker
