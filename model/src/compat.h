// Every difference between the LibTorch versions we build against (Debian's 1.13 CPU build and
// the GPU machine's 2.x CUDA build) is isolated here; the rest of the code calls these.
#pragma once

#include <torch/torch.h>
#include <torch/version.h>

namespace trm::model::compat {

// Scaled dot-product attention on [B, H, S, D] tensors with scale 1/sqrt(D). `is_causal` masks
// key j > query i (top-left aligned, so only valid with equal query and key lengths).
inline at::Tensor ScaledDotProductAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                            bool is_causal) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0, is_causal);
#else
  // 1.13 has the private, differentiable composite that returns (output, weights).
  return std::get<0>(at::_scaled_dot_product_attention(q, k, v, /*attn_mask=*/{}, /*dropout_p=*/0.0,
                                                       /*need_attn_weights=*/false, is_causal));
#endif
}

// Same, with an explicit boolean mask (true = attend), broadcastable to [B, H, Sq, Sk].
inline at::Tensor ScaledDotProductAttentionMasked(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                                  const at::Tensor& mask) {
#if TORCH_VERSION_MAJOR >= 2
  return at::scaled_dot_product_attention(q, k, v, mask, 0.0, false);
#else
  return std::get<0>(at::_scaled_dot_product_attention(q, k, v, mask, 0.0, false, false));
#endif
}

}  // namespace trm::model::compat
