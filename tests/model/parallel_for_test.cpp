// ParallelFor (trm/model/parallel_for.h): the split every CPU kernel of ours runs on. It once
// was at::parallel_for called from files built without -fopenmp, which ran every kernel on one
// thread without a word; these tests fail if that comes back.
#include "trm/model/parallel_for.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <atomic>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include "trm/model/layers.h"

namespace trm::model {
namespace {

// Restores ATen's thread count when a test changes it.
class ThreadCount {
 public:
  explicit ThreadCount(int n) : saved_(at::get_num_threads()) { at::set_num_threads(n); }
  ~ThreadCount() { at::set_num_threads(saved_); }

 private:
  int saved_;
};

// Exactly as many threads as at::set_num_threads asks (3, more than CI's cores, on purpose): a
// region on one thread means parallel_for.cpp lost -fopenmp; on another count, that it runs on
// an OpenMP runtime other than LibTorch's (a second libgomp), which ATen's thread count does not
// govern.
TEST(ParallelForTest, RunsOnAsManyThreadsAsLibTorchIsSetTo) {
  ThreadCount three(3);
  std::mutex mu;
  std::set<std::thread::id> ids;
  ParallelFor(0, 8, 1, [&](int64_t, int64_t) {
    std::lock_guard<std::mutex> lock(mu);
    ids.insert(std::this_thread::get_id());
  });
  EXPECT_EQ(ids.size(), 3u) << "ParallelFor ran on " << ids.size() << " threads, at::get_num_threads() is 3";
}

TEST(ParallelForTest, CoversTheRangeOnce) {
  ThreadCount two(2);
  std::vector<std::atomic<int>> hits(1001);
  std::atomic<int> chunks{0};
  ParallelFor(0, 1001, 7, [&](int64_t b, int64_t e) {
    chunks.fetch_add(1);
    for (int64_t i = b; i < e; ++i) hits[i].fetch_add(1);
  });
  for (int64_t i = 0; i < 1001; ++i) ASSERT_EQ(hits[i].load(), 1) << "index " << i;
  EXPECT_EQ(chunks.load(), 2);
  int calls = 0;
  ParallelFor(5, 5, 1, [&](int64_t, int64_t) { ++calls; });  // an empty range calls nothing
  EXPECT_EQ(calls, 0);
}

TEST(ParallelForTest, RethrowsOnTheCallerAndRunsNestedCallsInline) {
  ThreadCount two(2);
  EXPECT_THROW(ParallelFor(0, 2, 1,
                           [](int64_t b, int64_t) {
                             if (b == 1) throw std::runtime_error("chunk 1");
                           }),
               std::runtime_error);
  std::atomic<int> inner{0};
  ParallelFor(0, 2, 1, [&](int64_t, int64_t) {
    ParallelFor(0, 10, 1, [&](int64_t b, int64_t e) { inner.fetch_add(static_cast<int>(e - b)); });
  });
  EXPECT_EQ(inner.load(), 20);
}

// The fused training kernels cut their rows (and the attention its batch x heads) by thread
// count; each row is computed alone, so a block's output and gradients are bitwise the same on
// one thread and on two: our kernels add nothing that depends on the thread count. 4 x 160 rows of
// 64: over every kernel's grain, so each really splits (RoPE, add + RMSNorm, SwiGLU, attention).
TEST(ParallelForTest, FusedBlockIsBitwiseTheSameOnOneAndTwoThreads) {
  torch::manual_seed(5);
  ArchConfig cfg;
  cfg.vocab_size = 11;
  cfg.seq_len = 160;
  cfg.hidden_size = 64;
  cfg.num_heads = 4;
  cfg.expansion = 2;
  cfg.L_layers = 1;
  cfg.causal = true;
  cfg.forward_dtype = ForwardDtype::kFloat32;
  Block block(cfg);
  // Our kernels only: the linears on ATen's products, whose threading is OpenBLAS's. oneDNN's
  // sgemm (the training path's, gemm_cpu.h) picks its own split of a product over threads by CPU,
  // so whether it gives the same bits on one and two threads is not ours to promise.
  for (const auto& m : block->modules()) {
    if (auto* linear = m->as<CastedLinearImpl>()) linear->SetFusedCpu(false);
  }
  const RotaryTables rope = RotaryTables::Make(cfg.seq_len, cfg.head_dim(), cfg.rope_theta);
  const at::Tensor x0 = torch::randn({4, 160, 64});
  const at::Tensor g = torch::randn({4, 160, 64});
  auto run = [&](int threads) {
    ThreadCount n(threads);
    block->zero_grad();
    at::Tensor x = x0.clone().requires_grad_(true);
    at::Tensor y = block(x, &rope);
    y.backward(g);
    return std::vector<at::Tensor>{y.detach(), x.grad(), block->self_attn->qkv_proj->weight.grad().clone(),
                                   block->mlp->gate_up_proj->weight.grad().clone()};
  };
  const auto one = run(1), two = run(2);
  for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(torch::equal(one[i], two[i])) << "tensor " << i;
}

}  // namespace
}  // namespace trm::model
