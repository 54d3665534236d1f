// trm-bench generate: greedy decoding of N new tokens after a P-token prompt with the cached
// decoder and with full recomputation (the reference's way), on a preset model with random
// weights (speed does not depend on the weights). Reports tokens/s for both and whether the two
// produced the same tokens.
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "bench.h"
#include "presets.h"
#include "trm/common/error.h"
#include "trm/model/generate.h"
#include "trm/worker/thread_pools.h"

namespace trm::bench {

int RunGenerate(const std::vector<std::string>& args) {
  CheckFlags(args, {"preset", "new-tokens", "prompt-tokens", "threads"});
  const std::string preset = FlagValue(args, "preset", "chat");
  const int64_t n = std::stoll(FlagValue(args, "new-tokens", "256"));
  const int64_t p = std::stoll(FlagValue(args, "prompt-tokens", "32"));
  const int threads = std::stoi(FlagValue(args, "threads", "2"));
  if (n < 1 || p < 1) InvalidArgument("--new-tokens / --prompt-tokens: must be at least 1");
  trm::worker::ApplyThreads(threads);  // every pool, OpenBLAS's included
  torch::manual_seed(0);
  model::ArchConfig cfg = PresetConfig(preset);
  cfg.seq_len = p + n + 1;  // room for the whole generation
  model::Trm m(cfg);
  std::vector<int32_t> prompt(static_cast<size_t>(p));
  for (int64_t i = 0; i < p; ++i) prompt[static_cast<size_t>(i)] = static_cast<int32_t>((i * 7919) % cfg.vocab_size);
  model::GenerateOptions o;
  o.max_new_tokens = n;
  o.sampling.temperature = 0;
  nlohmann::json j = {{"impl", "trm-cpp"}, {"preset", preset}, {"prompt_tokens", p}, {"new_tokens", n},
                      {"threads", threads}};
  std::vector<int32_t> outputs[2];
  for (bool cached : {true, false}) {
    model::Decoder d(m, cached);
    auto t0 = std::chrono::steady_clock::now();
    outputs[cached ? 0 : 1] = model::Generate(d, prompt, o);
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    j[cached ? "cached_tokens_per_s" : "recompute_tokens_per_s"] =
        std::round(static_cast<double>(outputs[cached ? 0 : 1].size()) / s * 10) / 10;
  }
  j["speedup"] = std::round(j["cached_tokens_per_s"].get<double>() / j["recompute_tokens_per_s"].get<double>() * 100) / 100;
  j["identical_greedy_output"] = outputs[0] == outputs[1];
  j["peak_rss_mb"] = std::round(PeakRssMb() * 10) / 10;
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace trm::bench
