// The TRM building blocks (TRM_SPEC.md, "Building blocks"). Parameters are registered under the
// reference names (weight, bias, embedding_weight, self_attn.qkv_proj, mlp.gate_up_proj, ...) so
// the module tree's named_parameters() are the reference state-dict names.
//
// Thread safety: modules are not thread-safe; one thread drives a model at a time.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>

#include <optional>

#include "trm/model/config.h"

namespace trm::model {

// y = x W^T + b with the weight (and bias) cast to x's dtype at use, so parameters stay float32
// while activations run in bfloat16. Init: truncated normal std 1/sqrt(in), bias zeros.
class CastedLinearImpl : public torch::nn::Module {
 public:
  CastedLinearImpl(int64_t in_features, int64_t out_features, bool bias);
  at::Tensor forward(const at::Tensor& x);
  // In training mode on the CPU in float32, without bias, the products run on the training
  // path's GEMM (model/src/gemm_cpu.h; default) or ATen's. Evaluation mode always runs ATen's.
  void SetFusedCpu(bool on) { fused_cpu_ = on; }
  at::Tensor weight;
  at::Tensor bias;  // undefined without bias

 private:
  bool fused_cpu_ = true;
};
TORCH_MODULE(CastedLinear);

// Lookup, then cast to `dtype`. Parameter: embedding_weight [num, dim].
class CastedEmbeddingImpl : public torch::nn::Module {
 public:
  CastedEmbeddingImpl(int64_t num, int64_t dim, double init_std);
  at::Tensor forward(const at::Tensor& ids, at::ScalarType dtype);
  // In training mode on the CPU (default), the backward adds the looked-up rows' gradients
  // straight into the weight's defined gradient, where autograd's builds a dense [num, dim]
  // gradient (77 MB of zeros for chat's vocabulary, page-faulted afresh every step) and then
  // adds it whole; evaluation mode and `false` keep ATen's.
  void SetFusedCpu(bool on) { fused_cpu_ = on; }
  at::Tensor embedding_weight;

 private:
  bool fused_cpu_ = true;
};
TORCH_MODULE(CastedEmbedding);

// x.to(dtype), differentiable; between float32 and bfloat16 on the CPU one vectorised pass each
// way (model/src/fused_cpu.h), bitwise ATen's conversion.
at::Tensor CastTo(const at::Tensor& x, at::ScalarType dtype);

// x * rsqrt(mean(x^2) + eps), computed in float32, cast back; no learnable weight.
at::Tensor RmsNorm(const at::Tensor& x, double eps);

// RoPE tables: cos/sin of shape [max_positions, head_dim], float32.
struct RotaryTables {
  at::Tensor cos;
  at::Tensor sin;
  static RotaryTables Make(int64_t max_positions, int64_t head_dim, double theta);
};

// Where ApplyRotary's result lives in memory (its shape is [B, S, H, D] either way). Attention
// multiplies q as [B, H, S, D] and k^T as [B, H, D, S]; written there directly, the matrix
// products read them in place instead of copying them first (the values are the same).
enum class RotaryLayout { kBSHD, kBHSD, kBHDS };

// Applies RoPE to x [B, S, H, D] (float32 inside, cast back) using rows
// [offset, offset + S) of the tables (offset > 0 when decoding with a cache). The layout is a
// request the CPU float32 path honours; other devices and dtypes return a contiguous result.
at::Tensor ApplyRotary(const at::Tensor& x, const RotaryTables& rope, int64_t offset,
                       RotaryLayout layout = RotaryLayout::kBSHD);

// Per-layer key/value cache for incremental decoding: keys/values [B, H, T, D] of the positions
// seen so far. The decode path appends to it; a full forward leaves it untouched.
struct KvCache {
  at::Tensor k;
  at::Tensor v;
};

class AttentionImpl : public torch::nn::Module {
 public:
  AttentionImpl(const ArchConfig& cfg);
  // x [B, S, D]. With `cache`, the new positions start at cache->k.size(2) and their keys/values
  // are appended (causal models only).
  at::Tensor forward(const at::Tensor& x, const RotaryTables* rope, KvCache* cache = nullptr);
  // In training mode on the CPU in float32, the fused kernel (attention_cpu.h; default) or the
  // reference's op sequence. Evaluation mode always runs the reference's.
  void SetFusedCpu(bool on) { fused_cpu_ = on; }
  CastedLinear qkv_proj{nullptr};
  CastedLinear o_proj{nullptr};

 private:
  int64_t num_heads_, head_dim_;
  bool causal_;
  bool fused_cpu_ = true;
};
TORCH_MODULE(Attention);

class SwiGluImpl : public torch::nn::Module {
 public:
  SwiGluImpl(int64_t hidden, int64_t intermediate);
  // allow_fused = false: the reference's ops even in training (a block decoding with a cache).
  at::Tensor forward(const at::Tensor& x, bool allow_fused = true);
  void SetFusedCpu(bool on) { fused_cpu_ = on; }  // as AttentionImpl's
  CastedLinear gate_up_proj{nullptr};
  CastedLinear down_proj{nullptr};

 private:
  bool fused_cpu_ = true;
};
TORCH_MODULE(SwiGlu);

// Post-norm block: h = norm(h + attn(h)); h = norm(h + mlp(h)).
class BlockImpl : public torch::nn::Module {
 public:
  BlockImpl(const ArchConfig& cfg);
  at::Tensor forward(const at::Tensor& h, const RotaryTables* rope, KvCache* cache = nullptr);
  // The residual adds with RMSNorm, and the attention and MLP: as AttentionImpl's.
  void SetFusedCpu(bool on);
  Attention self_attn{nullptr};
  SwiGlu mlp{nullptr};

 private:
  double eps_;
  bool fused_cpu_ = true;
};
TORCH_MODULE(Block);

// The one shared reasoning module: forward(h, injection) = blocks(h + injection).
class ReasoningModuleImpl : public torch::nn::Module {
 public:
  ReasoningModuleImpl(const ArchConfig& cfg);
  // `caches`, when given, holds one KvCache per layer.
  at::Tensor forward(const at::Tensor& h, const at::Tensor& injection, const RotaryTables* rope,
                     std::vector<KvCache>* caches = nullptr);
  torch::nn::ModuleList layers{nullptr};
  int64_t num_layers() const { return static_cast<int64_t>(blocks_.size()); }

 private:
  std::vector<Block> blocks_;
};
TORCH_MODULE(ReasoningModule);

}  // namespace trm::model
