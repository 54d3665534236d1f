// trm-bench train: the same work as `shared/reference/trm_ref.py bench PRESET` (same sizes,
// float32, random tokens, one ACT call + backward + AdamW per step, 2 threads by default), so
// the two print comparable JSON lines.
#include <sys/resource.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "bench.h"
#include "presets.h"
#include "trm/common/error.h"
#include "trm/model/trm.h"
#include "trm/worker/flat_params.h"
#include "trm/worker/optimizer.h"

namespace trm::bench {

double PeakRssMb() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

int RunTrain(const std::vector<std::string>& args) {
  CheckFlags(args, {"preset", "steps", "threads"});
  const std::string preset = FlagValue(args, "preset", "tiny");
  const int steps = std::stoi(FlagValue(args, "steps", "5"));
  const int threads = std::stoi(FlagValue(args, "threads", "2"));
  if (steps < 1) InvalidArgument("--steps: must be at least 1");
  torch::set_num_threads(threads);
  torch::manual_seed(0);
  model::ArchConfig cfg = PresetConfig(preset);
  model::Trm m(cfg);
  std::vector<std::pair<std::string, at::Tensor>> params;
  for (auto& [n, t] : m->StateDict())
    if (t.requires_grad()) params.emplace_back(n, t);
  worker::FlatParams flat(params);
  worker::OptimizerOptions oo;  // AdamW, betas 0.9/0.95, weight decay 0.1, as the reference
  worker::Optimizer opt(&flat, oo);
  m->train();
  const int64_t B = cfg.batch_size, S = cfg.seq_len;
  model::Carry carry;
  std::vector<double> times;
  for (int i = 0; i < steps + 2; ++i) {
    at::Tensor x = torch::randint(0, cfg.vocab_size, {B, S + 1}, torch::kInt32);
    model::Batch b{x.narrow(1, 0, S).contiguous(), x.narrow(1, 1, S).contiguous(), at::Tensor()};
    if (i == 0) carry = m->InitialCarry(b);
    auto t0 = std::chrono::steady_clock::now();
    model::StepOutput out = m->forward(carry, b);
    out.loss.backward();
    opt.Step(1e-4);
    flat.ZeroGrad();
    carry = out.carry;
    if (i >= 2) times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(times.begin(), times.end());
  const double med = times[times.size() / 2];
  nlohmann::json j = {{"impl", "trm-cpp"},
                      {"preset", preset},
                      {"params", flat.numel()},
                      {"step_s_median", std::round(med * 1e4) / 1e4},
                      {"tokens_per_s", std::round(static_cast<double>(B * S) / med * 10) / 10},
                      {"threads", threads},
                      {"torch", TORCH_VERSION},
                      {"peak_rss_mb", std::round(PeakRssMb() * 10) / 10}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace trm::bench
