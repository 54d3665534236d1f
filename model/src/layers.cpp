#include "trm/model/layers.h"

#include <torch/torch.h>

#include <cmath>
#include <limits>

#include "attention_cpu.h"
#include "fused_cpu.h"
#include "gemm_cpu.h"
#include "trm/common/torch_compat.h"
#include "trm/model/init.h"
#include "trm/model/parallel_for.h"

namespace trm::model {

CastedLinearImpl::CastedLinearImpl(int64_t in_features, int64_t out_features, bool with_bias) {
  weight = torch::empty({out_features, in_features});
  TruncNormalInit(weight, 1.0 / std::sqrt(static_cast<double>(in_features)));
  weight = register_parameter("weight", weight);
  if (with_bias) bias = register_parameter("bias", torch::zeros({out_features}));
}

namespace {

bool FastCast(const at::Tensor& x, at::ScalarType to) {
  const auto from = x.scalar_type();
  return x.device().is_cpu() && x.is_contiguous() &&
         ((from == torch::kFloat32 && to == torch::kBFloat16) || (from == torch::kBFloat16 && to == torch::kFloat32));
}

at::Tensor CastNoGrad(const at::Tensor& x, at::ScalarType to) {
  at::Tensor y = torch::empty(x.sizes(), x.options().dtype(to).requires_grad(false));
  if (to == torch::kFloat32) {
    Bf16ToFloat(reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>()), y.data_ptr<float>(), x.numel());
  } else {
    FloatToBf16(x.data_ptr<float>(), reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>()), x.numel());
  }
  return y;
}

class CastFn : public torch::autograd::Function<CastFn> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                                                int64_t to) {
    ctx->saved_data["from"] = static_cast<int64_t>(x.scalar_type());
    return {CastNoGrad(x, static_cast<at::ScalarType>(to))};
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto from = static_cast<at::ScalarType>(ctx->saved_data["from"].toInt());
    const at::Tensor g = grads[0].contiguous();
    return {FastCast(g, from) ? CastNoGrad(g, from) : g.to(from), at::Tensor()};
  }
};

}  // namespace

at::Tensor CastTo(const at::Tensor& x, at::ScalarType dtype) {
  if (x.scalar_type() == dtype) return x;
  if (!FastCast(x, dtype) || x.numel() == 0) return x.to(dtype);
  if (x.requires_grad() && torch::GradMode::is_enabled()) return CastFn::apply(x, static_cast<int64_t>(dtype))[0];
  return CastNoGrad(x, dtype);
}

namespace {

// y = x W^T on the training path's GEMM, with its backward's two products there too: dx = dy W,
// dW = dy^T x. x [..., in] float32, w [out, in].
class CpuLinearFn : public torch::autograd::Function<CpuLinearFn> {
 public:
  // Outputs are allocated in their final shape and written through 2-D views: a custom
  // Function must not return a view of a tensor it made (autograd would treat it as a view of
  // that base, whose graph bookkeeping then breaks when the step's graph is freed).
  static at::Tensor Forward(const at::Tensor& x, const at::Tensor& w) {
    const int64_t in = w.size(1), out = w.size(0);
    const at::Tensor x2 = x.reshape({-1, in});
    std::vector<int64_t> size(x.sizes().begin(), x.sizes().end());
    size.back() = out;
    at::Tensor y = torch::empty(size, x.options().requires_grad(false));
    CpuGemm(x2, w.t(), y.view({-1, out}));
    return y;
  }

  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                                                const at::Tensor& w) {
    ctx->save_for_backward({x, w});
    return {Forward(x, w)};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& w = saved[1];
    const int64_t in = w.size(1), out = w.size(0);
    const at::Tensor dy = grads[0].reshape({-1, out});
    at::Tensor dx, dw;
    if (ctx->needs_input_grad(0)) {
      dx = torch::empty(x.sizes(), dy.options());
      CpuGemm(dy, w, dx.view({-1, in}));
    }
    if (ctx->needs_input_grad(1)) {
      dw = torch::empty({out, in}, dy.options());
      CpuGemm(dy.t(), x.reshape({-1, in}), dw);
    }
    return {dx, dw};
  }
};

}  // namespace

