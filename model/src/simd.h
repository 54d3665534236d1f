// 8-lane float vectors (GCC vector extensions: one AVX2 instruction, or two SSE2 ones where a
// function is not built for AVX2) and the exp the model's CPU kernels share. Private to model/.
// Every helper is always inlined and has internal linkage: it is compiled into its caller with
// the caller's target (baseline or AVX2 + FMA) and FP-contraction settings, so no 32-byte vector
// crosses a call between differently built functions (what -Wno-psabi relies on) and no two
// files' differently rounded copies can be merged by the linker.
#pragma once

#include <cstdint>
#include <cstring>

namespace trm::model::simd {

typedef float V8f __attribute__((vector_size(32)));
typedef int32_t V8i __attribute__((vector_size(32)));
constexpr int kLanes = 8;

typedef uint32_t V8u __attribute__((vector_size(32)));
typedef uint16_t V8h __attribute__((vector_size(16)));

// Whether this CPU runs the kernels' AVX2 + FMA builds.
static inline bool HasAvx2Fma() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  }();
  return has;
}

// Whether this CPU runs the AVX-512 builds (F, VL, DQ, BW: every AVX-512 CPU since Skylake-SP).
static inline bool HasAvx512() {
  static const bool has = [] {
    __builtin_cpu_init();
    return HasAvx2Fma() && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw");
  }();
  return has;
}

__attribute__((always_inline)) static inline V8f Splat(float v) { return V8f{v, v, v, v, v, v, v, v}; }

__attribute__((always_inline)) static inline V8f Load(const float* p) {
  V8f v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
__attribute__((always_inline)) static inline void Store(float* p, V8f v) { std::memcpy(p, &v, sizeof v); }

// bfloat16 (raw 16-bit patterns: the upper half of a float32) to float32, exactly.
__attribute__((always_inline)) static inline V8f LoadBf16(const uint16_t* p) {
  V8h h;
  std::memcpy(&h, p, sizeof h);
  const V8u w = __builtin_convertvector(h, V8u) << 16;
  V8f f;
  std::memcpy(&f, &w, sizeof f);
  return f;
}
__attribute__((always_inline)) static inline float Bf16ToFloat(uint16_t h) {
  const uint32_t w = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &w, sizeof f);
  return f;
}

// float32 to bfloat16 rounded to nearest even, NaN to 0xFFFF (a NaN): what ATen's vectorised
// conversion stores, so a value stored here equals the same value converted by ATen.
__attribute__((always_inline)) static inline void StoreBf16(uint16_t* p, V8f v) {
  V8u b;
  std::memcpy(&b, &v, sizeof b);
  V8u r = (b + ((b >> 16) & 1u) + 0x7FFFu) >> 16;
  r = (v != v) ? V8u{0xFFFFu, 0xFFFFu, 0xFFFFu, 0xFFFFu, 0xFFFFu, 0xFFFFu, 0xFFFFu, 0xFFFFu} : r;
  const V8h h = __builtin_convertvector(r, V8h);
  std::memcpy(p, &h, sizeof h);
}
__attribute__((always_inline)) static inline uint16_t FloatToBf16(float f) {
  if (f != f) return 0xFFFFu;
  uint32_t b;
  std::memcpy(&b, &f, sizeof b);
  return static_cast<uint16_t>((b + ((b >> 16) & 1u) + 0x7FFFu) >> 16);
}

// exp(x) in plain float arithmetic (Cephes' polynomial, ~1 ulp): ATen's exp on Debian's build
// runs at ~1-2 ns an element, which dominated the loss and the attention softmax.
__attribute__((always_inline)) static inline V8f FastExp(V8f x) {
  x = x < Splat(-87.3f) ? Splat(-87.3f) : x;
  x = x > Splat(88.3f) ? Splat(88.3f) : x;
  const V8f t = x * 1.44269504088896341f + 0.5f;
  V8i i = __builtin_convertvector(t, V8i);
  i += (t < __builtin_convertvector(i, V8f));  // floor: comparisons give -1 where true
  const V8f n = __builtin_convertvector(i, V8f);
  const V8f r = x - n * 0.693359375f + n * 2.12194440e-4f;
  V8f p = r * 1.9875691500e-4f + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const V8i bits = (i + 127) << 23;
  V8f scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

// x <- exp(x - m) over n floats; returns their sum (eight lane sums, then the tail, in order).
__attribute__((always_inline)) static inline float ExpShiftSum(float* x, int64_t n, float m) {
  const V8f mv = Splat(m);
  V8f s8 = Splat(0.0f);
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) {
    const V8f e = FastExp(Load(x + j) - mv);
    Store(x + j, e);
    s8 += e;
  }
  float sum = 0.0f;
  for (int k = 0; k < kLanes; ++k) sum += s8[k];
  for (; j < n; ++j) {
    x[j] = FastExp(Splat(x[j] - m))[0];
    sum += x[j];
  }
  return sum;
}

// x <- x * s over n floats.
__attribute__((always_inline)) static inline void Scale(float* x, int64_t n, float s) {
  const V8f sv = Splat(s);
  int64_t j = 0;
  for (; j + kLanes <= n; j += kLanes) Store(x + j, Load(x + j) * sv);
  for (; j < n; ++j) x[j] *= s;
}

}  // namespace trm::model::simd
