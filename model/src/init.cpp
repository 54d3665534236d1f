#include "trm/model/init.h"

#include <torch/torch.h>

#include <cmath>

namespace trm::model {

at::Tensor& TruncNormalInit(at::Tensor& t, double std, c10::optional<at::Generator> gen) {
  torch::NoGradGuard no_grad;
  if (std == 0.0) {
    t.zero_();
    return t;
  }
  const double lo = -2.0, hi = 2.0;
  const double a = std::erf(lo / std::sqrt(2.0)), b = std::erf(hi / std::sqrt(2.0));
  const double z = (b - a) / 2.0;
  const double c = 1.0 / std::sqrt(2.0 * M_PI);
  const double pu = c * std::exp(-0.5 * lo * lo), pl = c * std::exp(-0.5 * hi * hi);
  const double comp = std / std::sqrt(1.0 - (hi * pl - lo * pu) / z - ((pu - pl) / z) * ((pu - pl) / z));
  t.uniform_(a, b, gen).erfinv_().mul_(std::sqrt(2.0) * comp).clamp_(lo * comp, hi * comp);
  return t;
}

}  // namespace trm::model
