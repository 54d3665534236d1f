#include "attention_cpu.h"

#include <ATen/record_function.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "simd.h"
#include "trm/model/parallel_for.h"

namespace trm::model {
namespace {

using simd::kLanes;
using simd::Load;
using simd::Splat;
using simd::Store;
using simd::V8f;

// Every per-item buffer is padded to whole 16-column tiles (zeros past S and D), so the tile
// kernel has no edge cases; the padding is masked out of the softmax and never written back.
constexpr int64_t kPad = 16;
// GatherCols rotates a row on the stack.
constexpr int64_t kMaxHeadDim = 1024;

int64_t RoundUp(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// The fused projection [B, S, 3, H, D] (contiguous): part 0 is q, 1 k, 2 v.
struct Qkv {
  const float* data;
  int64_t S, H, D;
  const float* Row(int64_t part, int64_t b, int64_t h, int64_t s) const {
    return data + (((b * S + s) * 3 + part) * H + h) * D;
  }
};

// RoPE tables [S, D], or none (null).
struct Rope {
  const float* cos = nullptr;
  const float* sin = nullptr;
};

// y = x * cos + rot(x) * sin with rot(x) = (-x2, x1), the reference's rotate_half, for row s.
inline void Rotate(const float* x, const Rope& rope, int64_t s, int64_t D, float* y) {
  if (!rope.cos) {
    std::memcpy(y, x, sizeof(float) * D);
    return;
  }
  const float* c = rope.cos + s * D;
  const float* sn = rope.sin + s * D;
  const int64_t half = D / 2;
  for (int64_t d = 0; d < half; ++d) y[d] = x[d] * c[d] - x[d + half] * sn[d];
  for (int64_t d = half; d < D; ++d) y[d] = x[d] * c[d] + x[d - half] * sn[d];
}

// The transpose of Rotate: dx = dy * cos + rot^T(dy * sin), rot^T(z) = (z2, -z1).
inline void RotateBack(const float* dy, const Rope& rope, int64_t s, int64_t D, float* dx) {
  if (!rope.cos) {
    std::memcpy(dx, dy, sizeof(float) * D);
    return;
  }
  const float* c = rope.cos + s * D;
  const float* sn = rope.sin + s * D;
  const int64_t half = D / 2;
  for (int64_t d = 0; d < half; ++d) dx[d] = dy[d] * c[d] + dy[d + half] * sn[d + half];
  for (int64_t d = half; d < D; ++d) dx[d] = dy[d] * c[d] - dy[d - half] * sn[d - half];
}

// Item (b, h) of one part as rows [Sp, Dp], rotated when `rope` has tables, zero-padded.
void GatherRows(const Qkv& x, int64_t part, int64_t b, int64_t h, const Rope& rope, int64_t Sp, int64_t Dp,
                float* out) {
  std::memset(out, 0, sizeof(float) * Sp * Dp);
  for (int64_t s = 0; s < x.S; ++s) Rotate(x.Row(part, b, h, s), rope, s, x.D, out + s * Dp);
}

// The same transposed, [Dp, Sp].
void GatherCols(const Qkv& x, int64_t part, int64_t b, int64_t h, const Rope& rope, int64_t Sp, int64_t Dp,
                float* out) {
  std::memset(out, 0, sizeof(float) * Sp * Dp);
  float row[kMaxHeadDim];
  for (int64_t s = 0; s < x.S; ++s) {
    Rotate(x.Row(part, b, h, s), rope, s, x.D, row);
    for (int64_t d = 0; d < x.D; ++d) out[d * Sp + s] = row[d];
  }
}

// Rows s < S of a [Sp, Dp] item into a contiguous [B, S, H, D] tensor.
void ScatterRows(const float* in, int64_t b, int64_t h, int64_t S, int64_t H, int64_t D, int64_t Dp, float* out) {
  for (int64_t s = 0; s < S; ++s) std::memcpy(out + ((b * S + s) * H + h) * D, in + s * Dp, sizeof(float) * D);
}

// Rows s < S of a [Sp, Dp] item's gradient into part `part` of a [B, S, 3, H, D] gradient,
// through RoPE's transpose when `rope` has tables.
void ScatterQkv(const float* in, int64_t part, int64_t b, int64_t h, const Rope& rope, int64_t S, int64_t H,
                int64_t D, int64_t Dp, float* out) {
  for (int64_t s = 0; s < S; ++s) RotateBack(in + s * Dp, rope, s, D, out + (((b * S + s) * 3 + part) * H + h) * D);
}

// Which part of a product a 4-row tile starting at row i0 needs, for triangular operands.
struct Ranges {
  bool k_from_tile = false;  // k from i0 (A is upper triangular)
  bool k_to_tile = false;    // k below i0 + 4 (A is lower triangular)
  bool n_to_tile = false;    // columns below i0 + 4, rounded up to the tile (a causal score block)
};

// The tile of rows i0..i0+3 of a product: the k and column ranges it needs (Ranges), and where
// its A rows are: element (row i0 + j, column k) at a[j][k * a_step] (A stored as A^T when
// a_transposed). Shared by the 8- and 16-lane tiles.
struct TileSpan {
  int64_t k0, k1, n1, a_step;
  const float* a[4];
};

template <bool a_transposed>
__attribute__((always_inline)) inline TileSpan Span(int64_t i0, int64_t N, int64_t K, const float* A, int64_t lda,
                                                    Ranges r) {
  TileSpan t;
  t.k0 = r.k_from_tile ? i0 : 0;
  t.k1 = r.k_to_tile ? std::min(i0 + 4, K) : K;
  t.n1 = r.n_to_tile ? std::min(RoundUp(i0 + 4, kPad), N) : N;
  t.a_step = a_transposed ? lda : 1;
  const int64_t next_row = a_transposed ? 1 : lda;
  t.a[0] = a_transposed ? A + i0 : A + i0 * lda;
  for (int j = 1; j < 4; ++j) t.a[j] = t.a[j - 1] + next_row;
  return t;
}

// C[i][n] = sum_k A[i][k] B[k][n] for M % 4 == 0 and N % 16 == 0, in 4 x 16 register tiles;
// with `a_transposed`, A is stored as A^T ([K, M], leading dimension lda): C = A^T-stored times B
// without a transposed copy (the backward's p^T dO and dS^T q), the same products in the same
// order, so the same bits.
template <bool a_transposed>
__attribute__((always_inline)) inline void GemmTile(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                                                    const float* B, int64_t ldb, float* C, int64_t ldc, Ranges r) {
  for (int64_t i0 = 0; i0 < M; i0 += 4) {
    const TileSpan t = Span<a_transposed>(i0, N, K, A, lda, r);
    const int64_t k0 = t.k0, k1 = t.k1, n1 = t.n1, a_step = t.a_step;
    const float *a0 = t.a[0], *a1 = t.a[1], *a2 = t.a[2], *a3 = t.a[3];
    for (int64_t n0 = 0; n0 < n1; n0 += kPad) {
      V8f c00 = Splat(0.0f), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00;
      for (int64_t k = k0; k < k1; ++k) {
        const float* bk = B + k * ldb + n0;
        const V8f b0 = Load(bk), b1 = Load(bk + kLanes);
        const int64_t ka = k * a_step;
        V8f x = Splat(a0[ka]);
        c00 += x * b0;
        c01 += x * b1;
        x = Splat(a1[ka]);
        c10 += x * b0;
        c11 += x * b1;
        x = Splat(a2[ka]);
        c20 += x * b0;
        c21 += x * b1;
        x = Splat(a3[ka]);
        c30 += x * b0;
        c31 += x * b1;
      }
      float* c = C + i0 * ldc + n0;
      Store(c, c00), Store(c + kLanes, c01), c += ldc;
      Store(c, c10), Store(c + kLanes, c11), c += ldc;
      Store(c, c20), Store(c + kLanes, c21), c += ldc;
      Store(c, c30), Store(c + kLanes, c31);
    }
  }
}

// GemmTile with one 16-lane vector per tile row, for the AVX-512 build: per k one load, four
// broadcasts and four fused multiply-adds where the 8-lane tile takes two loads and eight.
typedef float V16f __attribute__((vector_size(64)));

template <bool a_transposed>
__attribute__((always_inline)) inline void GemmTile16(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                                                      const float* B, int64_t ldb, float* C, int64_t ldc, Ranges r) {
  auto load = [](const float* p) {
    V16f v;
    std::memcpy(&v, p, sizeof v);
    return v;
  };
  auto store = [](float* p, V16f v) { std::memcpy(p, &v, sizeof v); };
  for (int64_t i0 = 0; i0 < M; i0 += 4) {
    const TileSpan t = Span<a_transposed>(i0, N, K, A, lda, r);
    const int64_t k0 = t.k0, k1 = t.k1, n1 = t.n1, a_step = t.a_step;
    const float *a0 = t.a[0], *a1 = t.a[1], *a2 = t.a[2], *a3 = t.a[3];
    for (int64_t n0 = 0; n0 < n1; n0 += kPad) {
      V16f c0 = {}, c1 = {}, c2 = {}, c3 = {};
      for (int64_t k = k0; k < k1; ++k) {
        const V16f b = load(B + k * ldb + n0);
        const int64_t ka = k * a_step;
        c0 += a0[ka] * b;
        c1 += a1[ka] * b;
        c2 += a2[ka] * b;
        c3 += a3[ka] * b;
      }
      float* c = C + i0 * ldc + n0;
      store(c, c0), c += ldc;
      store(c, c1), c += ldc;
      store(c, c2), c += ldc;
      store(c, c3);
    }
  }
}

template <bool wide>
__attribute__((always_inline)) inline void Gemm(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                                                const float* B, int64_t ldb, float* C, int64_t ldc, Ranges r) {
  if constexpr (wide) GemmTile16<false>(M, N, K, A, lda, B, ldb, C, ldc, r);
  else GemmTile<false>(M, N, K, A, lda, B, ldb, C, ldc, r);
}
// C = A^T B with A stored [K, M].
template <bool wide>
__attribute__((always_inline)) inline void GemmAt(int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
                                                  const float* B, int64_t ldb, float* C, int64_t ldc, Ranges r) {
  if constexpr (wide) GemmTile16<true>(M, N, K, A, lda, B, ldb, C, ldc, r);
  else GemmTile<true>(M, N, K, A, lda, B, ldb, C, ldc, r);
}

// Row i of the scores: scale, softmax over its n visible keys, zeros after them.
__attribute__((always_inline)) inline void SoftmaxRow(float* row, int64_t n, int64_t Sp, float scale) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    row[j] *= scale;
    m = row[j] > m ? row[j] : m;
  }
  simd::Scale(row, n, 1.0f / simd::ExpShiftSum(row, n, m));
  std::fill(row + n, row + Sp, 0.0f);
}

// One item: p = softmax(q k^T * scale) [Sp, Sp], o = p v [Sp, Dp].
template <bool wide>
__attribute__((always_inline)) inline void ForwardItemImpl(const float* q, const float* kt, const float* v, int64_t S,
                                                           int64_t Sp, int64_t Dp, bool causal, float scale,
                                                           float* p, float* o) {
  Gemm<wide>(Sp, Sp, Dp, q, Dp, kt, Sp, p, Sp, {false, false, causal});
  for (int64_t i = 0; i < Sp; ++i) {
    if (i < S) {
      SoftmaxRow(p + i * Sp, causal ? i + 1 : S, Sp, scale);
    } else {
      std::memset(p + i * Sp, 0, sizeof(float) * Sp);
    }
  }
  Gemm<wide>(Sp, Dp, Sp, p, Sp, v, Dp, o, Dp, {false, causal, false});
}

// One item's gradients from p and dO: dS = p * (dO v^T - rowsum(p * dO v^T)) * scale, then
// dq = dS k, dk = dS^T q, dv = p^T dO. ds is [Sp, Sp] scratch.
template <bool wide>
__attribute__((always_inline)) inline void BackwardItemImpl(const float* p, const float* dout, const float* vt,
                                                            const float* q, const float* k, int64_t S, int64_t Sp,
                                                            int64_t Dp, bool causal, float scale, float* ds,
                                                            float* dq, float* dk, float* dv) {
  Gemm<wide>(Sp, Sp, Dp, dout, Dp, vt, Sp, ds, Sp, {false, false, causal});  // dP = dO v^T
  for (int64_t i = 0; i < Sp; ++i) {
    float* row = ds + i * Sp;
    const float* prow = p + i * Sp;
    const int64_t n = i < S ? (causal ? i + 1 : S) : 0;
    float delta = 0.0f;
    for (int64_t j = 0; j < n; ++j) delta += prow[j] * row[j];
    for (int64_t j = 0; j < n; ++j) row[j] = prow[j] * (row[j] - delta) * scale;
    for (int64_t j = n; j < Sp; ++j) row[j] = 0.0f;
  }
  Gemm<wide>(Sp, Dp, Sp, ds, Sp, k, Dp, dq, Dp, {false, causal, false});
  GemmAt<wide>(Sp, Dp, Sp, p, Sp, dout, Dp, dv, Dp, {causal, false, false});
  GemmAt<wide>(Sp, Dp, Sp, ds, Sp, q, Dp, dk, Dp, {causal, false, false});
}

// The same kernels built for AVX-512 (16-lane tiles), for AVX2 with FMA and for the baseline ISA,
// chosen at run time. They differ in the last bit (on the AVX-512 machine its forward matched the
// AVX2 build's bits, its backward did not); one machine always runs the same one.
#define TRM_ATTENTION_TARGET "avx512f,avx512vl,avx512dq,avx512bw,avx2,fma"
__attribute__((target(TRM_ATTENTION_TARGET))) void ForwardItemAvx512(const float* q, const float* kt, const float* v,
                                                                     int64_t S, int64_t Sp, int64_t Dp, bool causal,
                                                                     float scale, float* p, float* o) {
  ForwardItemImpl<true>(q, kt, v, S, Sp, Dp, causal, scale, p, o);
}
__attribute__((target("avx2,fma"))) void ForwardItemAvx2(const float* q, const float* kt, const float* v, int64_t S,
                                                         int64_t Sp, int64_t Dp, bool causal, float scale, float* p,
                                                         float* o) {
  ForwardItemImpl<false>(q, kt, v, S, Sp, Dp, causal, scale, p, o);
}
void ForwardItemBase(const float* q, const float* kt, const float* v, int64_t S, int64_t Sp, int64_t Dp, bool causal,
                     float scale, float* p, float* o) {
  ForwardItemImpl<false>(q, kt, v, S, Sp, Dp, causal, scale, p, o);
}
__attribute__((target(TRM_ATTENTION_TARGET))) void BackwardItemAvx512(const float* p, const float* dout,
                                                                      const float* vt, const float* q, const float* k,
                                                                      int64_t S, int64_t Sp, int64_t Dp, bool causal,
                                                                      float scale, float* ds, float* dq, float* dk,
                                                                      float* dv) {
  BackwardItemImpl<true>(p, dout, vt, q, k, S, Sp, Dp, causal, scale, ds, dq, dk, dv);
}
__attribute__((target("avx2,fma"))) void BackwardItemAvx2(const float* p, const float* dout, const float* vt,
                                                          const float* q, const float* k, int64_t S, int64_t Sp,
                                                          int64_t Dp, bool causal, float scale, float* ds, float* dq,
                                                          float* dk, float* dv) {
  BackwardItemImpl<false>(p, dout, vt, q, k, S, Sp, Dp, causal, scale, ds, dq, dk, dv);
}
void BackwardItemBase(const float* p, const float* dout, const float* vt, const float* q, const float* k, int64_t S,
                      int64_t Sp, int64_t Dp, bool causal, float scale, float* ds, float* dq, float* dk,
                      float* dv) {
  BackwardItemImpl<false>(p, dout, vt, q, k, S, Sp, Dp, causal, scale, ds, dq, dk, dv);
}
#undef TRM_ATTENTION_TARGET

struct Dims {
  int64_t B, S, H, D, Sp, Dp;
  float scale;
  explicit Dims(const at::Tensor& qkv)
      : B(qkv.size(0)), S(qkv.size(1)), H(qkv.size(3)), D(qkv.size(4)), Sp(RoundUp(S, kPad)),
        Dp(RoundUp(D, kPad)), scale(1.0f / std::sqrt(static_cast<float>(D))) {}
  Qkv View(const at::Tensor& qkv) const { return {qkv.data_ptr<float>(), S, H, D}; }
};

Rope Tables(const at::Tensor& cos, const at::Tensor& sin) {
  if (!cos.defined() || cos.numel() == 0) return {};
  return {cos.data_ptr<float>(), sin.data_ptr<float>()};
}

// o [B, S, H, D]; with p_out, the probabilities [B*H, Sp, Sp] for the backward.
at::Tensor Forward(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, bool causal,
                   at::Tensor* p_out) {
  // Named for profiles (and trm-bench's FLOP count, from the recorded qkv shape).
  RECORD_FUNCTION(kForwardName, std::vector<c10::IValue>({qkv}));
  const Dims d(qkv);
  const Qkv x = d.View(qkv);
  const Rope rope = Tables(cos, sin);
  at::Tensor o = torch::empty({d.B, d.S, d.H, d.D}, qkv.options());
  at::Tensor p = p_out ? torch::empty({d.B * d.H, d.Sp, d.Sp}, qkv.options()) : at::Tensor();
  float* op = o.data_ptr<float>();
  float* pp = p_out ? p.data_ptr<float>() : nullptr;
  auto item_fn = simd::HasAvx512() ? ForwardItemAvx512 : simd::HasAvx2Fma() ? ForwardItemAvx2 : ForwardItemBase;
  ParallelFor(0, d.B * d.H, 1, [&](int64_t begin, int64_t end) {
    const int64_t rows = d.Sp * d.Dp;
    std::vector<float> buf(4 * rows + (pp ? 0 : d.Sp * d.Sp));
    float* lq = buf.data();
    float* lkt = lq + rows;
    float* lv = lkt + rows;
    float* lo = lv + rows;
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / d.H, h = item % d.H;
      GatherRows(x, 0, b, h, rope, d.Sp, d.Dp, lq);
      GatherCols(x, 1, b, h, rope, d.Sp, d.Dp, lkt);
      GatherRows(x, 2, b, h, Rope{}, d.Sp, d.Dp, lv);
      float* pi = pp ? pp + item * d.Sp * d.Sp : lo + rows;
      item_fn(lq, lkt, lv, d.S, d.Sp, d.Dp, causal, d.scale, pi, lo);
      ScatterRows(lo, b, h, d.S, d.H, d.D, d.Dp, op);
    }
  });
  if (p_out) *p_out = p;
  return o;
}

