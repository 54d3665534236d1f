#include "fused_cpu.h"

#include <algorithm>
#include <cmath>

#include "simd.h"
#include "trm/model/parallel_for.h"

namespace trm::model {
namespace {

using simd::FastExp;
using simd::kLanes;
using simd::Load;
using simd::Splat;
using simd::Store;
using simd::V8f;

__attribute__((always_inline)) inline V8f Sigmoid(V8f g) { return 1.0f / (1.0f + FastExp(-g)); }
__attribute__((always_inline)) inline float Sigmoid(float g) { return Sigmoid(Splat(g))[0]; }

__attribute__((always_inline)) inline void AddRmsNormImpl(const float* a, const float* b, float* x, float* y,
                                                          float* r, int64_t begin, int64_t end, int64_t n,
                                                          float eps) {
  for (int64_t row = begin; row < end; ++row) {
    const float* ar = a + row * n;
    const float* br = b + row * n;
    float* xr = x + row * n;
    float* yr = y + row * n;
    V8f acc = Splat(0.0f);
    int64_t j = 0;
    for (; j + kLanes <= n; j += kLanes) {
      const V8f v = Load(ar + j) + Load(br + j);
      Store(xr + j, v);
      acc += v * v;
    }
    float ss = 0.0f;
    for (int k = 0; k < kLanes; ++k) ss += acc[k];
    for (; j < n; ++j) {
      xr[j] = ar[j] + br[j];
      ss += xr[j] * xr[j];
    }
    const float rr = 1.0f / std::sqrt(ss / static_cast<float>(n) + eps);
    r[row] = rr;
    const V8f rv = Splat(rr);
    for (j = 0; j + kLanes <= n; j += kLanes) Store(yr + j, Load(xr + j) * rv);
    for (; j < n; ++j) yr[j] = xr[j] * rr;
  }
}

__attribute__((always_inline)) inline void SwiGluImpl(const float* gu, float* y, int64_t begin, int64_t end,
                                                      int64_t I) {
  for (int64_t row = begin; row < end; ++row) {
    const float* g = gu + row * 2 * I;
    const float* u = g + I;
    float* yr = y + row * I;
    int64_t j = 0;
    for (; j + kLanes <= I; j += kLanes) {
      const V8f gv = Load(g + j);
      Store(yr + j, gv * Sigmoid(gv) * Load(u + j));
    }
    for (; j < I; ++j) yr[j] = g[j] * Sigmoid(g[j]) * u[j];
  }
}

__attribute__((always_inline)) inline void SwiGluBackwardImpl(const float* gu, const float* dy, float* dgu,
                                                              int64_t begin, int64_t end, int64_t I) {
  for (int64_t row = begin; row < end; ++row) {
    const float* g = gu + row * 2 * I;
    const float* u = g + I;
    const float* d = dy + row * I;
    float* dg = dgu + row * 2 * I;
    float* du = dg + I;
    int64_t j = 0;
    for (; j + kLanes <= I; j += kLanes) {
      const V8f gv = Load(g + j), dv = Load(d + j), s = Sigmoid(gv);
      Store(dg + j, dv * Load(u + j) * (s * (1.0f + gv * (1.0f - s))));
      Store(du + j, dv * (gv * s));
    }
    for (; j < I; ++j) {
      const float s = Sigmoid(g[j]);
      dg[j] = d[j] * u[j] * (s * (1.0f + g[j] * (1.0f - s)));
      du[j] = d[j] * (g[j] * s);
    }
  }
}

__attribute__((always_inline)) inline void Bf16ToFloatImpl(const uint16_t* in, float* out, int64_t begin,
                                                           int64_t end) {
  int64_t j = begin;
  for (; j + kLanes <= end; j += kLanes) Store(out + j, simd::LoadBf16(in + j));
  for (; j < end; ++j) out[j] = simd::Bf16ToFloat(in[j]);
}

__attribute__((always_inline)) inline void FloatToBf16Impl(const float* in, uint16_t* out, int64_t begin,
                                                           int64_t end) {
  int64_t j = begin;
  for (; j + kLanes <= end; j += kLanes) simd::StoreBf16(out + j, Load(in + j));
  for (; j < end; ++j) out[j] = simd::FloatToBf16(in[j]);
}

// Each kernel built twice, for AVX2 + FMA and for the baseline ISA; one machine always runs the
// same build.
#define TRM_CPU_KERNEL(Name, Impl, Params, Args)                 \
  __attribute__((target("avx2,fma"))) void Name##Avx2 Params { \
    Impl Args;                                                   \
  }                                                              \
  void Name##Base Params { Impl Args; }                          \
  void Name Params {                                             \
    if (simd::HasAvx2Fma()) {                                    \
      Name##Avx2 Args;                                           \
    } else {                                                     \
      Name##Base Args;                                           \
    }                                                            \
  }

TRM_CPU_KERNEL(AddRmsNormChunk, AddRmsNormImpl,
               (const float* a, const float* b, float* x, float* y, float* r, int64_t begin, int64_t end, int64_t n,
                float eps),
               (a, b, x, y, r, begin, end, n, eps))
TRM_CPU_KERNEL(SwiGluChunk, SwiGluImpl, (const float* gu, float* y, int64_t begin, int64_t end, int64_t I),
               (gu, y, begin, end, I))
TRM_CPU_KERNEL(SwiGluBackwardChunk, SwiGluBackwardImpl,
               (const float* gu, const float* dy, float* dgu, int64_t begin, int64_t end, int64_t I),
               (gu, dy, dgu, begin, end, I))

TRM_CPU_KERNEL(Bf16ToFloatChunk, Bf16ToFloatImpl, (const uint16_t* in, float* out, int64_t begin, int64_t end),
               (in, out, begin, end))
TRM_CPU_KERNEL(FloatToBf16Chunk, FloatToBf16Impl, (const float* in, uint16_t* out, int64_t begin, int64_t end),
               (in, out, begin, end))

#undef TRM_CPU_KERNEL

// Rows per task: enough work to be worth waking a thread for.
int64_t Grain(int64_t row_elems) { return std::max<int64_t>(1, 16384 / std::max<int64_t>(row_elems, 1)); }

}  // namespace

void AddRmsNormRows(const float* a, const float* b, float* x, float* y, float* r, int64_t rows, int64_t n,
                    float eps) {
  ParallelFor(0, rows, Grain(n),
              [&](int64_t begin, int64_t end) { AddRmsNormChunk(a, b, x, y, r, begin, end, n, eps); });
}

void SwiGluRows(const float* gu, float* y, int64_t rows, int64_t I) {
  ParallelFor(0, rows, Grain(2 * I), [&](int64_t begin, int64_t end) { SwiGluChunk(gu, y, begin, end, I); });
}

void SwiGluBackwardRows(const float* gu, const float* dy, float* dgu, int64_t rows, int64_t I) {
  ParallelFor(0, rows, Grain(3 * I),
              [&](int64_t begin, int64_t end) { SwiGluBackwardChunk(gu, dy, dgu, begin, end, I); });
}

void Bf16ToFloat(const uint16_t* in, float* out, int64_t n) {
  ParallelFor(0, n, 1 << 16, [&](int64_t begin, int64_t end) { Bf16ToFloatChunk(in, out, begin, end); });
}

void FloatToBf16(const float* in, uint16_t* out, int64_t n) {
  ParallelFor(0, n, 1 << 16, [&](int64_t begin, int64_t end) { FloatToBf16Chunk(in, out, begin, end); });
}

}  // namespace trm::model