at::Tensor CastedLinearImpl::forward(const at::Tensor& x) {
  auto dt = x.scalar_type();
  if (is_training() && fused_cpu_ && !bias.defined() && x.device().is_cpu() && dt == torch::kFloat32 &&
      weight.scalar_type() == torch::kFloat32 && weight.is_contiguous() && x.dim() >= 2 && x.numel() > 0) {
    if (torch::GradMode::is_enabled() && (x.requires_grad() || weight.requires_grad())) {
      return CpuLinearFn::apply(x, weight)[0];
    }
    return CpuLinearFn::Forward(x, weight);
  }
  at::Tensor w = CastTo(weight, dt);
  if (!bias.defined()) return torch::linear(x, w);
  return torch::linear(x, w, CastTo(bias, dt));
}

CastedEmbeddingImpl::CastedEmbeddingImpl(int64_t num, int64_t dim, double init_std) {
  embedding_weight = torch::empty({num, dim});
  TruncNormalInit(embedding_weight, init_std);
  embedding_weight = register_parameter("embedding_weight", embedding_weight);
}

namespace {

// Lookup whose backward accumulates into the weight's gradient in place (CastedEmbeddingImpl).
// Rows are added in order, one at a time, so the result does not depend on the thread count.
// The weight's gradient is then returned undefined: its AccumulateGrad node still runs (and its
// post-hooks, which the data-parallel reducer counts on) with nothing left to add.
class EmbeddingFn : public torch::autograd::Function<EmbeddingFn> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& weight,
                                                const at::Tensor& ids) {
    ctx->save_for_backward({ids});
    ctx->saved_data["weight"] = weight;
    return {torch::embedding(weight, ids)};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor ids = ctx->get_saved_variables()[0].contiguous();
    const at::Tensor weight = ctx->saved_data["weight"].toTensor();
    const int64_t V = weight.size(0), D = weight.size(1), n = ids.numel();
    const at::Tensor g = grads[0].to(torch::kFloat32).contiguous();
    const at::Tensor grad = weight.grad();
    const bool in_place = grad.defined() && grad.is_contiguous() && grad.scalar_type() == torch::kFloat32 &&
                          grad.sizes() == weight.sizes() && !grad.requires_grad();
    at::Tensor target = in_place ? grad : torch::zeros(weight.sizes(), weight.options().requires_grad(false));
    float* t = target.data_ptr<float>();
    const float* gp = g.data_ptr<float>();
    const int64_t* ip = ids.data_ptr<int64_t>();
    for (int64_t r = 0; r < n; ++r) {
      const int64_t row = ip[r];
      TORCH_CHECK(row >= 0 && row < V, "embedding: index ", row, " out of range [0, ", V, ")");
      float* dst = t + row * D;
      const float* src = gp + r * D;
      for (int64_t d = 0; d < D; ++d) dst[d] += src[d];
    }
    return {in_place ? at::Tensor() : target, at::Tensor()};
  }
};

}  // namespace

at::Tensor CastedEmbeddingImpl::forward(const at::Tensor& ids, at::ScalarType dtype) {
  const at::Tensor idx = ids.to(torch::kLong);
  const at::Tensor& w = embedding_weight;
  if (is_training() && fused_cpu_ && w.device().is_cpu() && w.scalar_type() == torch::kFloat32 && w.dim() == 2 &&
      w.is_contiguous() && w.requires_grad() && torch::GradMode::is_enabled()) {
    return CastTo(EmbeddingFn::apply(w, idx.contiguous())[0], dtype);
  }
  return CastTo(torch::embedding(w, idx), dtype);
}

