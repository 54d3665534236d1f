// trm-bench train: the same work as `shared/reference/trm_ref.py bench PRESET` (same sizes,
// random tokens, one ACT call + backward + AdamW per step, 2 threads by default), so the two print
// comparable JSON lines. --vs-reference runs the reference itself (bench/ref_bench.py, at its best:
// on the same BLAS build and OpenMP wait policy as ours (trm/common/process_env.h), the same
// threads, and for bfloat16 its forward under torch.autocast) alternating with ours in this one
// run, and reports both, the
// ratio, the CPU's ISA, its measured matmul peaks and the fraction of the peak each side reaches.
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
#include "side_by_side.h"
#include "trm/common/cpu_features.h"
#include "trm/common/error.h"
#include "trm/common/process_env.h"
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

namespace {

struct TrainTimes {
  double step = 0, forward = 0, backward = 0, optimizer = 0;
  int64_t params = 0;
  double flops = 0;  // matrix-product FLOPs of one step (forward + backward), from the profiler
};

// 2*M*N*K of every leaf matrix product (mm, addmm, bmm, baddbmm) of the profiled region.
double MatmulFlops(const torch::autograd::profiler::thread_event_lists& lists) {
  double flops = 0;
  for (const auto& list : lists) {
    for (const auto& e : list) {
      if (e.kind() != torch::autograd::profiler::EventKind::PushRange) continue;
      const std::string name = e.name();
      const auto shapes = e.shapes();
      const bool batched = name == "aten::bmm" || name == "aten::baddbmm";
      const bool plain = name == "aten::mm" || name == "aten::addmm" || name == "aten::addmm_" ||
                         name == "trm::cpu_gemm";  // model/src/gemm_cpu.h
      const bool attention = name == "trm::cpu_attention" || name == "trm::cpu_attention_backward";
      if (attention && shapes.size() == 1 && shapes[0].size() == 5) {
        // The fused CPU attention (model/src/attention_cpu.h) over qkv [B, S, 3, H, D]: counted
        // as the reference's dense products, two forward (q k^T, p v) and four backward.
        const auto& s = shapes[0];
        const double products = name == "trm::cpu_attention" ? 2 : 4;
        flops += products * 2.0 * s[0] * s[3] * s[1] * s[1] * s[4];
        continue;
      }
      if (!batched && !plain) continue;
      // addmm / addmm_ / baddbmm: (bias, a, b); mm / bmm: (a, b).
      const size_t ia = name == "aten::addmm" || name == "aten::addmm_" || name == "aten::baddbmm" ? 1 : 0;
      if (shapes.size() < ia + 2) continue;
      const auto& a = shapes[ia];
      const auto& b = shapes[ia + 1];
      if (plain && a.size() == 2 && b.size() == 2) flops += 2.0 * a[0] * a[1] * b[1];
      if (batched && a.size() == 3 && b.size() == 3) flops += 2.0 * a[0] * a[1] * a[2] * b[2];
    }
  }
  return flops;
}

TrainTimes MeasureTrain(const std::string& preset, int steps, const torch::Device& device, const std::string& dtype,
                        bool count_flops) {
  // GPU work is queued: each timestamp waits for what was queued before it.
  auto sync = [&] {
    if (device.is_cuda()) torch::cuda::synchronize();
  };
  torch::manual_seed(0);
  model::ArchConfig cfg = PresetConfig(preset);
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
  TrainTimes r;
  r.params = flat.numel();
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
    if (i == 2 && count_flops) {
      // One more step with input shapes recorded, not timed: its matrix products' FLOPs.
      torch::autograd::profiler::enableProfilerLegacy(torch::profiler::impl::ProfilerConfig(
          torch::profiler::impl::ProfilerState::CPU, /*report_input_shapes=*/true));
      model::StepOutput o2 = m->forward(carry, b);
      o2.loss.backward();
      r.flops = MatmulFlops(torch::autograd::profiler::disableProfilerLegacy());
      flat.ZeroGrad();
    }
    if (i >= 2) {
      times.push_back(std::chrono::duration<double>(t3 - t0).count());
      fwd.push_back(std::chrono::duration<double>(t1 - t0).count());
      bwd.push_back(std::chrono::duration<double>(t2 - t1).count());
      upd.push_back(std::chrono::duration<double>(t3 - t2).count());
    }
  }
  r.step = Median(times), r.forward = Median(fwd), r.backward = Median(bwd), r.optimizer = Median(upd);
  return r;
}

