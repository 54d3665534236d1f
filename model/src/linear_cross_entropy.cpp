#include "linear_cross_entropy.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstring>
#include <limits>

namespace trm::model {
namespace {

constexpr int64_t kIgnore = -100;
// Rows per block: 32 MB of float32 logits, big enough for efficient matrix products (measured
// 8-64 MB on the language preset: 32 was fastest), small enough to stay in cache between passes.
int64_t ChunkRows(int64_t vocab) { return std::max<int64_t>(16, (int64_t{32} << 18) / std::max<int64_t>(vocab, 1)); }

struct Chunked {
  at::Tensor loss, argmax, dz, dw, token_loss;
};

// exp(x) in plain float arithmetic (Cephes' polynomial, ~1 ulp) on 4-lane GCC vectors, i.e.
// SSE2 on any x86-64: ATen's exp on this build runs at ~2 ns an element, which dominated the loss.
typedef float V4f __attribute__((vector_size(16)));
typedef int32_t V4i __attribute__((vector_size(16)));

inline V4f FastExp(V4f x) {
  const V4f lo = {-87.3f, -87.3f, -87.3f, -87.3f}, hi = {88.3f, 88.3f, 88.3f, 88.3f};
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const V4f t = x * 1.44269504088896341f + 0.5f;
  V4i i = __builtin_convertvector(t, V4i);
  i += (t < __builtin_convertvector(i, V4f));  // floor: comparisons give -1 where true
  const V4f n = __builtin_convertvector(i, V4f);
  const V4f r = x - n * 0.693359375f + n * 2.12194440e-4f;
  V4f p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const V4i bits = (i + 127) << 23;
  V4f scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

inline V4f Load(const float* p) {
  V4f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void Store(float* p, V4f v) { std::memcpy(p, &v, sizeof v); }

// For each row of the [n, V] float32 block x: max, first argmax, and x <- exp(x - max) with the
// row sums.
void SoftmaxRows(float* x, int64_t n, int64_t V, float* row_max, float* row_sum, int64_t* argmax) {
  at::parallel_for(0, n, 1, [&](int64_t b, int64_t e) {
    for (int64_t i = b; i < e; ++i) {
      float* row = x + i * V;
      const float ninf = -std::numeric_limits<float>::infinity();
      V4f m4 = {ninf, ninf, ninf, ninf};
      int64_t j = 0;
      for (; j + 4 <= V; j += 4) {
        const V4f v = Load(row + j);
        m4 = v > m4 ? v : m4;
      }
      float m = ninf;
      for (int k = 0; k < 4; ++k) m = m4[k] > m ? m4[k] : m;
      for (; j < V; ++j) m = row[j] > m ? row[j] : m;
      const float* hit = std::find(row, row + V, m);
      argmax[i] = hit == row + V ? 0 : hit - row;  // NaN rows: index 0 (the step is skipped anyway)
      V4f s4 = {0, 0, 0, 0};
      const V4f mv = {m, m, m, m};
      for (j = 0; j + 4 <= V; j += 4) {
        const V4f ex = FastExp(Load(row + j) - mv);
        Store(row + j, ex);
        s4 += ex;
      }
      float sum = s4[0] + s4[1] + s4[2] + s4[3];
      for (; j < V; ++j) {
        V4f one = {row[j] - m, 0, 0, 0};
        row[j] = FastExp(one)[0];
        sum += row[j];
      }
      row_max[i] = m;
      row_sum[i] = sum;
    }
  });
}

// One pass over the rows in blocks; with_grad also accumulates d(loss)/dz and d(loss)/dw. Every
// block reuses one logits buffer and is reduced in place: no allocation of block-sized tensors
// (fresh multi-MB allocations cost page faults on every step).
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

Chunked Run(const at::Tensor& z, const at::Tensor& w_in, const at::Tensor& labels, const at::Tensor& row_weight,
            bool with_grad, LinearCrossEntropyWorkspace* ws) {
  torch::NoGradGuard no_grad;
  const int64_t N = z.size(0), V = w_in.size(0);
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
  const int64_t C = std::min(ChunkRows(V), N);
  at::Tensor buf = Reuse(ws ? &ws->logits : nullptr, {C, V}, z.options().dtype(torch::kFloat32));
  for (int64_t r0 = 0; r0 < N; r0 += C) {
    const int64_t n = std::min(C, N - r0);
    at::Tensor zc = z.narrow(0, r0, n);
    at::Tensor logits = buf.narrow(0, 0, n);
    if (cpu_f32) at::mm_out(logits, zc, w.t());
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
                  r.argmax.data_ptr<int64_t>() + r0);
    } else {
      mx = std::get<0>(logits.max(1, /*keepdim=*/true));
      r.argmax.narrow(0, r0, n).copy_(logits.argmax(1));
      logits.sub_(mx).exp_();
      sum = logits.sum(1, /*keepdim=*/true);
    }
    // logits now holds exp(x - max).
    at::Tensor lse = mx + sum.log();
    tok.narrow(0, r0, n).copy_(torch::where(valid, (lse - picked).squeeze(1), torch::zeros({}, lse.options())));
    if (with_grad) {
      // d/dlogits of weight * CE = weight * (softmax - onehot), built in place in the block.
      at::Tensor wgt = row_weight.narrow(0, r0, n).unsqueeze(1);
      logits.mul_(wgt / sum);
      logits.scatter_add_(1, safe, -(valid.to(torch::kFloat32).unsqueeze(1) * wgt));
      at::Tensor gz = logits.scalar_type() == z.scalar_type() ? logits : logits.to(z.scalar_type());
      at::Tensor dzc = r.dz.narrow(0, r0, n);
      if (cpu_f32) at::mm_out(dzc, gz, w);
      else dzc.copy_(torch::matmul(gz, w));
      if (r0 == 0) at::mm_out(r.dw, logits.t(), zc.to(torch::kFloat32));
      else r.dw.addmm_(logits.t(), zc.to(torch::kFloat32));
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
