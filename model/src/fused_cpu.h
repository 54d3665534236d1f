// Row kernels for training on the CPU in float32: a residual add with RMSNorm, and SwiGLU's
// activation, each one pass over its rows in place of ATen's four to six kernels. They round
// differently from the reference's op sequence (a vectorised sum of squares, a polynomial exp),
// so layers.cpp runs them in training mode only. Rows are split over ATen's threads; each has an
// AVX2 + FMA build chosen at run time. Private to model/.
#pragma once

#include <cstdint>

namespace trm::model {

// x = a + b, r = 1 / sqrt(mean(x^2) + eps) per row, y = x * r; [rows, n] contiguous.
void AddRmsNormRows(const float* a, const float* b, float* x, float* y, float* r, int64_t rows, int64_t n, float eps);

// y = silu(g) * u over gu = [g | u], [rows, 2I] -> [rows, I].
void SwiGluRows(const float* gu, float* y, int64_t rows, int64_t I);
// d(gu) from dy: dg = dy * u * s * (1 + g * (1 - s)), du = dy * g * s with s = sigmoid(g).
void SwiGluBackwardRows(const float* gu, const float* dy, float* dgu, int64_t rows, int64_t I);

// bfloat16 <-> float32 over n contiguous values (bfloat16 as its raw 16-bit patterns), split
// over the threads. Round to nearest even, NaN to 0xFFFF: bitwise ATen's (vectorised) conversions
// (Debian's LibTorch 1.13 converts at ~1-4 ns a value; these at memory speed).
void Bf16ToFloat(const uint16_t* in, float* out, int64_t n);
void FloatToBf16(const float* in, uint16_t* out, int64_t n);

}  // namespace trm::model
