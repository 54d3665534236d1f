// AdamW and AdamATan2 over a FlatParams buffer, plus the reference learning-rate schedule.
#pragma once

#include <ATen/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "trm/worker/flat_params.h"
#include "trm/worker/train_config.h"

namespace trm::worker {

struct OptimizerOptions {
  OptimizerKind kind = OptimizerKind::kAdamW;
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8, weight_decay = 0.1;
};

// AdamW is torch.optim.AdamW's arithmetic (decoupled decay p *= 1 - lr*wd, bias-corrected
// moments, denominator sqrt(v)/sqrt(bc2) + eps). AdamATan2 replaces m / (sqrt(v) + eps) with
// atan2(m / bc1, sqrt(v / bc2)): bounded, scale-invariant, no epsilon (the TRM paper's choice).
// Weight decay applies to every parameter, as in the reference. Not thread-safe.
class Optimizer {
 public:
  Optimizer(FlatParams* params, OptimizerOptions options);  // params must outlive this

  void Step(double lr);  // one update from params->grads()
  int64_t step() const { return step_; }

  // Moments per parameter, "exp_avg.<name>" / "exp_avg_sq.<name>" (views; copy to keep).
  std::vector<std::pair<std::string, at::Tensor>> StateTensors() const;
  // Restores moments and the step count; throws InvalidArgument naming a missing tensor.
  void LoadState(const std::map<std::string, at::Tensor>& tensors, int64_t step, const std::string& source);

 private:
  void FusedAdamWCpu(at::Tensor& p, const at::Tensor& g, double lr, double bc1, double bc2);

  FlatParams* params_;
  OptimizerOptions opt_;
  at::Tensor exp_avg_, exp_avg_sq_;
  int64_t step_ = 0;
};

// The reference schedule: linear warm-up for `warmup` steps, then cosine from `base_lr` to
// base_lr * min_ratio at `total` steps. `step` counts from 1 (the first optimiser step).
double CosineScheduleLr(int64_t step, double base_lr, int64_t warmup, int64_t total, double min_ratio);

}  // namespace trm::worker
