// All trainable parameters (and their gradients) stored in one contiguous float32 buffer, each
// parameter a view into it. The optimiser, EMA, gradient clipping, the finite check and the
// data-parallel all-reduce then run as a handful of kernels over one tensor instead of a loop
// over dozens of small ones (the reference's per-tensor loop is a large share of a tiny model's
// step).
//
// Gradients: the flat gradient buffer is installed as every parameter's .grad(), so autograd
// accumulates into it in place; ZeroGrad() zeroes the buffer and never frees it.
#pragma once

#include <ATen/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace trm::worker {

class FlatParams {
 public:
  // Moves every parameter's data into the flat buffer (values unchanged). The tensors in
  // `named_params` must be leaf parameters of one dtype and device. Not thread-safe.
  explicit FlatParams(std::vector<std::pair<std::string, at::Tensor>> named_params);

  at::Tensor& params() { return flat_; }
  at::Tensor& grads() { return flat_grad_; }
  void ZeroGrad();
  // Re-installs the flat gradient views (needed if something replaced a parameter's .grad()).
  void BindGrads();

  int64_t numel() const { return flat_.numel(); }
  struct Slot {
    std::string name;
    int64_t offset;
    std::vector<int64_t> shape;
  };
  const std::vector<Slot>& slots() const { return slots_; }
  // The parameters themselves (leaf tensors whose data are views into params()), slot order.
  const std::vector<std::pair<std::string, at::Tensor>>& named() const { return named_; }
  // The view of `flat` (any tensor laid out like params()) for slot i.
  at::Tensor View(const at::Tensor& flat, size_t i) const;

 private:
  std::vector<std::pair<std::string, at::Tensor>> named_;
  std::vector<Slot> slots_;
  at::Tensor flat_, flat_grad_;
};

}  // namespace trm::worker
