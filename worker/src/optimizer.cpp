#include "trm/worker/optimizer.h"

#include <torch/torch.h>

#include <cmath>

#include "trm/common/error.h"
#include "trm/model/parallel_for.h"

namespace trm::worker {

// AdamW in one pass over parameters, gradients and both moments (the unfused form makes about
// ten passes over buffers of tens of MB; this is memory-bound, so one pass is several times
// faster). Same arithmetic as torch.optim.AdamW, element by element, in float32.
void Optimizer::FusedAdamWCpu(at::Tensor& p, const at::Tensor& g, double lr, double bc1, double bc2) {
  float* P = p.data_ptr<float>();
  const float* G = g.data_ptr<float>();
  float* M = exp_avg_.data_ptr<float>();
  float* Vv = exp_avg_sq_.data_ptr<float>();
  const float decay = static_cast<float>(1.0 - lr * opt_.weight_decay);
  const float b1 = static_cast<float>(opt_.beta1), one_b1 = static_cast<float>(1.0 - opt_.beta1);
  const float b2 = static_cast<float>(opt_.beta2), one_b2 = static_cast<float>(1.0 - opt_.beta2);
  const float inv_sqrt_bc2 = static_cast<float>(1.0 / std::sqrt(bc2));
  const float eps = static_cast<float>(opt_.eps);
  const float step = static_cast<float>(lr / bc1);
  model::ParallelFor(0, p.numel(), 1 << 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const float gi = G[i];
      const float m = b1 * M[i] + one_b1 * gi;
      const float v = b2 * Vv[i] + one_b2 * gi * gi;
      M[i] = m;
      Vv[i] = v;
      P[i] = P[i] * decay - step * m / (std::sqrt(v) * inv_sqrt_bc2 + eps);
    }
  });
}

Optimizer::Optimizer(FlatParams* params, OptimizerOptions options) : params_(params), opt_(options) {
  exp_avg_ = torch::zeros_like(params_->params());
  exp_avg_sq_ = torch::zeros_like(params_->params());
}

void Optimizer::Step(double lr) {
  torch::NoGradGuard no_grad;
  ++step_;
  at::Tensor& p = params_->params();
  const at::Tensor& g = params_->grads();
  const double bc1 = 1.0 - std::pow(opt_.beta1, static_cast<double>(step_));
  const double bc2 = 1.0 - std::pow(opt_.beta2, static_cast<double>(step_));
  if (opt_.kind == OptimizerKind::kAdamW && p.is_cpu() && p.scalar_type() == torch::kFloat32) {
    FusedAdamWCpu(p, g, lr, bc1, bc2);
    return;
  }
  if (opt_.weight_decay != 0.0) p.mul_(1.0 - lr * opt_.weight_decay);
  exp_avg_.lerp_(g, 1.0 - opt_.beta1);
  exp_avg_sq_.mul_(opt_.beta2).addcmul_(g, g, 1.0 - opt_.beta2);
  if (opt_.kind == OptimizerKind::kAdamW) {
    at::Tensor denom = (exp_avg_sq_.sqrt() / std::sqrt(bc2)).add_(opt_.eps);
    p.addcdiv_(exp_avg_, denom, -lr / bc1);
  } else {
    at::Tensor update = torch::atan2(exp_avg_ / bc1, (exp_avg_sq_ / bc2).sqrt_());
    p.add_(update, -lr);
  }
}

std::vector<std::pair<std::string, at::Tensor>> Optimizer::StateTensors() const {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (size_t i = 0; i < params_->slots().size(); ++i) {
    const std::string& n = params_->slots()[i].name;
    out.emplace_back("exp_avg." + n, params_->View(exp_avg_, i));
    out.emplace_back("exp_avg_sq." + n, params_->View(exp_avg_sq_, i));
  }
  return out;
}

void Optimizer::LoadState(const std::map<std::string, at::Tensor>& tensors, int64_t step, const std::string& source) {
  torch::NoGradGuard no_grad;
  for (auto& [name, view] : StateTensors()) {
    auto it = tensors.find(name);
    if (it == tensors.end()) InvalidArgument(source + ": missing optimizer tensor '" + name + "'");
    if (it->second.sizes() != view.sizes()) InvalidArgument(source + ": optimizer tensor '" + name + "' has the wrong shape");
    view.copy_(it->second);
  }
  step_ = step;
}

double CosineScheduleLr(int64_t step, double base_lr, int64_t warmup, int64_t total, double min_ratio) {
  if (step < warmup) return base_lr * static_cast<double>(step) / static_cast<double>(std::max<int64_t>(1, warmup));
  const double progress =
      static_cast<double>(step - warmup) / static_cast<double>(std::max<int64_t>(1, total - warmup));
  return base_lr * (min_ratio + std::max(0.0, (1.0 - min_ratio) * 0.5 * (1.0 + std::cos(M_PI * progress))));
}

}  // namespace trm::worker
