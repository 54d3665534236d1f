// Evaluating a checkpoint on a dataset split, as the trainer's evaluation does (TRM_SPEC.md
// "Loss head"; the seed's pretrain.py `evaluate`): every row runs every ACT call up to
// halt_max_steps from the initial carry, the loss head's sums of the last call are added up over
// the split and divided by `count` (the valid rows). trm-eval is a main over EvaluateCheckpoint.
//
// Thread safety: the functions share no state; a model is driven by one thread at a time.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "trm/model/trm.h"

namespace trm {
class Error;
}
namespace trm::data {
struct DatasetMeta;
}

namespace trm::worker {

// One batch at full ACT depth with `model` in eval mode: the loss head's metrics of the last
// call (sums over the batch's rows, model::Metrics). No autograd.
model::Metrics EvaluateBatch(model::Trm& model, const model::Batch& batch);

struct CheckpointEvalOptions {
  std::string checkpoint;      // a step_<N> directory, or a run directory (its newest checkpoint)
  std::string data;            // a dataset directory (train/ and test/ in the reference layout)
  std::string split = "test";
  int64_t batch_size = 0;      // rows per forward; 0 = the checkpoint's global_batch_size (else 64)
  std::string device = "auto"; // auto | cpu | cuda
  // auto: float32 on the CPU, the checkpoint's forward dtype on CUDA (what the trainer
  // evaluates with on that device); float32 | bfloat16 force one.
  std::string dtype = "auto";
  // Called once the model is loaded (0 rows done) and after every batch, with the rows done and
  // the split's rows.
  std::function<void(int64_t done, int64_t total)> on_progress;
};

struct CheckpointEvalResult {
  std::string checkpoint;  // the step_<N> directory evaluated
  std::string data, split;
  int64_t rows = 0;
  // lm_loss, accuracy, exact_accuracy, q_halt_accuracy, q_halt_loss, steps: summed over rows and
  // divided by count; count; token_loss (mean over every label token) and perplexity.
  std::map<std::string, double> metrics;
  double seconds = 0;  // the evaluation pass alone (not loading), for benchmarks
  // {"checkpoint", "data", "split", "rows", "metrics": {...}}: trm-eval's one stdout line.
  nlohmann::json ToJson() const;
};

// Loads the checkpoint (verified against its manifest; a weights-only checkpoint, whose manifest
// lists model.safetensors, state.json and tokenizer/ only, is complete for this), checks that the
// split fits the model (CheckDatasetFits) and evaluates all of it. Throws InvalidArgument (a
// mismatch, bad options), NotFound (no checkpoint, no split), DataLoss (a damaged checkpoint or
// dataset), each naming the path.
CheckpointEvalResult EvaluateCheckpoint(const CheckpointEvalOptions& options);

// trm-eval's exit code for an error, in both modes: 2 when the user's input is wrong (flags,
// files, the checkpoint / dataset pairing: InvalidArgument, NotFound, DataLoss, OutOfRange,
// FailedPrecondition), else 1.
int EvalExitCode(const Error& e);

// The dataset a checkpoint was trained on must agree with the one it is evaluated on: vocabulary
// and seq_len (from the model's arch) and the pad id (from state.json's "data", written since
// checkpoints record it; older checkpoints are not checked for it). InvalidArgument naming the
// field, both values and both paths.
void CheckDatasetFits(const data::DatasetMeta& meta, const std::string& split_dir, const model::ArchConfig& arch,
                      const nlohmann::json& state, const std::string& checkpoint_dir);

}  // namespace trm::worker