namespace {

// A bfloat16 CPU activation: training's fused kernels take it in float32 between two casts.
bool CpuBf16(const at::Tensor& t) { return t.device().is_cpu() && t.scalar_type() == torch::kBFloat16; }

// The reference's op sequence, so the forward stays bitwise the reference's.
at::Tensor RmsNormOps(const at::Tensor& x32, double eps, at::Tensor* r_out = nullptr) {
  at::Tensor r = torch::rsqrt(x32.square().mean(-1, /*keepdim=*/true) + eps);
  if (r_out) *r_out = r;
  return x32 * r;
}

// RMSNorm with a one-pass backward on the CPU. Autograd's backward of the op sequence above runs
// about eight elementwise kernels over the activation (square, mean, rsqrt and two products,
// each differentiated); with r = rsqrt(mean(x^2) + eps) the gradient is
//   dx = r * g - x * (r^3 * mean(g * x)),
// one dot product and one fused update per row while the row is in cache.
class RmsNormFn : public torch::autograd::Function<RmsNormFn> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                                                double eps) {
    at::Tensor r;
    at::Tensor y = RmsNormOps(x, eps, &r);
    ctx->save_for_backward({x, r});
    return {y};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    return {RmsNormBackward(saved[0], saved[1], grads[0]), at::Tensor()};
  }

  // dx from x, r and the gradient of y.
  static at::Tensor RmsNormBackward(const at::Tensor& x, const at::Tensor& r_in, const at::Tensor& g_in) {
    const at::Tensor r = r_in.contiguous(), g = g_in.contiguous();
    const int64_t n = x.size(-1), rows = x.numel() / n;
    at::Tensor dx = at::empty_like(x, at::MemoryFormat::Contiguous);
    const float* xp = x.data_ptr<float>();
    const float* gp = g.data_ptr<float>();
    const float* rp = r.data_ptr<float>();
    float* dp = dx.data_ptr<float>();
    ParallelFor(0, rows, 16, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const float* xr = xp + row * n;
        const float* gr = gp + row * n;
        float* d = dp + row * n;
        float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};  // eight lanes: the loop vectorises
        int64_t i = 0;
        for (; i + 8 <= n; i += 8)
          for (int l = 0; l < 8; ++l) acc[l] += gr[i + l] * xr[i + l];
        float dot = 0;
        for (; i < n; ++i) dot += gr[i] * xr[i];
        for (float a : acc) dot += a;
        const float rr = rp[row], c = rr * rr * rr * dot / static_cast<float>(n);
        for (int64_t j = 0; j < n; ++j) d[j] = rr * gr[j] - xr[j] * c;
      }
    });
    return dx;
  }
};

// RmsNorm(a + b) in one pass per row (fused_cpu.h), for training; the backward is RmsNormFn's,
// handed to both summands.
class AddRmsNormFn : public torch::autograd::Function<AddRmsNormFn> {
 public:
  static at::Tensor Forward(const at::Tensor& a, const at::Tensor& b, double eps, at::Tensor* x_out,
                            at::Tensor* r_out) {
    const int64_t n = a.size(-1), rows = a.numel() / n;
    at::Tensor x = at::empty_like(a, at::MemoryFormat::Contiguous), y = at::empty_like(x);
    std::vector<int64_t> rsize(a.sizes().begin(), a.sizes().end());
    rsize.back() = 1;
    at::Tensor r = torch::empty(rsize, a.options());
    AddRmsNormRows(a.data_ptr<float>(), b.data_ptr<float>(), x.data_ptr<float>(), y.data_ptr<float>(),
                   r.data_ptr<float>(), rows, n, static_cast<float>(eps));
    if (x_out) *x_out = x, *r_out = r;
    return y;
  }

  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& a,
                                                const at::Tensor& b, double eps) {
    at::Tensor x, r;
    at::Tensor y = Forward(a, b, eps, &x, &r);
    ctx->save_for_backward({x, r});
    return {y};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    at::Tensor dx = RmsNormFn::RmsNormBackward(saved[0], saved[1], grads[0]);
    return {dx, dx, at::Tensor()};
  }
};

}  // namespace

at::Tensor RmsNorm(const at::Tensor& x, double eps) {
  auto dt = x.scalar_type();
  at::Tensor x32 = CastTo(x, torch::kFloat32);
  const bool fused = x32.requires_grad() && x32.device().is_cpu() && x32.is_contiguous() && x32.dim() >= 1 &&
                     x32.numel() > 0 && torch::GradMode::is_enabled();
  at::Tensor y = fused ? RmsNormFn::apply(x32, eps)[0] : RmsNormOps(x32, eps);
  return CastTo(y, dt);
}

