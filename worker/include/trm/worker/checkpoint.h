// Training checkpoints: one directory per optimiser step, `<run_dir>/step_<N>/`, holding
//   model.safetensors        the weights to use (EMA when enabled), reference state-dict names,
//                            so the PyTorch reference loads them; metadata: arch JSON
//   weights.safetensors      the live training weights (only when EMA is enabled)
//   optimizer.safetensors    exp_avg.<name>, exp_avg_sq.<name>
//   train_state.safetensors  the global batch's ACT carry (carry.*) and the exploration generator's
//                            state (rng.exploration); older ones: each rank's (rng.rankR.*)
//   state.json               step, data-iterator position, counters, resolved config and arch,
//                            the training data's identity ("data": vocab_size, seq_len, pad_id)
//   tokenizer/               the tokenizer the data was built with (a copy), when known
//   manifest.json            {"format": 1, "step": N, "files": [{"path", "size", "sha256"}, ...]}
//                            over every other file (paths relative, '/'-separated)
//
// Saving commits in two phases. Phase 1 writes every file into `.tmp-step_<N>-<pid>/`, fsyncs
// each, then writes manifest.json (size + SHA-256 of each file as written) and fsyncs it and the
// directory. Phase 2 renames the temporary directory to step_<N> (atomically exchanging it with
// an existing step_<N> of the same step) and fsyncs run_dir. Only a step_<N> directory with a
// manifest is a committed checkpoint; a crash leaves at most a `.tmp-step_*` directory, which is
// never loaded and is removed at the next save or resume.
//
// Loading verifies first: every file's size and SHA-256 against the manifest; a listed file
// missing, or an unlisted file the loader would read (state.json, *.safetensors, tokenizer/...),
// is a failure (kDataLoss naming the file and the mismatch). Checkpoints written before manifests
// existed (state.json, no manifest.json) are "legacy": loaded unverified, with a warning.
// When resuming a run directory, a checkpoint that fails verification is quarantined: renamed to
// `step_<N>.quarantined-<unix time>` (never deleted), and the previous committed one is used.
//
// Retention (keep-last-K) counts committed checkpoints only, never deletes the newest one or the
// one just written, and leaves quarantined directories alone; a deleted checkpoint is first
// renamed out of the step_<N> namespace so a crash never leaves a half-deleted step_<N>.
#pragma once

#include <ATen/Tensor.h>

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "trm/worker/checkpoint_list.h"  // ListCheckpoints: committed step_<N> directories

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

// Writes step_<state.step> under run_dir (created if needed) in two phases (above); returns its
// path. Removes leftover temporary directories first, then deletes the oldest committed
// checkpoints beyond `keep` (0 = keep all). Throws IoError naming the path on failure, leaving
// earlier checkpoints untouched.
std::string SaveCheckpoint(const std::string& run_dir, const CheckpointContents& c, int64_t keep);

// Reads a checkpoint directory, verifying it against its manifest first unless `verify` is false
// (the caller verified it already). `inference_only` skips optimizer and training state. Throws
// NotFound / DataLoss naming the file (a verification failure names the file and the mismatch).
LoadedCheckpoint LoadCheckpoint(const std::string& dir, bool inference_only = false, bool verify = true);

enum class Verified { kOk, kLegacy };
// Checks dir against its manifest.json (sizes, SHA-256, no unlisted critical file, the manifest's
// step equal to the directory's step_<N>). kLegacy (and a logged warning) when the directory has
// state.json but no manifest.json. Throws DataLoss naming the file and the mismatch, NotFound when
// dir is not a directory.
Verified VerifyCheckpoint(const std::string& dir);

// Renames dir to `<dir>.quarantined-<unix time>` (a suffix -2, -3, ... when taken) and logs an
// error with `reason`; returns the new path. Never deletes.
std::string QuarantineCheckpoint(const std::string& dir, const std::string& reason);

// The checkpoint to resume run_dir from: the newest committed checkpoint that verifies, or ""
// when there is none. With `repair` (the one process that owns run_dir: rank 0), leftover
// temporary directories are removed and every newer checkpoint that fails verification is
// quarantined; without, failures are logged and skipped and nothing is renamed.
std::string ResumeCheckpoint(const std::string& run_dir, bool repair = true);

// The newest committed checkpoint of run_dir that verifies (failures are logged and skipped,
// nothing is renamed), or "" when there is none.
std::string LatestCheckpoint(const std::string& run_dir);

}  // namespace trm::worker
