// The CUDA paths: NCCL collectives, training on the GPU against the CPU, data parallel with the
// gradient hooks firing on CUDA's autograd thread, resume on the GPU. Each test skips without a
// CUDA device (CI, Debian's CPU LibTorch); scripts/gpu/build_and_test.sh runs them on the GPU
// machine.
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>

#include "rank_threads.h"
#include "test_dataset.h"
#include "training_process.h"
#include "trm/common/error.h"
#include "trm/common/net.h"
#include "trm/worker/collective.h"
#include "trm/worker/trainer.h"

namespace trm::worker {
namespace {

namespace fs = std::filesystem;

#define SKIP_WITHOUT_CUDA() \
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device"

class GpuTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("trm_gpu_" + std::to_string(::getpid()));
    fs::create_directories(root_);
    BuildTestDataset("alpaca_gpteacher_roleplay.json", 96, (root_ / "ds").string());
  }
  static void TearDownTestSuite() {
    if (!std::getenv("TRM_KEEP_TEST_DIRS")) fs::remove_all(root_);
  }

  static TrainConfig Config(const std::string& run, const std::string& device, std::vector<std::string> extra) {
    std::vector<std::string> ov = TinyRunOverrides((root_ / "ds").string(), (root_ / run).string());
    ov.insert(ov.end(), {"device=" + device, "arch.forward_dtype=float32"});
    ov.insert(ov.end(), extra.begin(), extra.end());
    return LoadTrainConfig(std::string(TRM_SOURCE_DIR) + "/configs", "cfg_tiny", ov);
  }

  static Weights OnCpu(const Weights& w) {
    Weights out;
    for (const auto& [n, t] : w) out.emplace_back(n, t.detach().to(torch::kCPU, torch::kFloat64).clone());
    return out;
  }

  static Weights Run(const std::string& run, const std::string& device, const std::vector<std::string>& extra,
                     Collective* comm = nullptr) {
    TrainerOptions o;
    o.progress = 0;
    o.collective = comm;
    Trainer t(AtProcessStart(Config(run, device, extra), comm ? comm->rank() : 0), o);
    t.Run();
    return OnCpu(t.Weights());
  }

  // `world` ranks as threads sharing GPU 0 over `backend`; returns rank 0's weights.
  static Weights RunRanks(int world, const std::string& backend, const std::string& run,
                          const std::vector<std::string>& extra) {
    return RunRankThreads(world, [&](int rank, int port) {
      CollectiveOptions co;
      co.rank = rank;
      co.world = world;
      co.master_port = port;
      co.timeout = std::chrono::seconds(120);
      co.backend = backend;
      co.cuda = true;
      auto comm = CreateCollective(co);
      return Run(run, "cuda", extra, comm.get());
    });
  }

  static fs::path root_;
};
fs::path GpuTest::root_;

// One rank of NCCL on GPU 0: the collectives run on device memory and give the one-rank results;
// `auto` picks NCCL for CUDA tensors.
TEST_F(GpuTest, NcclCollectivesOnOneGpu) {
  SKIP_WITHOUT_CUDA();
  CollectiveOptions co;
  co.master_port = PickFreePort();
  co.timeout = std::chrono::seconds(60);
  co.cuda = true;
  auto comm = CreateCollective(co);
  EXPECT_STREQ(comm->backend(), "nccl");
  at::Tensor t = torch::arange(1000, torch::TensorOptions().dtype(torch::kFloat32).device(torch::kCUDA));
  at::Tensor want = t.clone();
  comm->AllReduceSum(t);
  EXPECT_TRUE(torch::equal(t, want));
  auto pending = comm->StartAllReduceSum(t);
  pending->Wait();
  EXPECT_TRUE(torch::equal(t, want));
  comm->Broadcast(t, 0);
  EXPECT_TRUE(torch::equal(t, want));
  comm->Barrier();
}

// The same model and data on the GPU and the CPU, float32 both: the weights after 6 optimiser
// steps agree to float32 round-off (different kernels and summation orders).
TEST_F(GpuTest, TrainingOnTheGpuMatchesTheCpu) {
  SKIP_WITHOUT_CUDA();
  Weights cpu = Run("cpu", "cpu", {"max_steps=6"});
  Weights gpu = Run("gpu", "cuda", {"max_steps=6"});
  EXPECT_LE(WorstRelativeError(gpu, cpu), 1e-4);
  Weights init = Run("init", "cpu", {"max_steps=1", "lr=0", "lr_warmup_steps=0"});
  EXPECT_GT(WorstRelativeError(cpu, init), 1e-3);
}

// Data parallel with CUDA tensors: two ranks on one GPU (Gloo, since NCCL refuses two ranks on one
// device) equal one rank on the whole batch, with the bucket hooks firing on CUDA's autograd
// device thread and their all-reduces overlapping backward.
TEST_F(GpuTest, TwoRanksOnTheGpuEqualOneRankWithBucketsDuringBackward) {
  SKIP_WITHOUT_CUDA();
  Weights one = Run("dp1", "cuda", {"max_steps=6"});
  Weights two = RunRanks(2, "gloo", "dp2", {"max_steps=6", "allreduce_bucket_mb=0.01"});
  EXPECT_LE(WorstRelativeError(two, one), 1e-5);
}

// Resume on the GPU is exact: CUDA's generator state travels in the checkpoint.
TEST_F(GpuTest, ResumeOnTheGpuIsExact) {
  SKIP_WITHOUT_CUDA();
  Weights full = Run("full", "cuda", {"max_steps=8", "arch.halt_exploration_prob=0.5"});
  Run("split", "cuda", {"max_steps=3", "arch.halt_exploration_prob=0.5"});
  Weights resumed = Run("split", "cuda", {"max_steps=8", "arch.halt_exploration_prob=0.5", "resume=true"});
  for (size_t i = 0; i < full.size(); ++i) EXPECT_TRUE(torch::equal(full[i].second, resumed[i].second)) << full[i].first;
}

// bfloat16 forward (the GPU default) trains: the loss falls.
TEST_F(GpuTest, Bfloat16ForwardTrains) {
  SKIP_WITHOUT_CUDA();
  TrainerOptions o;
  o.progress = 0;
  std::vector<double> losses;
  o.hooks.on_step = [&](const StepMetrics& m) { losses.push_back(m.lm_loss); };
  Trainer t(AtProcessStart(Config("bf16", "cuda", {"epochs=6", "max_steps=40", "arch.forward_dtype=bfloat16"})), o);
  TrainResult r = t.Run();
  ASSERT_EQ(r.steps, 40);
  ASSERT_EQ(losses.size(), 40u);
  for (double l : losses) ASSERT_TRUE(std::isfinite(l)) << l;
  const double first = (losses[0] + losses[1] + losses[2]) / 3, last = (losses[37] + losses[38] + losses[39]) / 3;
  EXPECT_LT(last, 0.8 * first) << "first steps " << first << ", last steps " << last;
}

}  // namespace
}  // namespace trm::worker
