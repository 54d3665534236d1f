// Sums the flat gradient over the ranks in buckets, each started as soon as autograd has
// finished accumulating every parameter in it, so that the reduction of the parameters backward
// reaches first (the last layers) overlaps the backward of the rest (the reference's DDP does
// this; a single all-reduce after backward cannot overlap anything).
//
// Ready = the post-hook on the parameter's gradient accumulator fired: autograd sums every use
// of a leaf before it runs that node, so it fires once per backward, after the last write.
// Buckets cover contiguous ranges of the flat buffer in reverse parameter order and are started
// strictly in that order on every rank (a bucket that is ready early waits for the ones before
// it), which keeps the collectives of all ranks aligned whatever order the hooks fire in.
// Buckets with a parameter that got no gradient in this backward start after it. Private to
// worker/; not thread-safe beyond the autograd thread calling the hooks while the owner is
// inside backward().
#pragma once

#include <ATen/Tensor.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

#include "trm/worker/collective.h"
#include "trm/worker/flat_params.h"

namespace torch::autograd {
struct Node;
}

namespace trm::worker {

class GradReducer {
 public:
  // Not owned; both must outlive this. bucket_bytes: target size of a bucket (last may be
  // smaller); one bucket = the old single all-reduce.
  GradReducer(FlatParams* flat, Collective* comm, int64_t bucket_bytes);
  ~GradReducer();
  GradReducer(const GradReducer&) = delete;
  GradReducer& operator=(const GradReducer&) = delete;

  // Call before the backward whose gradients are the step's last (the last micro-step): its
  // hooks start buckets. Hooks of other backwards do nothing.
  void Arm();
  // After that backward: starts the buckets not started yet, in order, and waits for all.
  // Throws as Collective (kDeadlineExceeded, kUnavailable).
  void Finish();

  size_t buckets() const { return buckets_.size(); }
  // Buckets the last Finish() found already started by hooks (overlapped with backward).
  size_t overlapped() const { return overlapped_; }

 private:
  struct Bucket {
    int64_t begin = 0, end = 0;  // element range of the flat gradient
    size_t params = 0;           // parameters in it
    size_t ready = 0;
    std::unique_ptr<Collective::Pending> pending;
  };
  void OnReady(size_t param);
  void StartInOrder();  // starts ready buckets from next_ on, while they are ready

  FlatParams* flat_;
  Collective* comm_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;  // parameter -> bucket
  std::vector<std::shared_ptr<torch::autograd::Node>> accumulators_;  // keeps the hooks alive
  std::mutex mu_;
  bool armed_ = false;
  size_t next_ = 0;  // first bucket not started
  size_t overlapped_ = 0;
  std::exception_ptr error_;  // from a start inside a hook, rethrown by Finish
};

}  // namespace trm::worker
