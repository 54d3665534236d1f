#include "linear_cross_entropy.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <limits>
#include <vector>

#include "fused_cpu.h"
#include "gemm_cpu.h"
#include "simd.h"
#include "trm/model/parallel_for.h"

namespace trm::model {
namespace {

constexpr int64_t kIgnore = -100;
// Rows per block (kLinearCrossEntropyBlockBytes of float32 logits: 128 MB). Each block's three
// products read the whole [V, H] weight, so fewer, taller blocks read it fewer times and run the
// products at a better efficiency; measured on the language preset (AMD EPYC, AVX2, 32 MB L3),
// interleaved: 32 MB blocks 1.65-1.69 s a step, 64 MB 1.42-1.64 s, 128 MB 1.38-1.59 s. The block
// is written out of cache either way (one 50k-vocabulary row is 200 KB); what stays in L2 is
// the row being reduced.
int64_t ChunkRows(int64_t vocab, int64_t block_bytes) {
  return std::max<int64_t>(16, block_bytes / 4 / std::max<int64_t>(vocab, 1));
}

struct Chunked {
  at::Tensor loss, argmax, dz, dw, token_loss;
};

using simd::kLanes;
using simd::Load;
using simd::Splat;
using simd::V8f;

// One row of SoftmaxRows. Cloned for AVX2 (one 8-lane instruction where SSE2 takes two); the
// file is built without FP contraction, so both clones round every element alike and a
// machine's ISA does not change the numbers.
__attribute__((target_clones("avx2", "default"))) void SoftmaxRow(float* row, int64_t V, float* row_max,
                                                                   float* row_sum, int64_t* argmax,
                                                                   const float* weight) {
  const float ninf = -std::numeric_limits<float>::infinity();
  V8f m8 = Splat(ninf);
  int64_t j = 0;
  for (; j + kLanes <= V; j += kLanes) {
    const V8f v = Load(row + j);
    m8 = v > m8 ? v : m8;
  }
  float m = ninf;
  for (int k = 0; k < kLanes; ++k) m = m8[k] > m ? m8[k] : m;
  for (; j < V; ++j) m = row[j] > m ? row[j] : m;
  const float* hit = std::find(row, row + V, m);
  *argmax = hit == row + V ? 0 : hit - row;  // NaN rows: index 0 (the step is skipped anyway)
  const float sum = simd::ExpShiftSum(row, V, m);
  *row_max = m;
  *row_sum = sum;
  if (weight) simd::Scale(row, V, *weight / sum);
}

// For each row of the [n, V] float32 block x: max, first argmax, and x <- exp(x - max) with the
// row sums; with `weight` (per row), then x <- x * (weight / sum) while the row is still in L2,
// which saves the gradient a pass over the whole block.
void SoftmaxRows(float* x, int64_t n, int64_t V, float* row_max, float* row_sum, int64_t* argmax,
                 const float* weight) {
  ParallelFor(0, n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      SoftmaxRow(x + i * V, V, row_max + i, row_sum + i, argmax + i, weight ? weight + i : nullptr);
    }
  });
}

// `cached` if it has this shape and options and nothing else holds it, else a new tensor kept there.
at::Tensor Reuse(at::Tensor* cached, at::IntArrayRef sizes, const at::TensorOptions& opts) {
  if (cached && cached->defined() && cached->sizes() == sizes && cached->dtype() == opts.dtype() &&
      cached->device() == opts.device() && cached->use_count() == 1) {
    return *cached;
  }
  at::Tensor t = torch::empty(sizes, opts);
  if (cached) *cached = t;
  return t;
}