class AttentionFn : public torch::autograd::Function<AttentionFn> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& qkv,
                                                const at::Tensor& cos, const at::Tensor& sin, bool causal) {
    at::Tensor p;
    at::Tensor o = Forward(qkv, cos, sin, causal, &p);
    ctx->save_for_backward({qkv});
    ctx->saved_data["p"] = p;
    ctx->saved_data["cos"] = cos;
    ctx->saved_data["sin"] = sin;
    ctx->saved_data["causal"] = causal;
    return {o};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const at::Tensor qkv = ctx->get_saved_variables()[0];
    const at::Tensor p = ctx->saved_data["p"].toTensor();
    const at::Tensor cos = ctx->saved_data["cos"].toTensor(), sin = ctx->saved_data["sin"].toTensor();
    const bool causal = ctx->saved_data["causal"].toBool();
    const at::Tensor go = grads[0].to(torch::kFloat32).contiguous();  // [B, S, H, D]
    RECORD_FUNCTION(kBackwardName, std::vector<c10::IValue>({qkv}));
    const Dims d(qkv);
    const Qkv x = d.View(qkv);
    const Rope rope = Tables(cos, sin);
    at::Tensor dqkv = torch::empty_like(qkv);
    const float* gp = go.data_ptr<float>();
    const float* pp = p.data_ptr<float>();
    float* dp = dqkv.data_ptr<float>();
    auto item_fn = simd::HasAvx512() ? BackwardItemAvx512 : simd::HasAvx2Fma() ? BackwardItemAvx2 : BackwardItemBase;
    ParallelFor(0, d.B * d.H, 1, [&](int64_t begin, int64_t end) {
      const int64_t rows = d.Sp * d.Dp, sq = d.Sp * d.Sp;
      std::vector<float> buf(7 * rows + sq);
      float* ldo = buf.data();
      float* lvt = ldo + rows;
      float* lq = lvt + rows;
      float* lk = lq + rows;
      float* ldq = lk + rows;
      float* ldk = ldq + rows;
      float* ldv = ldk + rows;
      float* lds = ldv + rows;
      for (int64_t item = begin; item < end; ++item) {
        const int64_t b = item / d.H, h = item % d.H;
        std::memset(ldo, 0, sizeof(float) * rows);
        for (int64_t s = 0; s < d.S; ++s) std::memcpy(ldo + s * d.Dp, gp + ((b * d.S + s) * d.H + h) * d.D, sizeof(float) * d.D);
        GatherCols(x, 2, b, h, Rope{}, d.Sp, d.Dp, lvt);
        GatherRows(x, 0, b, h, rope, d.Sp, d.Dp, lq);
        GatherRows(x, 1, b, h, rope, d.Sp, d.Dp, lk);
        item_fn(pp + item * sq, ldo, lvt, lq, lk, d.S, d.Sp, d.Dp, causal, d.scale, lds, ldq, ldk, ldv);
        ScatterQkv(ldq, 0, b, h, rope, d.S, d.H, d.D, d.Dp, dp);
        ScatterQkv(ldk, 1, b, h, rope, d.S, d.H, d.D, d.Dp, dp);
        ScatterQkv(ldv, 2, b, h, Rope{}, d.S, d.H, d.D, d.Dp, dp);
      }
    });
    return {dqkv, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

}  // namespace

bool CpuAttentionApplies(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin) {
  auto table_ok = [&](const at::Tensor& t) {
    return t.defined() && t.device().is_cpu() && t.scalar_type() == torch::kFloat32 && !t.requires_grad() &&
           t.dim() == 2 && qkv.dim() == 5 && t.size(0) >= qkv.size(1) && t.size(1) == qkv.size(4);
  };
  const bool tables_ok = cos.defined() == sin.defined() && (!cos.defined() || (table_ok(cos) && table_ok(sin)));
  return qkv.device().is_cpu() && qkv.scalar_type() == torch::kFloat32 && qkv.dim() == 5 && qkv.size(2) == 3 &&
         qkv.is_contiguous() && qkv.numel() > 0 && qkv.size(4) <= kMaxHeadDim && qkv.size(4) % 2 == 0 && tables_ok;
}

at::Tensor CpuAttention(const at::Tensor& qkv, const at::Tensor& cos, const at::Tensor& sin, bool causal) {
  // No tables travel as empty tensors: autograd's apply takes no undefined inputs.
  const at::Tensor none = at::empty({0}, qkv.options());
  const int64_t S = qkv.size(1);
  const at::Tensor c = cos.defined() ? cos.narrow(0, 0, S).contiguous() : none;
  const at::Tensor s = sin.defined() ? sin.narrow(0, 0, S).contiguous() : none;
  if (torch::GradMode::is_enabled() && qkv.requires_grad()) return AttentionFn::apply(qkv, c, s, causal)[0];
  return Forward(qkv, c, s, causal, nullptr);
}

}  // namespace trm::model
