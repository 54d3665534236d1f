// The reference initialisation.
#pragma once

#include <ATen/Tensor.h>
#include <ATen/core/Generator.h>

namespace trm::model {

// JAX-style truncated normal, in place: samples truncated at +-2 sigma with the scale corrected
// so the *result* has standard deviation `std` (not PyTorch's trunc_normal_). Draws from `gen`, or
// from the default generator (torch::manual_seed) when it is undefined. Returns `t`.
at::Tensor& TruncNormalInit(at::Tensor& t, double std, c10::optional<at::Generator> gen = c10::nullopt);

}  // namespace trm::model
