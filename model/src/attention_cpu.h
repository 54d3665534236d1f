// Scaled dot-product attention on the CPU in float32, fused from the qkv projection on: one pass
// per (batch, head) item applies RoPE to its q and k rows, computes the scores, the causal mask,
// the softmax and the product with v in small tiles that stay in L1/L2, and the backward
// likewise. LibTorch 1.13's CPU bmm loops over the batch with three tensor selects and a BLAS
// call per item, and the reference's formulation adds an unbind, two RoPE passes, transposes, a
// division, a masked_fill and a softmax pass over the [B, H, S, S] scores: for the small heads
// of a TRM that was most of the attention's time. Private to model/.
//
// Not bitwise the reference's (its products run in another order): used in training mode only;
// evaluation and generation keep the reference's ops (layers.cpp, Attend).
#pragma once

#include <ATen/Tensor.h>

namespace trm::model {

// Whether CpuAttention takes these: a contiguous CPU float32 qkv [B, S, 3, H, D] (the fused
// projection, viewed) with an even D, and CPU float32 RoPE tables cos, sin [>= S, D] or none
// (both undefined).
bool CpuAttentionApplies(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin);

// softmax(q k^T / sqrt(D)) v with q, k, v = qkv[:, :, 0..2], RoPE applied to q and k when `cos`
// and `sin` (rows 0..S-1 used: positions 0..S-1) are defined, and query i seeing keys 0..i when
// `causal`.
// Returns o [B, S, H, D], contiguous. Differentiable in qkv when autograd records: the backward
// writes d(qkv) whole, RoPE's transpose included, with no unbind, transposes or stack.
at::Tensor CpuAttention(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, bool causal);

// The profiler's names for its forward and backward, recorded with the qkv shape as input.
inline constexpr const char* kForwardName = "trm::cpu_attention";
inline constexpr const char* kBackwardName = "trm::cpu_attention_backward";

}  // namespace trm::model
