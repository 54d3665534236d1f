// Float32 matrix products of the CPU training path. On Debian's LibTorch, ATen's mm runs
// OpenBLAS, which for the model's small products (1024 x 384 x 128: 240-320 GFLOP/s on the 2-core
// AVX-512 machine) is 1.4-1.8x slower than oneDNN's sgemm (400-455 GFLOP/s, same shapes,
// `trm-bench gemm`) and zero-fills each output in a pass of its own first. oneDNN comes
// with LibTorch (libdnnl.so.2) and runs on the same libgomp threads. Without oneDNN (a LibTorch
// with its own OpenMP runtime, or no libdnnl-dev) these are ATen's mm. Private to model/.
//
// Not bitwise ATen's products (another summation order): evaluation, generation and the parity
// replay keep ATen's, as layers.h's fused kernels do.
#pragma once

#include <ATen/Tensor.h>

namespace trm::model {

// Whether CpuGemm runs oneDNN (false: this build found none, and it runs ATen's mm).
bool CpuGemmIsOneDnn();

// c = a @ b + beta * c for 2-D float32 CPU tensors: a [M, K] and b [K, N], each contiguous or the
// transpose of a contiguous matrix (as x.t() is); c [M, N] contiguous. Threads: ATen's.
void CpuGemm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, float beta = 0.0f);

// The profiler's name for it, recorded with a and b as inputs.
inline constexpr const char* kCpuGemmName = "trm::cpu_gemm";

}  // namespace trm::model
