// trm-bench train: the same work as `shared/reference/trm_ref.py bench PRESET` (same sizes,
// float32, random tokens, one ACT call + backward + AdamW per step, 2 threads by default), so
// the two print comparable JSON lines.
#include <sys/resource.h>
#include <torch/csrc/autograd/profiler_legacy.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <cstdlib>

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
#include "trm/worker/thread_pools.h"

namespace trm::bench {

double PeakRssMb() {
  struct rusage ru {};
  getrusage(RUSAGE_SELF, &ru);
  return static_cast<double>(ru.ru_maxrss) / 1024.0;
}

int RunTrain(const std::vector<std::string>& args) {
  CheckFlags(args, {"preset", "steps", "threads", "device", "forward-dtype"});
  const std::string preset = FlagValue(args, "preset", "tiny");
  const int steps = std::stoi(FlagValue(args, "steps", "5"));
  const int threads = std::stoi(FlagValue(args, "threads", "2"));
  const std::string device_name = FlagValue(args, "device", "cpu");
  const std::string dtype = FlagValue(args, "forward-dtype", "float32");
  if (steps < 1) InvalidArgument("--steps: must be at least 1");
  if (device_name != "cpu" && device_name != "cuda") InvalidArgument("--device: expected cpu or cuda, got '" + device_name + "'");
  if (device_name == "cuda" && !torch::cuda::is_available()) InvalidArgument("--device cuda: no CUDA device is available");
  const torch::Device device(device_name == "cuda" ? torch::kCUDA : torch::kCPU);
  // GPU work is queued: each timestamp waits for what was queued before it.
  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  trm::worker::ApplyThreads(threads);  // every pool, OpenBLAS's included
  torch::manual_seed(0);
  model::ArchConfig cfg = PresetConfig(preset);
  if (dtype != "float32" && dtype != "bfloat16") InvalidArgument("--forward-dtype: expected float32 or bfloat16, got '" + dtype + "'");
  cfg.forward_dtype = dtype == "bfloat16" ? model::ForwardDtype::kBfloat16 : model::ForwardDtype::kFloat32;
  model::Trm m(cfg);
  m->SetFusedHead(true);  // as the trainer runs it
  m->to(device);
  std::vector<std::pair<std::string, at::Tensor>> params;
  for (auto& [n, t] : m->StateDict())
    if (t.requires_grad()) params.emplace_back(n, t);
  worker::FlatParams flat(params);
  worker::OptimizerOptions oo;  // AdamW, betas 0.9/0.95, weight decay 0.1, as the reference
  worker::Optimizer opt(&flat, oo);
  m->train();
  const int64_t B = cfg.batch_size, S = cfg.seq_len;
  model::Carry carry;
  std::vector<double> times, fwd, bwd, upd;
  const char* profile = std::getenv("TRM_BENCH_PROFILE");
  for (int i = 0; i < steps + 2; ++i) {
    at::Tensor x = torch::randint(0, cfg.vocab_size, {B, S + 1}, torch::TensorOptions(torch::kInt32).device(device));
    model::Batch b{x.narrow(1, 0, S).contiguous(), x.narrow(1, 1, S).contiguous(), at::Tensor()};
    if (i == 0) carry = m->InitialCarry(b);
    using Clock = std::chrono::steady_clock;
    sync();
    auto t0 = Clock::now();
    model::StepOutput out = m->forward(carry, b);
    sync();
    auto t1 = Clock::now();
    out.loss.backward();
    sync();
    auto t2 = Clock::now();
    opt.Step(1e-4);
    flat.ZeroGrad();
    carry = out.carry;
    sync();
    auto t3 = Clock::now();
    if (i == 2 && profile) {
      // One more step under the profiler (chrome trace in $TRM_BENCH_PROFILE), not timed.
      torch::autograd::profiler::RecordProfile guard(profile);
      model::StepOutput o2 = m->forward(carry, b);
      o2.loss.backward();
      opt.Step(1e-4);
      flat.ZeroGrad();
    }
    if (i >= 2) {
      times.push_back(std::chrono::duration<double>(t3 - t0).count());
      fwd.push_back(std::chrono::duration<double>(t1 - t0).count());
      bwd.push_back(std::chrono::duration<double>(t2 - t1).count());
      upd.push_back(std::chrono::duration<double>(t3 - t2).count());
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return std::round(v[v.size() / 2] * 1e4) / 1e4;
  };
  const double med = median(times);
  nlohmann::json j = {{"impl", "trm-cpp"},
                      {"preset", preset},
                      {"params", flat.numel()},
                      {"step_s_median", med},
                      {"forward_s_median", median(fwd)},
                      {"backward_s_median", median(bwd)},
                      {"optimizer_s_median", median(upd)},
                      {"tokens_per_s", std::round(static_cast<double>(B * S) / med * 10) / 10},
                      {"threads", threads},
                      {"device", device.str()},
                      {"forward_dtype", dtype},
                      {"torch", TORCH_VERSION},
                      {"peak_rss_mb", std::round(PeakRssMb() * 10) / 10}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace trm::bench
