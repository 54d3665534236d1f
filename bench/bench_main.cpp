// trm-bench dispatcher. Benchmarks: bench.h.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench.h"
#include "trm/common/error.h"
#include "trm/common/process_env.h"

namespace trm::bench {
namespace {

struct Benchmark {
  const char* name;
  BenchFn run;
  const char* help;
};

constexpr Benchmark kBenchmarks[] = {
    {"tokenize", RunTokenize,
     "[--tokenizer gpt2|byte|PATH] [--input FILE.json|.jsonl] [--reps N]  encode MB/s, one thread"},
    {"train", RunTrain, "[--preset tiny|language|chat] [--steps N] [--threads T] [--device cpu|cuda] [--forward-dtype float32|bfloat16]  training step time, as trm_ref.py bench"},
    {"generate", RunGenerate,
     "[--preset tiny|language|chat] [--new-tokens N] [--prompt-tokens P] [--threads T]  tokens/s, cached vs recompute"},
    {"gemm", RunGemm, "[--threads T] [--reps R]  the training path's float32 products (oneDNN) vs ATen's mm, model shapes"},
    {"allreduce", RunAllreduce, "[--ranks N] [--reps R] [--max-mb M]  Gloo all-reduce time and bus bandwidth by size"},
    {"eval", RunEval,
     "--checkpoint DIR --data DATASET_DIR [--split test] [--batch-size N] [--threads T] [--repeats R]  rows/s vs the PyTorch reference"},
    {"dashboard", RunDashboard, "[--steps N] [--reps R]  the job page's data for a job of N logged steps, over HTTP"},
    {"retention", RunRetention,
     "[--steps N (1000000)] [--max-points P (10000)]  database bytes per 1,000 steps, step metrics kept / thinned"},
    {"control-plane", RunControlPlane,
     "[--jobs N] [--workers W] [--seconds S] [--mb M]  coordinator submit latency, heartbeat load, checkpoint MB/s"},
};

void Usage(std::FILE* out) {
  std::fprintf(out, "usage: trm-bench <benchmark> [options]   (prints one JSON line)\n");
  for (const auto& b : kBenchmarks) std::fprintf(out, "  %s %s\n", b.name, b.help);
}

}  // namespace

std::string FlagValue(const std::vector<std::string>& args, const std::string& name,
                      const std::string& fallback) {
  const std::string flag = "--" + name;
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i] == flag) {
      if (i + 1 >= args.size()) InvalidArgument(flag + ": expected a value");
      return args[i + 1];
    }
    if (args[i].rfind(flag + "=", 0) == 0) return args[i].substr(flag.size() + 1);
  }
  return fallback;
}

void CheckFlags(const std::vector<std::string>& args, const std::vector<std::string>& known) {
  for (size_t i = 0; i < args.size(); ++i) {
    if (args[i].rfind("--", 0) != 0) continue;
    const std::string name = args[i].substr(2, args[i].find('=') - 2);
    bool ok = false;
    for (const auto& k : known) ok = ok || k == name;
    if (!ok) InvalidArgument("unknown option '" + args[i] + "'");
  }
}

}  // namespace trm::bench

int main(int argc, char** argv) {
  trm::ConfigureComputeProcess(argc, argv);
  using trm::bench::kBenchmarks;
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    trm::bench::Usage(argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  try {
    for (const auto& b : kBenchmarks) {
      if (std::strcmp(argv[1], b.name) == 0) return b.run(std::vector<std::string>(argv + 2, argv + argc));
    }
    trm::InvalidArgument(std::string("unknown benchmark '") + argv[1] + "'");
  } catch (const trm::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    if (e.code() == trm::Code::kInvalidArgument) trm::bench::Usage(stderr);
    return e.code() == trm::Code::kInvalidArgument || e.code() == trm::Code::kNotFound ? 2 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
