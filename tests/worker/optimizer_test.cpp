#include "trm/worker/optimizer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "trm/worker/flat_params.h"

namespace trm::worker {
namespace {

// Our flat AdamW against LibTorch's torch::optim::AdamW (the reference's arithmetic).
TEST(OptimizerTest, AdamWMatchesLibTorchAdamW) {
  torch::manual_seed(0);
  at::Tensor a = torch::randn({4, 3}, torch::requires_grad()), b = torch::randn({5}, torch::requires_grad());
  at::Tensor ra = a.detach().clone().requires_grad_(), rb = b.detach().clone().requires_grad_();
  FlatParams flat({{"a", a}, {"b", b}});
  OptimizerOptions o;
  o.weight_decay = 0.1;
  Optimizer ours(&flat, o);
  torch::optim::AdamW theirs({ra, rb}, torch::optim::AdamWOptions(1e-2).betas({0.9, 0.95}).eps(1e-8).weight_decay(0.1));
  for (int step = 0; step < 5; ++step) {
    at::Tensor x = torch::randn({3});
    flat.ZeroGrad();
    ((torch::matmul(a, x).square().sum() + b.pow(3).sum())).backward();
    theirs.zero_grad();
    ((torch::matmul(ra, x).square().sum() + rb.pow(3).sum())).backward();
    EXPECT_TRUE(torch::allclose(flat.grads().narrow(0, 0, 12).view({4, 3}), ra.grad()));
    ours.Step(1e-2);
    theirs.step();
    EXPECT_TRUE(torch::allclose(a, ra, 1e-6, 1e-7)) << "step " << step;
    EXPECT_TRUE(torch::allclose(b, rb, 1e-6, 1e-7)) << "step " << step;
  }
  EXPECT_EQ(ours.step(), 5);
}

TEST(OptimizerTest, AdamAtan2HandChecked) {
  at::Tensor p = torch::tensor({1.0f, -2.0f}, torch::requires_grad());
  FlatParams flat({{"p", p}});
  OptimizerOptions o;
  o.kind = OptimizerKind::kAdamAtan2;
  o.weight_decay = 0.0;
  Optimizer opt(&flat, o);
  flat.grads().copy_(torch::tensor({0.5f, -3.0f}));
  opt.Step(0.1);
  // Step 1: m/bc1 = g and sqrt(v/bc2) = |g|, so the update is atan2(g, |g|) = +-pi/4.
  EXPECT_NEAR(p[0].item<float>(), 1.0 - 0.1 * M_PI / 4, 1e-6);
  EXPECT_NEAR(p[1].item<float>(), -2.0 + 0.1 * M_PI / 4, 1e-6);
  // A zero gradient from the start gives atan2(0, 0) = 0: no NaN, no move.
  at::Tensor q = torch::tensor({3.0f}, torch::requires_grad());
  FlatParams fq({{"q", q}});
  Optimizer oq(&fq, o);
  oq.Step(0.1);
  EXPECT_EQ(q.item<float>(), 3.0f);
}

TEST(OptimizerTest, StateRoundTrip) {
  at::Tensor p = torch::randn({3}, torch::requires_grad());
  FlatParams flat({{"p", p}});
  Optimizer opt(&flat, {});
  flat.grads().fill_(0.3);
  opt.Step(0.01);
  std::map<std::string, at::Tensor> saved;
  for (auto& [n, t] : opt.StateTensors()) saved[n] = t.clone();
  at::Tensor q = p.detach().clone().requires_grad_();
  FlatParams fq({{"p", q}});
  Optimizer restored(&fq, {});
  restored.LoadState(saved, opt.step(), "test");
  flat.grads().fill_(-0.2);
  fq.grads().fill_(-0.2);
  opt.Step(0.01);
  restored.Step(0.01);
  EXPECT_TRUE(torch::equal(p, q));
  saved.erase("exp_avg.p");
  EXPECT_THROW(restored.LoadState(saved, 1, "test"), std::exception);
}

TEST(OptimizerTest, FlatParamsAreViewsAndGradsAccumulateInPlace) {
  at::Tensor a = torch::ones({2, 2}, torch::requires_grad()), b = torch::zeros({3}, torch::requires_grad());
  FlatParams flat({{"a", a}, {"b", b}});
  EXPECT_EQ(flat.numel(), 7);
  flat.params().fill_(2.0);
  EXPECT_EQ(a.sum().item<float>(), 8.0f);
  (a.sum() + b.sum()).backward();
  (a.sum()).backward();
  EXPECT_TRUE(torch::equal(flat.grads(), torch::tensor({2.f, 2.f, 2.f, 2.f, 1.f, 1.f, 1.f})));
  flat.ZeroGrad();
  EXPECT_EQ(a.grad().abs().sum().item<float>(), 0.0f);
}

TEST(ScheduleTest, WarmupThenCosineToMinRatio) {
  EXPECT_DOUBLE_EQ(CosineScheduleLr(0, 1.0, 10, 110, 0.1), 0.0);
  EXPECT_DOUBLE_EQ(CosineScheduleLr(5, 1.0, 10, 110, 0.1), 0.5);
  EXPECT_DOUBLE_EQ(CosineScheduleLr(10, 1.0, 10, 110, 0.1), 1.0);
  EXPECT_NEAR(CosineScheduleLr(60, 1.0, 10, 110, 0.1), 0.1 + 0.9 * 0.5, 1e-12);
  EXPECT_NEAR(CosineScheduleLr(110, 1.0, 10, 110, 0.1), 0.1, 1e-12);
  EXPECT_DOUBLE_EQ(CosineScheduleLr(50, 2.0, 0, 100, 1.0), 2.0);  // min_ratio 1: constant
}

}  // namespace
}  // namespace trm::worker