// One row of a bfloat16 logits block (SoftmaxRowsBf16). The max and argmax are read from the
// bfloat16 row, exp(x - max) goes to a float32 scratch row (L2-resident), and the gradient
// weight * (softmax - onehot) is formed in float32 and rounded once to bfloat16 in place: what the
// reference's autocast head computes (bfloat16 logits, float32 cross-entropy, its gradient cast
// back to bfloat16 for the product's backward), without the [n, V] float32 copies between.
__attribute__((target_clones("avx2", "default"))) void SoftmaxRowBf16(uint16_t* row, int64_t V, float* scratch,
                                                                       int64_t label, const float* weight,
                                                                       int64_t* argmax, float* token_loss) {
  const float ninf = -std::numeric_limits<float>::infinity();
  V8f m8 = Splat(ninf);
  int64_t j = 0;
  for (; j + kLanes <= V; j += kLanes) {
    const V8f v = simd::LoadBf16(row + j);
    m8 = v > m8 ? v : m8;
  }
  float m = ninf;
  for (int k = 0; k < kLanes; ++k) m = m8[k] > m ? m8[k] : m;
  for (; j < V; ++j) m = simd::Bf16ToFloat(row[j]) > m ? simd::Bf16ToFloat(row[j]) : m;
  int64_t hit = 0;  // NaN rows: index 0 (the step is skipped anyway)
  for (int64_t i = 0; i < V; ++i) {
    if (simd::Bf16ToFloat(row[i]) == m) {
      hit = i;
      break;
    }
  }
  *argmax = hit;
  for (j = 0; j + kLanes <= V; j += kLanes) simd::Store(scratch + j, simd::LoadBf16(row + j));
  for (; j < V; ++j) scratch[j] = simd::Bf16ToFloat(row[j]);
  const float sum = simd::ExpShiftSum(scratch, V, m);
  const bool valid = label != kIgnore;
  *token_loss = valid ? (m + std::log(sum)) - simd::Bf16ToFloat(row[label]) : 0.0f;
  if (!weight) return;
  const V8f s = Splat(*weight / sum);
  for (j = 0; j + kLanes <= V; j += kLanes) simd::StoreBf16(row + j, simd::Load(scratch + j) * s);
  for (; j < V; ++j) row[j] = simd::FloatToBf16(scratch[j] * s[0]);
  if (valid) row[label] = simd::FloatToBf16(scratch[label] * s[0] - *weight);
}

// SoftmaxRowBf16 over the [n, V] bfloat16 block x (ATen's bfloat16 bits), rows split over the
// threads. labels [n] int64; weight [n] or null (no gradient: x is left as it is).
void SoftmaxRowsBf16(uint16_t* x, int64_t n, int64_t V, const int64_t* labels, const float* weight,
                     int64_t* argmax, float* token_loss) {
  ParallelFor(0, n, 1, [&](int64_t b, int64_t e) {
    std::vector<float> scratch(static_cast<size_t>(V));
    for (int64_t i = b; i < e; ++i) {
      SoftmaxRowBf16(x + i * V, V, scratch.data(), labels[i], weight ? weight + i : nullptr, argmax + i,
                     token_loss + i);
    }
  });
}

uint16_t* Bf16Data(const at::Tensor& t) { return reinterpret_cast<uint16_t*>(t.data_ptr<at::BFloat16>()); }

// The bfloat16 head on the CPU: bfloat16 products (oneDNN; AMX where the CPU has it) around the
// float32 softmax of SoftmaxRowsBf16. The logits block is bfloat16, so a block holds twice the
// rows of a float32 one (for a 50k vocabulary, 1,335 rows in 128 MB: the presets' 1,024 rows in
// one block). The weight gradient of each block is a bfloat16 product, as the reference's autocast
// backward forms it, accumulated in float32.
Chunked RunBf16Cpu(const at::Tensor& z, const at::Tensor& w, const at::Tensor& labels_in, const at::Tensor& row_weight,
                   bool with_grad, LinearCrossEntropyWorkspace* ws) {
  const int64_t N = z.size(0), V = w.size(0);
  const at::Tensor labels = labels_in.to(torch::kLong).contiguous();
  const at::Tensor wrow = row_weight.to(torch::kFloat32).contiguous();
  Chunked r;
  r.argmax = torch::empty({N}, labels.options());
  at::Tensor tok = torch::empty({N}, wrow.options());
  if (with_grad) {
    r.dz = torch::empty_like(z, at::MemoryFormat::Contiguous);
    r.dw = Reuse(ws ? &ws->dw : nullptr, w.sizes(), w.options().dtype(torch::kFloat32));
  }
  const int64_t block_bytes = ws ? ws->block_bytes : kLinearCrossEntropyBlockBytes;
  const int64_t C = std::min(std::max<int64_t>(16, block_bytes / 2 / std::max<int64_t>(V, 1)), N);
  at::Tensor buf = Reuse(ws ? &ws->logits : nullptr, {C, V}, z.options().dtype(torch::kBFloat16));
  at::Tensor dw16 = with_grad ? Reuse(ws ? &ws->dw16 : nullptr, w.sizes(), buf.options()) : at::Tensor();
  for (int64_t r0 = 0; r0 < N; r0 += C) {
    const int64_t n = std::min(C, N - r0);
    const at::Tensor zc = z.narrow(0, r0, n);
    at::Tensor logits = buf.narrow(0, 0, n);
    at::mm_out(logits, zc, w.t());
    SoftmaxRowsBf16(Bf16Data(logits), n, V, labels.data_ptr<int64_t>() + r0,
                    with_grad ? wrow.data_ptr<float>() + r0 : nullptr, r.argmax.data_ptr<int64_t>() + r0,
                    tok.data_ptr<float>() + r0);
    if (!with_grad) continue;
    at::Tensor dzc = r.dz.narrow(0, r0, n);
    at::mm_out(dzc, logits, w);
    at::mm_out(dw16, logits.t(), zc);
    if (r0 == 0) r.dw.copy_(dw16);
    else r.dw.add_(dw16);
  }
  r.loss = (tok * wrow).sum();
  r.token_loss = tok;
  return r;
}

