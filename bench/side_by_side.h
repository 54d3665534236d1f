// Helpers of the side-by-side benchmarks (ours against the PyTorch reference in one run): the
// reference's JSON line from a subprocess, medians, and what the CPU can do (its ISA and the
// matrix-product peak in each dtype), so a ratio is reported with the ceiling both sides share.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace trm::bench {

double Median(std::vector<double> v);

// Runs `command` (a shell command line), returns the JSON of its last stdout line; throws
// trm::Error (Internal) naming the command when it fails or prints no JSON.
nlohmann::json RunReference(const std::string& command);

struct CpuCaps {
  std::string model;             // /proc/cpuinfo "model name"
  bool avx2 = false, avx512f = false, avx512_bf16 = false, amx_bf16 = false;
  // Hardware bfloat16 dot products (AVX512_BF16 or AMX): oneDNN then runs bf16 matmuls natively.
  bool native_bf16() const { return avx512_bf16 || amx_bf16; }
  std::string isa() const;       // "AMX", "AVX-512 + BF16", "AVX-512", "AVX2" or "baseline"
};
CpuCaps ReadCpuCaps();

// GFLOP/s of an n x n x n matrix product in `dtype` ("float32" | "bfloat16") on the current
// thread settings: the best of a few timed products after a warm-up.
double MatmulGflops(const std::string& dtype, int64_t n = 1024);

}  // namespace trm::bench
