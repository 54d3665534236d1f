#include "trm/worker/flat_params.h"

#include <torch/torch.h>

#include "trm/common/error.h"

namespace trm::worker {

FlatParams::FlatParams(std::vector<std::pair<std::string, at::Tensor>> named_params) : named_(std::move(named_params)) {
  if (named_.empty()) InvalidArgument("FlatParams: no parameters");
  const auto opts = named_.front().second.options();
  int64_t total = 0;
  for (const auto& [name, p] : named_) {
    if (p.scalar_type() != opts.dtype().toScalarType() || p.device() != opts.device()) {
      Internal("FlatParams: parameter '" + name + "' differs in dtype or device from the first");
    }
    slots_.push_back({name, total, p.sizes().vec()});
    total += p.numel();
  }
  torch::NoGradGuard no_grad;
  flat_ = torch::empty({total}, opts.requires_grad(false));
  flat_grad_ = torch::zeros({total}, opts.requires_grad(false));
  for (size_t i = 0; i < named_.size(); ++i) {
    at::Tensor view = View(flat_, i);
    view.copy_(named_[i].second);
    named_[i].second.set_data(view);
  }
  BindGrads();
}

at::Tensor FlatParams::View(const at::Tensor& flat, size_t i) const {
  const Slot& s = slots_[i];
  int64_t n = 1;
  for (int64_t d : s.shape) n *= d;
  return flat.narrow(0, s.offset, n).view(s.shape);
}

void FlatParams::BindGrads() {
  for (size_t i = 0; i < named_.size(); ++i) named_[i].second.mutable_grad() = View(flat_grad_, i);
}

void FlatParams::ZeroGrad() { flat_grad_.zero_(); }

}  // namespace trm::worker