namespace {

// RmsNorm(a + b); `fused` (training) on the CPU in float32 one pass, else the reference's ops.
at::Tensor AddRmsNorm(const at::Tensor& a, const at::Tensor& b, double eps, bool fused) {
  if (fused && CpuBf16(a) && CpuBf16(b)) {
    return CastTo(AddRmsNorm(CastTo(a, torch::kFloat32), CastTo(b, torch::kFloat32), eps, true), torch::kBFloat16);
  }
  auto cpu_f32 = [](const at::Tensor& t) {
    return t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && t.is_contiguous();
  };
  if (!fused || !cpu_f32(a) || !cpu_f32(b) || a.sizes() != b.sizes() || a.dim() < 1 || a.numel() == 0) {
    return RmsNorm(a + b, eps);
  }
  if (torch::GradMode::is_enabled() && (a.requires_grad() || b.requires_grad())) {
    return AddRmsNormFn::apply(a, b, eps)[0];
  }
  return AddRmsNormFn::Forward(a, b, eps, nullptr, nullptr);
}

}  // namespace

RotaryTables RotaryTables::Make(int64_t max_positions, int64_t head_dim, double theta) {
  auto f32 = torch::TensorOptions().dtype(torch::kFloat32);
  at::Tensor inv = 1.0 / torch::pow(theta, torch::arange(0, head_dim, 2, f32) / static_cast<double>(head_dim));
  at::Tensor pos = torch::arange(max_positions, f32);
  at::Tensor freqs = torch::outer(pos, inv);
  at::Tensor emb = torch::cat({freqs, freqs}, -1);
  return {emb.cos(), emb.sin()};
}

namespace {

// The reference's op sequence (x * cos + rotate_half(x) * sin), so the forward stays bitwise the
// reference's. cos, sin: [S, 1, D] over x [B, S, H, D].
at::Tensor RotaryOps(const at::Tensor& x32, const at::Tensor& cos, const at::Tensor& sin) {
  const int64_t half = x32.size(-1) / 2;
  // unbind rather than narrow: its backward stacks the two halves instead of zero-filling a
  // full-size tensor per half (same values, less memory traffic).
  auto halves = x32.unflatten(-1, {2, half}).unbind(-2);
  at::Tensor rotated = torch::cat({-halves[1], halves[0]}, -1);
  return x32 * cos + rotated * sin;
}

// RoPE in one pass on the CPU: y = x * cos + rot(x) * sin with rot(x) = (-x2, x1), each element
// rounded exactly as the reference's five kernels round it (a product, a product of the negated
// partner, a sum: the file is built without floating-point contraction), written straight into
// the requested layout. x [B, S, H, D] float32 with unit stride along D; cos, sin [S, D].
at::Tensor RotaryOnePass(const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin, RotaryLayout layout) {
  const int64_t B = x.size(0), S = x.size(1), H = x.size(2), D = x.size(3), half = D / 2;
  const auto opts = x.options().requires_grad(false);
  at::Tensor y;
  switch (layout) {
    case RotaryLayout::kBSHD: y = at::empty({B, S, H, D}, opts); break;
    case RotaryLayout::kBHSD: y = at::empty({B, H, S, D}, opts).transpose(1, 2); break;
    case RotaryLayout::kBHDS: y = at::empty({B, H, D, S}, opts).permute({0, 3, 1, 2}); break;
  }
  const float* xp = x.data_ptr<float>();
  const float* cp = cos.data_ptr<float>();
  const float* sp = sin.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t xb = x.stride(0), xs = x.stride(1), xh = x.stride(2);
  const int64_t yb = y.stride(0), ys = y.stride(1), yh = y.stride(2), yd = y.stride(3);
  ParallelFor(0, B * S * H, 64, [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / (S * H), s = (row / H) % S, h = row % H;
      const float* xr = xp + b * xb + s * xs + h * xh;
      const float* c = cp + s * D;
      const float* sn = sp + s * D;
      float* yr = yp + b * yb + s * ys + h * yh;
      for (int64_t j = 0; j < half; ++j) {
        const float a = xr[j] * c[j], r = -xr[j + half] * sn[j];
        yr[j * yd] = a + r;
      }
      for (int64_t j = half; j < D; ++j) {
        const float a = xr[j] * c[j], r = xr[j - half] * sn[j];
        yr[j * yd] = a + r;
      }
    }
  });
  return y;
}

