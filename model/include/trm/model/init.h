// The reference initialisation.
#pragma once

#include <ATen/Tensor.h>

namespace trm::model {

// JAX-style truncated normal, in place: samples truncated at +-2 sigma with the scale corrected
// so the *result* has standard deviation `std` (not PyTorch's trunc_normal_). Uses the default
// generator, so torch::manual_seed makes it reproducible. Returns `t`.
at::Tensor& TruncNormalInit(at::Tensor& t, double std);

}  // namespace trm::model
