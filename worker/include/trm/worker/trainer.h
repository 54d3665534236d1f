// TRM training (one process, or one rank of a data-parallel run), as the reference
// pretrain.py does it: ACT carry kept across batches, gradient accumulation, AdamW / AdamATan2,
// warm-up + cosine schedule, optional clipping, NaN/Inf steps skipped, EMA, periodic evaluation,
// checkpoints that resume bit for bit. A library: trm-train and the worker drive it with hooks
// and a cancellation flag.
//
// Thread safety: Run() on one thread; `cancel` may be set from any thread (and signal handlers).
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "trm/worker/phase_file.h"
#include "trm/worker/step_metrics.h"
#include "trm/worker/train_config.h"

namespace at {
class Tensor;
}

namespace trm::worker {

struct TrainerHooks {
  std::function<void(const StepMetrics&)> on_step;
  std::function<void(const EvalMetrics&)> on_eval;
  std::function<void(const std::string& dir, int64_t step)> on_checkpoint;
  // Called on every phase change (data, compute, all-reduce, checkpoint, eval) with the steps
  // done so far; must be cheap (it runs several times a step).
  std::function<void(Phase phase, int64_t step)> on_phase;
};

class Collective;

struct TrainerOptions {
  // Data parallel: this process is collective->rank() of collective->world(); it reads only its
  // slice of every global batch, gradients and metrics are summed over ranks, parameters start
  // from rank 0's, and only rank 0 writes checkpoints and metrics. Not owned; nullptr = 1 rank.
  Collective* collective = nullptr;
  int device_index = 0;                     // CUDA device (LOCAL_RANK) when training on GPUs
  // Stops the run after the current optimiser step (all ranks agree on the step), with a
  // checkpoint when checkpoint_on_cancel.
  const std::atomic<bool>* cancel = nullptr;
  TrainerHooks hooks;
  int progress = -1;                        // 1 bar, 0 log lines, -1 bar when stderr is a terminal
  bool checkpoint_on_cancel = true;
};

struct TrainResult {
  int64_t steps = 0;
  int64_t skipped_steps = 0;
  bool cancelled = false;
  std::string last_checkpoint;
  StepMetrics last;
  std::vector<EvalMetrics> evals;
};

// The process-wide settings of a training process, made once at its start, before any tensor
// work and before its Trainer: every CPU thread pool sized by `threads` (thread_pools.h);
// LibTorch's default generators seeded with seed + rank (training itself draws only from the
// Trainer's exploration generator, seeded with `seed` alike on every rank, so that a row's
// draws do not depend on the world size); on CUDA, deterministic algorithms when the config asks
// (warn-only: ops without a deterministic kernel warn instead of failing) and the fixed cuBLAS
// workspace they need. trm-train's main calls it; so does a test before each Trainer it builds,
// as each stands for a process.
void ConfigureTrainingProcess(const TrainConfig& config, int rank);

class Trainer {
 public:
  // Opens the data, builds the model and optimiser, and resumes when the config says so.
  // Throws trm::Error for bad config, data or checkpoints.
  Trainer(TrainConfig config, TrainerOptions options = {});
  ~Trainer();
  Trainer(const Trainer&) = delete;
  Trainer& operator=(const Trainer&) = delete;

  TrainResult Run();
  // Evaluates the current (EMA when enabled) weights on the test splits.
  EvalMetrics Evaluate();
  // Writes a checkpoint of the current state now (rank 0 only writes); returns its directory.
  std::string SaveCheckpointNow();

  // Live weights under the reference names (views; clone to keep).
  std::vector<std::pair<std::string, at::Tensor>> Weights() const;
  int64_t step() const;
  int64_t total_steps() const;
  const TrainConfig& config() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trm::worker