// RoPE with a one-pass CPU backward: with y = x * cos + rot(x) * sin and rot(x) = (-x2, x1),
//   dx1 = g1 * cos1 + g2 * sin2,   dx2 = g2 * cos2 - g1 * sin1,
// one loop over each head's row instead of autograd's split, negate, concatenate and products.
class RotaryFn : public torch::autograd::Function<RotaryFn> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                                                const at::Tensor& cos, const at::Tensor& sin, int64_t layout) {
    ctx->save_for_backward({cos, sin});
    return {RotaryOnePass(x, cos, sin, static_cast<RotaryLayout>(layout))};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const at::Tensor& cos = saved[0];  // [S, D], contiguous
    const at::Tensor& sin = saved[1];
    const at::Tensor g = grads[0].contiguous();  // [B, S, H, D]
    const int64_t B = g.size(0), S = g.size(1), H = g.size(2), D = g.size(3), half = D / 2;
    at::Tensor dx = at::empty_like(g, at::MemoryFormat::Contiguous);
    const float* gp = g.data_ptr<float>();
    const float* cp = cos.data_ptr<float>();
    const float* sp = sin.data_ptr<float>();
    float* dp = dx.data_ptr<float>();
    ParallelFor(0, B * S * H, 64, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t s = (row / H) % S;
        const float* gr = gp + row * D;
        const float* c = cp + s * D;
        const float* sn = sp + s * D;
        float* d = dp + row * D;
        for (int64_t j = 0; j < half; ++j) {
          d[j] = gr[j] * c[j] + gr[j + half] * sn[j + half];
          d[j + half] = gr[j + half] * c[j + half] - gr[j] * sn[j];
        }
      }
    });
    return {dx, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

at::Tensor ApplyRotary(const at::Tensor& x, const RotaryTables& rope, int64_t offset, RotaryLayout layout) {
  const int64_t S = x.size(1);
  auto dt = x.scalar_type();
  at::Tensor x32 = CastTo(x, torch::kFloat32);
  const bool one_pass = x32.device().is_cpu() && x32.dim() == 4 && x32.size(-1) % 2 == 0 &&
                        rope.cos.device().is_cpu() && rope.cos.scalar_type() == torch::kFloat32 &&
                        !rope.cos.requires_grad();
  at::Tensor y;
  if (one_pass) {
    const at::Tensor cos = rope.cos.narrow(0, offset, S).contiguous();  // [S, D]
    const at::Tensor sin = rope.sin.narrow(0, offset, S).contiguous();
    at::Tensor xin = x32.stride(-1) == 1 ? x32 : x32.contiguous();
    if (xin.requires_grad() && torch::GradMode::is_enabled()) {
      y = RotaryFn::apply(xin, cos, sin, static_cast<int64_t>(layout))[0];
    } else {
      torch::NoGradGuard no_grad;
      y = RotaryOnePass(xin, cos, sin, layout);
    }
  } else {
    at::Tensor cos = rope.cos.narrow(0, offset, S).unsqueeze(1);  // [S, 1, D] over [B, S, H, D]
    at::Tensor sin = rope.sin.narrow(0, offset, S).unsqueeze(1);
    if (cos.device() != x.device()) {
      cos = cos.to(x.device());
      sin = sin.to(x.device());
    }
    y = RotaryOps(x32, cos, sin);
  }
  return CastTo(y, dt);
}

namespace {

// softmax(q k^T / sqrt(d)) v for q [B, H, S, D] against k, v [B, H, T, D], where query i sits at
// absolute position offset + i and, when causal, sees keys 0..offset + i.
at::Tensor Attend(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, bool causal, int64_t offset) {
  const int64_t S = q.size(2), T = k.size(2);
  const bool masked = causal && !(S == 1 && offset + 1 == T);  // a last-position query sees all
  auto FutureMask = [&] {
    auto opts = torch::TensorOptions().dtype(torch::kLong).device(q.device());
    return torch::arange(T, opts).unsqueeze(0) > (torch::arange(S, opts) + offset).unsqueeze(1);
  };
  if (q.is_cuda()) {
    // Fused kernels (flash / memory-efficient) on the GPU.
    if (!masked) return compat::ScaledDotProductAttention(q, k, v, false);
    if (offset == 0 && S == T) return compat::ScaledDotProductAttention(q, k, v, true);
    return compat::ScaledDotProductAttentionMasked(q, k, v, FutureMask().logical_not());
  }
  // The reference's own formulation, op for op, so CPU float32 results are bitwise those of the
  // PyTorch reference: deep recursions amplify any rounding difference.
  at::Tensor scores = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(q.size(-1)));
  if (masked) scores = scores.masked_fill(FutureMask(), -std::numeric_limits<float>::infinity());
  return torch::matmul(scores.softmax(-1), v);
}

}  // namespace

