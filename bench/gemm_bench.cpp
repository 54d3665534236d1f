// trm-bench gemm: the float32 products of the training path (model/src/gemm_cpu.h: oneDNN's
// sgemm) against ATen's mm (OpenBLAS on Debian's LibTorch) for the model's shapes, side by side:
// the two alternate on the same operands, best of --reps each. Prints GFLOP/s of both and the
// ratio per shape, and whether the build's CpuGemm is oneDNN's.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "bench.h"
#include "gemm_cpu.h"
#include "trm/common/process_env.h"
#include "trm/worker/thread_pools.h"

namespace trm::bench {

int RunGemm(const std::vector<std::string>& args) {
  CheckFlags(args, {"threads", "reps"});
  const int threads = std::stoi(FlagValue(args, "threads", "2"));
  const int reps = std::stoi(FlagValue(args, "reps", "50"));
  worker::ApplyThreads(threads);
  torch::NoGradGuard no_grad;
  struct Shape {
    const char* what;
    int64_t M, N, K;
    bool ta, tb;  // op(A) = A^T, op(B) = B^T
  };
  // tiny (1024 tokens, hidden 128, SwiGLU 512) and chat (hidden 384, the 50,266-token head in
  // 667-row float32 blocks): forward x W^T, backward dy W and dy^T x.
  const Shape shapes[] = {
      {"tiny qkv x W^T", 1024, 384, 128, false, true},    {"tiny gate_up x W^T", 1024, 1024, 128, false, true},
      {"tiny down x W^T", 1024, 128, 512, false, true},   {"tiny qkv dy W", 1024, 128, 384, false, false},
      {"tiny qkv dy^T x", 384, 128, 1024, true, false},   {"tiny gate_up dy^T x", 1024, 128, 1024, true, false},
      {"chat gate_up x W^T", 1024, 3072, 384, false, true}, {"chat down dy^T x", 384, 1536, 1024, true, false},
      {"chat head z W^T", 667, 50266, 384, false, true},  {"chat head g W", 667, 384, 50266, false, false},
      {"chat head g^T z", 50266, 384, 667, true, false},
  };
  nlohmann::json rows = nlohmann::json::array();
  for (const Shape& s : shapes) {
    const at::Tensor a = s.ta ? torch::randn({s.K, s.M}).t() : torch::randn({s.M, s.K});
    const at::Tensor b = s.tb ? torch::randn({s.N, s.K}).t() : torch::randn({s.K, s.N});
    at::Tensor c = torch::empty({s.M, s.N});
    using Clock = std::chrono::steady_clock;
    double aten = 1e30, ours = 1e30;
    for (int r = 0; r < reps + 2; ++r) {
      const auto t0 = Clock::now();
      at::mm_out(c, a, b);
      const auto t1 = Clock::now();
      model::CpuGemm(a, b, c);
      const auto t2 = Clock::now();
      if (r < 2) continue;  // warm-up: threads, oneDNN's kernel selection
      aten = std::min(aten, std::chrono::duration<double>(t1 - t0).count());
      ours = std::min(ours, std::chrono::duration<double>(t2 - t1).count());
    }
    const double gflop = 2.0 * s.M * s.N * s.K / 1e9;
    rows.push_back({{"shape", s.what},
                    {"mnk", {s.M, s.N, s.K}},
                    {"aten_gflops", std::round(gflop / aten * 10) / 10},
                    {"cpu_gemm_gflops", std::round(gflop / ours * 10) / 10},
                    {"speedup", std::round(aten / ours * 100) / 100}});
  }
  const BlasRuntime blas = LoadedBlas();
  nlohmann::json j = {{"benchmark", "gemm"},
                      {"threads", threads},
                      {"reps", reps},
                      {"cpu_gemm", model::CpuGemmIsOneDnn() ? "oneDNN sgemm" : "ATen mm"},
                      {"aten_blas", blas.library + " (" + blas.threading + ")"},
                      {"shapes", rows}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace trm::bench
