#include "grad_reducer.h"

#include <algorithm>

#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/utils/lambda_post_hook.h>
#include <torch/csrc/autograd/variable.h>

#include "trm/common/error.h"

namespace trm::worker {

GradReducer::GradReducer(FlatParams* flat, Collective* comm, int64_t bucket_bytes) : flat_(flat), comm_(comm) {
  const auto& slots = flat_->slots();
  const auto& named = flat_->named();
  const int64_t elem = static_cast<int64_t>(flat_->grads().element_size());
  const int64_t per_bucket = std::max<int64_t>(1, bucket_bytes / elem);
  bucket_of_.resize(slots.size());
  // Reverse slot order: backward finishes the parameters used last in forward first.
  for (size_t k = slots.size(); k-- > 0;) {
    int64_t numel = 1;
    for (int64_t d : slots[k].shape) numel *= d;
    const int64_t begin = slots[k].offset, end = begin + numel;
    if (buckets_.empty() || buckets_.back().end - buckets_.back().begin >= per_bucket) {
      buckets_.push_back(Bucket{begin, end, 0, 0, nullptr});
    }
    Bucket& b = buckets_.back();
    b.begin = std::min(b.begin, begin);
    b.end = std::max(b.end, end);
    ++b.params;
    bucket_of_[k] = buckets_.size() - 1;
  }
  for (size_t k = 0; k < named.size(); ++k) {
    auto acc = torch::autograd::impl::grad_accumulator(named[k].second);
    if (!acc) Internal("GradReducer: parameter " + named[k].first + " is not a leaf that requires grad");
    acc->add_post_hook(std::make_unique<torch::autograd::utils::LambdaPostHook>(
        [this, k](const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) {
          OnReady(k);
          return outputs;
        }));
    accumulators_.push_back(std::move(acc));
  }
}

GradReducer::~GradReducer() {
  // The hooks hold `this`: drop them with us (the nodes live on in the parameters). Ours is
  // the last hook each accumulator got.
  for (auto& acc : accumulators_) {
    if (!acc->post_hooks().empty()) acc->post_hooks().pop_back();
  }
}

void GradReducer::Arm() {
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& b : buckets_) {
    b.ready = 0;
    b.pending.reset();
  }
  next_ = 0;
  overlapped_ = 0;
  error_ = nullptr;
  armed_ = true;
}

void GradReducer::OnReady(size_t param) {
  std::lock_guard<std::mutex> lock(mu_);
  if (!armed_ || error_) return;
  ++buckets_[bucket_of_[param]].ready;
  try {
    StartInOrder();
  } catch (...) {
    error_ = std::current_exception();  // autograd must not see it; Finish reports it
  }
}

void GradReducer::StartInOrder() {
  while (next_ < buckets_.size() && buckets_[next_].ready == buckets_[next_].params) {
    Bucket& b = buckets_[next_];
    at::Tensor slice = flat_->grads().narrow(0, b.begin, b.end - b.begin);
    b.pending = comm_->StartAllReduceSum(slice);
    ++next_;
  }
}

void GradReducer::Finish() {
  std::lock_guard<std::mutex> lock(mu_);
  armed_ = false;
  if (error_) std::rethrow_exception(error_);
  overlapped_ = next_;
  for (size_t i = next_; i < buckets_.size(); ++i) {
    Bucket& b = buckets_[i];
    at::Tensor slice = flat_->grads().narrow(0, b.begin, b.end - b.begin);
    b.pending = comm_->StartAllReduceSum(slice);
  }
  next_ = buckets_.size();
  for (auto& b : buckets_) {
    b.pending->Wait();
    b.pending.reset();
  }
}

}  // namespace trm::worker