// One pass over the rows in blocks; with_grad also accumulates d(loss)/dz and d(loss)/dw. Every
// block reuses one logits buffer and is reduced in place: no allocation of block-sized tensors
// (fresh multi-MB allocations cost page faults on every step).
Chunked Run(const at::Tensor& z, const at::Tensor& w_in, const at::Tensor& labels, const at::Tensor& row_weight,
            bool with_grad, LinearCrossEntropyWorkspace* ws) {
  torch::NoGradGuard no_grad;
  const int64_t N = z.size(0), V = w_in.size(0);
  if (z.is_cpu() && z.scalar_type() == torch::kBFloat16 && z.is_contiguous()) {
    // The bfloat16 copy of the weight (38 MB for chat's head) in a buffer kept from step to step:
    // allocated afresh, its pages are mapped and zeroed by the kernel every step.
    at::Tensor w16 = w_in;
    if (w_in.scalar_type() != torch::kBFloat16) {
      const at::Tensor w32 = w_in.to(torch::kFloat32).contiguous();
      w16 = Reuse(ws ? &ws->w16 : nullptr, w32.sizes(), w32.options().dtype(torch::kBFloat16));
      FloatToBf16(w32.data_ptr<float>(), reinterpret_cast<uint16_t*>(w16.data_ptr<at::BFloat16>()), w32.numel());
    }
    return RunBf16Cpu(z, w16, labels, row_weight, with_grad, ws);
  }
  const at::Tensor w = w_in.scalar_type() == z.scalar_type() ? w_in : w_in.to(z.scalar_type());
  const bool cpu_f32 = z.is_cpu() && z.scalar_type() == torch::kFloat32;
  Chunked r;
  r.argmax = torch::empty({N}, labels.options().dtype(torch::kLong).device(torch::kCPU));
  at::Tensor tok = torch::zeros({N}, row_weight.options());
  if (with_grad) {
    r.dz = torch::empty_like(z);
    // Written by the first block (beta = 0), accumulated by the others: no zero fill.
    r.dw = Reuse(ws ? &ws->dw : nullptr, w.sizes(), w.options().dtype(torch::kFloat32));
  }
  // The CPU float32 path scales each row of its gradient as it reduces it.
  const bool fused_scale = with_grad && cpu_f32;
  const at::Tensor wrow = fused_scale ? row_weight.to(torch::kFloat32).contiguous() : at::Tensor();
  const int64_t C = std::min(ChunkRows(V, ws ? ws->block_bytes : kLinearCrossEntropyBlockBytes), N);
  at::Tensor buf = Reuse(ws ? &ws->logits : nullptr, {C, V}, z.options().dtype(torch::kFloat32));
  for (int64_t r0 = 0; r0 < N; r0 += C) {
    const int64_t n = std::min(C, N - r0);
    at::Tensor zc = z.narrow(0, r0, n);
    at::Tensor logits = buf.narrow(0, 0, n);
    // Training's products run on the training path's GEMM (gemm_cpu.h); evaluation keeps ATen's.
    if (cpu_f32 && with_grad) CpuGemm(zc, w.t(), logits);
    else if (cpu_f32) at::mm_out(logits, zc, w.t());
    else logits.copy_(torch::matmul(zc, w.t()));
    at::Tensor lab = labels.narrow(0, r0, n);
    at::Tensor valid = lab != kIgnore;
    at::Tensor safe = torch::where(valid, lab, torch::zeros_like(lab)).unsqueeze(1);
    at::Tensor picked = logits.gather(1, safe);  // [n, 1]
    at::Tensor mx, sum;                          // [n, 1] each
    if (cpu_f32) {
      mx = torch::empty({n, 1}, logits.options());
      sum = torch::empty({n, 1}, logits.options());
      SoftmaxRows(logits.data_ptr<float>(), n, V, mx.data_ptr<float>(), sum.data_ptr<float>(),
                  r.argmax.data_ptr<int64_t>() + r0, fused_scale ? wrow.data_ptr<float>() + r0 : nullptr);
    } else {
      mx = std::get<0>(logits.max(1, /*keepdim=*/true));
      r.argmax.narrow(0, r0, n).copy_(logits.argmax(1));
      logits.sub_(mx).exp_();
      sum = logits.sum(1, /*keepdim=*/true);
    }
    // logits now holds exp(x - max), times weight / sum where fused_scale.
    at::Tensor lse = mx + sum.log();
    tok.narrow(0, r0, n).copy_(torch::where(valid, (lse - picked).squeeze(1), torch::zeros({}, lse.options())));
    if (with_grad) {
      // d/dlogits of weight * CE = weight * (softmax - onehot), built in place in the block.
      at::Tensor wgt = row_weight.narrow(0, r0, n).unsqueeze(1);
      if (!fused_scale) logits.mul_(wgt / sum);
      logits.scatter_add_(1, safe, -(valid.to(torch::kFloat32).unsqueeze(1) * wgt));
      at::Tensor gz = logits.scalar_type() == z.scalar_type() ? logits : logits.to(z.scalar_type());
      at::Tensor dzc = r.dz.narrow(0, r0, n);
      if (cpu_f32) {
        CpuGemm(gz, w, dzc);
        CpuGemm(logits.t(), zc, r.dw, r0 == 0 ? 0.0f : 1.0f);  // accumulated by the product itself
      } else {
        dzc.copy_(torch::matmul(gz, w));
        if (r0 == 0) at::mm_out(r.dw, logits.t(), zc.to(torch::kFloat32));
        else r.dw.addmm_(logits.t(), zc.to(torch::kFloat32));
      }
    }
  }
  r.argmax = r.argmax.to(labels.device());
  r.loss = (tok * row_weight).sum();
  r.token_loss = tok;
  return r;
}

