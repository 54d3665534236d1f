// What the host CPU can do, from /proc/cpuinfo: the vector ISA and whether it multiplies
// bfloat16 natively (AVX512_BF16 or AMX), which decides whether CPU training runs a config's
// bfloat16 forward or falls back to float32. Thread-safe; read once.
#pragma once

#include <string>

namespace trm {

struct CpuFeatures {
  std::string model;  // "model name"
  bool avx2 = false, avx512f = false, avx512_bf16 = false, amx_bf16 = false;
  // Hardware bfloat16 dot products: oneDNN runs bf16 matrix products natively (faster than
  // float32); without them bfloat16 is emulated and slower.
  bool native_bf16() const { return avx512_bf16 || amx_bf16; }
  std::string isa() const;  // "AMX", "AVX-512 + BF16", "AVX-512", "AVX2" or "baseline"
};

// Parses cpuinfo text (the first processor's flags); for tests.
CpuFeatures ParseCpuInfo(const std::string& text);
// This machine's, read from /proc/cpuinfo on first use (empty features where it is missing).
const CpuFeatures& HostCpu();

}  // namespace trm