AttentionImpl::AttentionImpl(const ArchConfig& cfg)
    : num_heads_(cfg.num_heads), head_dim_(cfg.head_dim()), causal_(cfg.causal) {
  qkv_proj = register_module("qkv_proj", CastedLinear(cfg.hidden_size, 3 * cfg.hidden_size, false));
  o_proj = register_module("o_proj", CastedLinear(cfg.hidden_size, cfg.hidden_size, false));
}

at::Tensor AttentionImpl::forward(const at::Tensor& x, const RotaryTables* rope, KvCache* cache) {
  const int64_t B = x.size(0), S = x.size(1), H = num_heads_, D = head_dim_;
  const at::Tensor qkv = qkv_proj(x).view({B, S, 3, H, D});  // [q heads | k heads | v heads]
  // Training on the CPU runs the fused attention, RoPE included (attention_cpu.h); evaluation
  // and generation keep the reference's ops, so cached and recomputed decoding agree bit for bit.
  // In bfloat16 it runs in float32 between two casts (the reference's bfloat16 ops run a bmm,
  // a division, a masked_fill and a softmax, each with its backward, over the [B, H, S, S] scores).
  if (is_training() && fused_cpu_ && !cache) {
    const at::Tensor cos = rope ? rope->cos : at::Tensor(), sin = rope ? rope->sin : at::Tensor();
    const at::Tensor qkv32 = CpuBf16(qkv) ? CastTo(qkv, torch::kFloat32) : qkv;
    if (CpuAttentionApplies(qkv32, cos, sin)) {
      return o_proj(CastTo(CpuAttention(qkv32, cos, sin, causal_), qkv.scalar_type()).view({B, S, H * D}));
    }
  }
  // unbind (not narrow) for a cheaper backward, as in ApplyRotary.
  auto parts = qkv.unbind(2);
  at::Tensor q = parts[0], k = parts[1], v = parts[2];
  const int64_t offset = cache && cache->k.defined() ? cache->k.size(2) : 0;
  if (rope) {
    q = ApplyRotary(q, *rope, offset, RotaryLayout::kBHSD);
    k = ApplyRotary(k, *rope, offset, RotaryLayout::kBHDS);
  }
  q = q.transpose(1, 2);
  k = k.transpose(1, 2);
  v = v.transpose(1, 2);
  if (cache) {
    if (cache->k.defined()) {
      k = torch::cat({cache->k, k}, 2);
      v = torch::cat({cache->v, v}, 2);
    }
    cache->k = k;
    cache->v = v;
  }
  at::Tensor o = Attend(q, k, v, causal_, offset);
  return o_proj(o.transpose(1, 2).reshape({B, S, H * D}));
}

SwiGluImpl::SwiGluImpl(int64_t hidden, int64_t intermediate) {
  gate_up_proj = register_module("gate_up_proj", CastedLinear(hidden, 2 * intermediate, false));
  down_proj = register_module("down_proj", CastedLinear(intermediate, hidden, false));
}