class Fn : public torch::autograd::Function<Fn> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& z,
                                                const at::Tensor& w, const at::Tensor& labels,
                                                const at::Tensor& row_weight, LinearCrossEntropyWorkspace* ws) {
    Chunked r = Run(z, w, labels, row_weight, /*with_grad=*/true, ws);
    ctx->save_for_backward({r.dz, r.dw});
    ctx->saved_data["w_dtype"] = static_cast<int64_t>(w.scalar_type());
    ctx->mark_non_differentiable({r.argmax});
    return {r.loss, r.argmax};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& g = grads[0];  // 0-d
    const auto w_dtype = static_cast<at::ScalarType>(ctx->saved_data["w_dtype"].toInt());
    // The saved gradients are ours alone: scale them in place rather than allocate copies
    // (and not at all by 1: a pass over 51 MB for nothing).
    const bool unit = g.is_cpu() && g.item<double>() == 1.0;
    at::Tensor dz = unit ? saved[0] : saved[0].mul_(g.to(saved[0].scalar_type()));
    at::Tensor dw = unit ? saved[1] : saved[1].mul_(g);
    return {dz, dw.scalar_type() == w_dtype ? dw : dw.to(w_dtype), at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

LinearCrossEntropyResult LinearCrossEntropy(const at::Tensor& z, const at::Tensor& w, const at::Tensor& labels,
                                            const at::Tensor& row_weight, LinearCrossEntropyWorkspace* ws) {
  if (torch::GradMode::is_enabled() && (z.requires_grad() || w.requires_grad())) {
    auto out = Fn::apply(z, w, labels, row_weight, ws);
    return {out[0], out[1]};
  }
  Chunked r = Run(z, w, labels, row_weight, /*with_grad=*/false, ws);
  return {r.loss, r.argmax, r.token_loss};
}

}  // namespace trm::model
