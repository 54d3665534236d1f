#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <cstdlib>

#include "trm/worker/thread_pools.h"
#include "trm/worker/trainer.h"

namespace trm::worker {

void ConfigureTrainingProcess(const TrainConfig& config, int rank) {
  // Every thread pool follows `threads`, never the launcher's environment (thread_pools.h).
  const int threads = ResolveThreadsForThisProcess(config.threads);
  ApplyThreads(threads);
  spdlog::debug("threads={} (config {}): {}", threads, config.threads, Describe(CurrentThreadPools()));
  // The device the Trainer will pick (it fails there when cuda is asked for and absent).
  const bool cuda = (config.device == "cuda" || config.device == "auto") && torch::cuda::is_available();
  if (cuda) {
    // cuBLAS is deterministic only with a fixed workspace (read when its handle is created);
    // ops without a deterministic CUDA kernel warn instead of failing the run.
    if (config.deterministic) ::setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8", /*overwrite=*/0);
    at::globalContext().setDeterministicAlgorithms(config.deterministic, /*warn_only=*/true);
  }
  torch::manual_seed(static_cast<uint64_t>(config.seed + rank));
}

}  // namespace trm::worker
