#include "trm/common/cpu_features.h"

#include <gtest/gtest.h>

namespace trm {
namespace {

TEST(CpuFeatures, ReadsTheFirstProcessorsFlags) {
  const CpuFeatures amx = ParseCpuInfo(
      "processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8480+\n"
      "flags\t\t: fpu sse avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n\n"
      "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n");
  EXPECT_EQ(amx.model, "Intel(R) Xeon(R) Platinum 8480+");
  EXPECT_TRUE(amx.avx2 && amx.avx512f && amx.avx512_bf16 && amx.amx_bf16);
  EXPECT_TRUE(amx.native_bf16());
  EXPECT_EQ(amx.isa(), "AMX");

  const CpuFeatures zen4 = ParseCpuInfo("model name\t: AMD EPYC\nflags\t\t: avx2 avx512f avx512_bf16\n");
  EXPECT_TRUE(zen4.native_bf16());
  EXPECT_EQ(zen4.isa(), "AVX-512 + BF16");

  // avx512_bf16 must be a whole flag, not a prefix of another.
  const CpuFeatures avx512 = ParseCpuInfo("flags\t: avx2 avx512f avx512_bf16x avx512bw\n");
  EXPECT_FALSE(avx512.native_bf16());
  EXPECT_EQ(avx512.isa(), "AVX-512");
  EXPECT_EQ(ParseCpuInfo("flags\t: sse2 avx2\n").isa(), "AVX2");
  EXPECT_EQ(ParseCpuInfo("").isa(), "baseline");
}

}  // namespace
}  // namespace trm