namespace {

// silu(gate) * up over gu = [gate | up]: in training one fused pass (fused_cpu.h), else the
// reference's two kernels, bitwise its forward. The CPU backward writes d(gu) whole in one pass:
// autograd's backward of the chunk, silu and product is two products, silu's backward and a
// concatenation of the halves (the largest single copy in a tiny step). With s = sigmoid(g):
//   d(gate) = dy * up * s * (1 + g * (1 - s)),   d(up) = dy * g * s.
class SwiGluActFn : public torch::autograd::Function<SwiGluActFn> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& gu,
                                                bool fused) {
    ctx->save_for_backward({gu});
    if (fused) return {FusedForward(gu)};
    auto parts = gu.chunk(2, -1);
    return {torch::silu(parts[0]) * parts[1]};
  }

  static at::Tensor FusedForward(const at::Tensor& gu) {
    const int64_t I = gu.size(-1) / 2, rows = gu.numel() / (2 * I);
    std::vector<int64_t> size(gu.sizes().begin(), gu.sizes().end());
    size.back() = I;
    at::Tensor y = torch::empty(size, gu.options());
    SwiGluRows(gu.data_ptr<float>(), y.data_ptr<float>(), rows, I);
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor gu = ctx->get_saved_variables()[0];  // contiguous [..., 2I]
    const int64_t I = gu.size(-1) / 2, rows = gu.numel() / (2 * I);
    const at::Tensor dy = grads[0].contiguous();
    at::Tensor dgu = at::empty_like(gu, at::MemoryFormat::Contiguous);
    SwiGluBackwardRows(gu.data_ptr<float>(), dy.data_ptr<float>(), dgu.data_ptr<float>(), rows, I);
    return {dgu, at::Tensor()};
  }
};

at::Tensor SwiGluAct(const at::Tensor& gu, bool fused) {
  if (fused && CpuBf16(gu)) return CastTo(SwiGluAct(CastTo(gu, torch::kFloat32), true), torch::kBFloat16);
  const bool cpu_f32 =
      gu.device().is_cpu() && gu.scalar_type() == torch::kFloat32 && gu.is_contiguous() && gu.numel() > 0;
  if (cpu_f32 && gu.requires_grad() && torch::GradMode::is_enabled()) {
    return SwiGluActFn::apply(gu, fused)[0];
  }
  if (cpu_f32 && fused) return SwiGluActFn::FusedForward(gu);
  auto parts = gu.chunk(2, -1);
  return torch::silu(parts[0]) * parts[1];
}

}  // namespace

at::Tensor SwiGluImpl::forward(const at::Tensor& x, bool allow_fused) {
  return down_proj(SwiGluAct(gate_up_proj(x), is_training() && fused_cpu_ && allow_fused));
}

BlockImpl::BlockImpl(const ArchConfig& cfg) : eps_(cfg.rms_norm_eps) {
  self_attn = register_module("self_attn", Attention(cfg));
  mlp = register_module("mlp", SwiGlu(cfg.hidden_size, cfg.mlp_intermediate()));
}

at::Tensor BlockImpl::forward(const at::Tensor& h_in, const RotaryTables* rope, KvCache* cache) {
  // With a cache (decoding) the reference's ops throughout, as the attention runs them.
  const bool fused = is_training() && fused_cpu_ && !cache;
  at::Tensor h = AddRmsNorm(h_in, self_attn(h_in, rope, cache), eps_, fused);
  return AddRmsNorm(h, mlp(h, fused), eps_, fused);
}

void BlockImpl::SetFusedCpu(bool on) {
  fused_cpu_ = on;
  self_attn->SetFusedCpu(on);
  mlp->SetFusedCpu(on);
}

ReasoningModuleImpl::ReasoningModuleImpl(const ArchConfig& cfg) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg.L_layers; ++i) {
    blocks_.push_back(Block(cfg));
    layers->push_back(blocks_.back());
  }
}

at::Tensor ReasoningModuleImpl::forward(const at::Tensor& h_in, const at::Tensor& injection,
                                        const RotaryTables* rope, std::vector<KvCache>* caches) {
  at::Tensor h = h_in + injection;
  for (size_t i = 0; i < blocks_.size(); ++i) {
    h = blocks_[i]->forward(h, rope, caches ? &(*caches)[i] : nullptr);
  }
  return h;
}

}  // namespace trm::model
