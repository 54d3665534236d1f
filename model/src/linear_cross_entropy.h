// The language-model head and its softmax cross-entropy, fused and chunked: logits are produced
// a block of rows at a time, reduced to the loss, the argmax and their gradients while the block
// is hot in cache, and never stored whole. For a 50k vocabulary this removes the [N, V] logits,
// log-softmax and gradient tensors (hundreds of MB each) and several passes over them.
// Private to model/.
#pragma once

#include <ATen/Tensor.h>

namespace trm::model {

struct LinearCrossEntropyResult {
  at::Tensor loss;    // 0-d float32: sum_i weight_i * CE(z_i W^T, label_i); differentiable in z and w
  at::Tensor argmax;  // [N] int64: argmax_v (z_i W^T)_v
  // [N] float32: CE(z_i W^T, label_i), 0 for ignored rows. Only without autograd (evaluation).
  at::Tensor token_loss;
};

// The logits block's size: 128 MB of float32 rows (linear_cross_entropy.cpp says why).
constexpr int64_t kLinearCrossEntropyBlockBytes = int64_t{128} << 20;

// Buffers one caller reuses from call to call: the logits block and the head's weight gradient
// (51 MB for a 50k vocabulary at width 256). Allocated afresh each step they are mapped and
// page-faulted afresh each step (glibc maps blocks over 32 MiB). A buffer still held by an
// earlier call's pending backward is not reused. Not thread-safe: one per model, one call at a time.
struct LinearCrossEntropyWorkspace {
  at::Tensor logits;
  at::Tensor dw;
  at::Tensor dw16;  // bfloat16 head: one block's weight gradient
  at::Tensor w16;   // bfloat16 head: the weight's bfloat16 copy
  int64_t block_bytes = kLinearCrossEntropyBlockBytes;
};

// z [N, D] (activation dtype), w [V, D] (cast to z's dtype), labels [N] int64 with -100 = ignore,
// row_weight [N] float32 (0 for ignored rows). Gradients are computed during the forward when
// autograd is recording (they are exact: d loss / d logits = weight * (softmax - onehot)).
// `ws` may be null (everything is allocated for this call).
LinearCrossEntropyResult LinearCrossEntropy(const at::Tensor& z, const at::Tensor& w, const at::Tensor& labels,
                                            const at::Tensor& row_weight, LinearCrossEntropyWorkspace* ws = nullptr);

}  // namespace trm::model
