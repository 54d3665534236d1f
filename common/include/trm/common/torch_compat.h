// Every difference between the LibTorch versions we build against (Debian's 1.13 CPU build and
// the GPU machine's 2.x CUDA build) is isolated here; the rest of the code calls these.
// Header-only and included only by code that links LibTorch: trm_common itself stays torch-free.
// (The c10d process groups need no entry: C10dCollective is templated on the concrete group, whose
// methods are the same in both; only their base class differs.)
#pragma once

#include <ATen/ATen.h>
#include <torch/version.h>

#include <type_traits>
#include <utility>

namespace trm::compat {

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

namespace detail {
template <class T, class = void>
struct HasUseLibUV : std::false_type {};
template <class T>
struct HasUseLibUV<T, std::void_t<decltype(std::declval<T&>().useLibUV)>> : std::true_type {};
}  // namespace detail

// c10d::TCPStoreOptions: 2.4+ serve the store through libuv by default and fail outright in
// builds without it (Debian's 2.6); 1.13 has only the classic server. Both speak one protocol,
// so every rank and launcher uses the classic server, which every build has.
template <class TCPStoreOptions>
void UseClassicTcpStore(TCPStoreOptions& o) {
  if constexpr (detail::HasUseLibUV<TCPStoreOptions>::value) o.useLibUV = false;
}

}  // namespace trm::compat