double Round(double v, double scale) { return std::round(v * scale) / scale; }

// The side-by-side run: ours and the reference alternating `repeats` times.
int RunVsReference(const std::string& preset, int steps, int threads, const std::string& dtype, int repeats,
                   const std::string& reference) {
  const CpuFeatures& cpu = HostCpu();
  nlohmann::json j = {{"preset", preset},   {"forward_dtype", dtype}, {"threads", threads},
                      {"steps", steps},     {"repeats", repeats},     {"cpu", cpu.model},
                      {"isa", cpu.isa()},   {"native_bf16", cpu.native_bf16()}};
  const BlasRuntime blas = LoadedBlas();
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  // Both sides run on the same BLAS build and OpenMP wait policy (process_env.h says which).
  const std::string env = SameBlasPrefix() + "OMP_WAIT_POLICY=" + (policy ? policy : "(unset: libgomp's default)");
  j["blas"] = {{"library", blas.library}, {"threading", blas.threading}};
  j["environment"] = env;
  const double peak32 = MatmulGflops("float32"), peak16 = MatmulGflops("bfloat16");
  j["matmul_gflops"] = {{"float32", Round(peak32, 10)}, {"bfloat16", Round(peak16, 10)}};
  if (dtype == "bfloat16" && !cpu.native_bf16()) {
    j["skipped"] = "this CPU has no native bfloat16 (AVX512_BF16 or AMX): bfloat16 is emulated on it";
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  const std::string cmd = SameBlasPrefix() + "/usr/bin/python3 '" + std::string(TRM_BENCH_SOURCE_DIR) +
                          "/bench/ref_bench.py' " + preset + " --device cpu --threads " + std::to_string(threads) +
                          " --steps " + std::to_string(steps) + " --reference '" + reference + "'" +
                          (dtype == "bfloat16" ? " --autocast-bf16" : "");
  std::vector<double> ours, theirs, ours_f, ours_b, ours_o, ref_f, ref_b, ref_o;
  double flops = 0;
  int64_t params = 0;
  for (int i = 0; i < repeats; ++i) {
    // Alternate which side goes first, so a drift of the machine's speed hits both alike.
    for (int side = 0; side < 2; ++side) {
      if ((side == 0) == (i % 2 == 0)) {
        const TrainTimes t = MeasureTrain(preset, steps, torch::Device(torch::kCPU), dtype, i == 0);
        if (i == 0) flops = t.flops, params = t.params;
        ours.push_back(t.step), ours_f.push_back(t.forward), ours_b.push_back(t.backward), ours_o.push_back(t.optimizer);
      } else {
        const nlohmann::json r = RunReference(cmd);
        theirs.push_back(r.at("step_s_median").get<double>());
        ref_f.push_back(r.at("forward_s_median").get<double>());
        ref_b.push_back(r.at("backward_s_median").get<double>());
        ref_o.push_back(r.at("optimizer_s_median").get<double>());
      }
    }
  }
  // The machine's speed drifts (shared hosts, clocks): the ratio of each adjacent pair, then the
  // median, is steadier than a ratio of medians. The peak is the better of before and after.
  std::vector<double> ratios;
  for (size_t i = 0; i < ours.size() && i < theirs.size(); ++i) ratios.push_back(theirs[i] / ours[i]);
  const double after32 = MatmulGflops("float32"), after16 = MatmulGflops("bfloat16");
  const double best32 = std::max(peak32, after32), best16 = std::max(peak16, after16);
  j["matmul_gflops"] = {{"float32", Round(best32, 10)}, {"bfloat16", Round(best16, 10)}};
  const double a = Median(ours), b = Median(theirs), peak = dtype == "bfloat16" ? best16 : best32;
  j["params"] = params;
  j["matmul_gflop_per_step"] = Round(flops / 1e9, 100);
  j["trm"] = {{"step_s", Round(a, 1e4)}, {"forward_s", Round(Median(ours_f), 1e4)},
              {"backward_s", Round(Median(ours_b), 1e4)}, {"optimizer_s", Round(Median(ours_o), 1e4)},
              {"fraction_of_matmul_peak", Round(flops / a / 1e9 / peak, 1000)}, {"step_s_all", ours}};
  j["reference"] = {{"step_s", Round(b, 1e4)}, {"forward_s", Round(Median(ref_f), 1e4)},
                    {"backward_s", Round(Median(ref_b), 1e4)}, {"optimizer_s", Round(Median(ref_o), 1e4)},
                    {"fraction_of_matmul_peak", Round(flops / b / 1e9 / peak, 1000)}, {"step_s_all", theirs},
                    {"anchor", (dtype == "bfloat16" ? "autocast bfloat16, " : "float32, ") + env}};
  j["speedup"] = Round(Median(ratios), 100);  // median of the paired ratios
  j["speedup_of_medians"] = Round(b / a, 100);
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace

int RunTrain(const std::vector<std::string>& args) {
  CheckFlags(args, {"preset", "steps", "threads", "device", "forward-dtype", "vs-reference", "repeats", "reference"});
  const std::string preset = FlagValue(args, "preset", "tiny");
  const int steps = std::stoi(FlagValue(args, "steps", "5"));
  const int threads = std::stoi(FlagValue(args, "threads", "2"));
  const std::string device_name = FlagValue(args, "device", "cpu");
  const std::string dtype = FlagValue(args, "forward-dtype", "float32");
  const bool vs_reference = std::find(args.begin(), args.end(), "--vs-reference") != args.end();
  const int repeats = std::stoi(FlagValue(args, "repeats", "3"));
  const std::string reference = FlagValue(args, "reference", std::string(TRM_BENCH_SHARED_DIR) + "/reference");
  if (steps < 1 || repeats < 1) InvalidArgument("--steps, --repeats: must be at least 1");
  if (device_name != "cpu" && device_name != "cuda") InvalidArgument("--device: expected cpu or cuda, got '" + device_name + "'");
  if (device_name == "cuda" && !torch::cuda::is_available()) InvalidArgument("--device cuda: no CUDA device is available");
  if (dtype != "float32" && dtype != "bfloat16") InvalidArgument("--forward-dtype: expected float32 or bfloat16, got '" + dtype + "'");
  if (vs_reference && device_name != "cpu") InvalidArgument("--vs-reference: CPU only (on a GPU run bench/ref_bench.py --device cuda)");
  PresetConfig(preset);  // a bad preset fails before anything runs
  trm::worker::ApplyThreads(threads);  // every pool, OpenBLAS's included
  if (vs_reference) return RunVsReference(preset, steps, threads, dtype, repeats, reference);
  const torch::Device device(device_name == "cuda" ? torch::kCUDA : torch::kCPU);
  const TrainTimes t = MeasureTrain(preset, steps, device, dtype, /*count_flops=*/false);
  const model::ArchConfig cfg = PresetConfig(preset);
  nlohmann::json j = {{"impl", "trm-cpp"},
                      {"preset", preset},
                      {"params", t.params},
                      {"step_s_median", Round(t.step, 1e4)},
                      {"forward_s_median", Round(t.forward, 1e4)},
                      {"backward_s_median", Round(t.backward, 1e4)},
                      {"optimizer_s_median", Round(t.optimizer, 1e4)},
                      {"tokens_per_s", Round(static_cast<double>(cfg.batch_size * cfg.seq_len) / t.step, 10)},
                      {"threads", threads},
                      {"device", device.str()},
                      {"forward_dtype", dtype},
                      {"torch", TORCH_VERSION},
                      {"peak_rss_mb", Round(PeakRssMb(), 10)}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace trm::bench
