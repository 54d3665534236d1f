// The fused CPU training kernels (model/src/attention_cpu.cpp, fused_cpu.cpp) against autograd
// through the reference's formulas in float64: the attention from the qkv projection on (RoPE,
// causal mask, padding of S and D to whole tiles), the residual add with RMSNorm, SwiGLU. They
// run in training mode only; evaluation keeps the reference's ops bit for bit.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

#include "trm/model/layers.h"

namespace trm::model {
namespace {

double RelErr(const at::Tensor& got, const at::Tensor& want) {
  return (got.to(torch::kFloat64) - want).abs().max().item<double>() /
         std::max(want.abs().max().item<double>(), 1e-30);
}

ArchConfig Config(int64_t hidden, int64_t heads, int64_t seq, bool causal) {
  ArchConfig c;
  c.vocab_size = 11;
  c.seq_len = seq;
  c.hidden_size = hidden;
  c.num_heads = heads;
  c.expansion = 2;
  c.L_layers = 1;
  c.causal = causal;
  c.forward_dtype = ForwardDtype::kFloat32;
  return c;
}

// The reference's RoPE (rotate_half) in float64.
at::Tensor Rope64(const at::Tensor& x, const RotaryTables& rope, int64_t S) {
  const int64_t half = x.size(-1) / 2;
  at::Tensor cos = rope.cos.narrow(0, 0, S).to(torch::kFloat64).unsqueeze(1);
  at::Tensor sin = rope.sin.narrow(0, 0, S).to(torch::kFloat64).unsqueeze(1);
  at::Tensor rot = torch::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rot * sin;
}

// Attention's output and its gradients in x and both weights, fused (float32, training mode)
// and by the formulas in float64; S and D deliberately not multiples of the 16-wide tiles.
TEST(FusedCpuTest, AttentionGradientsEqualAutogradOfTheFormulasInFloat64) {
  struct Case {
    int64_t hidden, heads, seq;
    bool causal, rope;
  };
  for (const Case& k : {Case{16, 2, 5, true, true}, Case{48, 2, 21, true, true}, Case{48, 2, 21, false, true},
                        Case{32, 1, 40, true, false}, Case{64, 2, 33, false, false}}) {
    SCOPED_TRACE("hidden " + std::to_string(k.hidden) + " seq " + std::to_string(k.seq) +
                 (k.causal ? " causal" : " bidirectional") + (k.rope ? " rope" : ""));
    torch::manual_seed(21);
    ArchConfig cfg = Config(k.hidden, k.heads, k.seq, k.causal);
    Attention attn(cfg);
    ASSERT_TRUE(attn->is_training());
    RotaryTables rope = RotaryTables::Make(cfg.seq_len, cfg.head_dim(), cfg.rope_theta);
    const int64_t B = 3, S = k.seq, H = k.heads, D = cfg.head_dim();
    at::Tensor x = torch::randn({B, S, k.hidden}).requires_grad_(true);
    at::Tensor g = torch::randn({B, S, k.hidden});
    at::Tensor y = attn(x, k.rope ? &rope : nullptr);
    y.backward(g);

    at::Tensor x64 = x.detach().to(torch::kFloat64).requires_grad_(true);
    at::Tensor wqkv = attn->qkv_proj->weight.detach().to(torch::kFloat64).requires_grad_(true);
    at::Tensor wo = attn->o_proj->weight.detach().to(torch::kFloat64).requires_grad_(true);
    at::Tensor qkv = torch::matmul(x64, wqkv.t()).view({B, S, 3, H, D});
    at::Tensor q = qkv.select(2, 0), kk = qkv.select(2, 1), v = qkv.select(2, 2);
    if (k.rope) q = Rope64(q, rope, S), kk = Rope64(kk, rope, S);
    q = q.transpose(1, 2), kk = kk.transpose(1, 2), v = v.transpose(1, 2);
    at::Tensor s = torch::matmul(q, kk.transpose(-1, -2)) / std::sqrt(static_cast<double>(D));
    if (k.causal) s = s.masked_fill(torch::ones({S, S}, torch::kBool).triu(1), -INFINITY);
    at::Tensor o = torch::matmul(s.softmax(-1), v).transpose(1, 2).reshape({B, S, k.hidden});
    at::Tensor want = torch::matmul(o, wo.t());
    want.backward(g.to(torch::kFloat64));

    EXPECT_LT(RelErr(y.detach(), want.detach()), 1e-5);
    EXPECT_LT(RelErr(x.grad(), x64.grad()), 1e-5);
    EXPECT_LT(RelErr(attn->qkv_proj->weight.grad(), wqkv.grad()), 1e-5);
    EXPECT_LT(RelErr(attn->o_proj->weight.grad(), wo.grad()), 1e-5);

    // Without autograd the same forward, bit for bit (the no-grad recursion cycles of training).
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(attn(x.detach(), k.rope ? &rope : nullptr), y.detach()));
  }
}

// The causal mask holds in the fused kernel: changing the last positions leaves the others.
TEST(FusedCpuTest, FusedCausalAttentionIgnoresTheFuture) {
  torch::manual_seed(22);
  ArchConfig cfg = Config(32, 2, 37, true);
  Attention attn(cfg);
  RotaryTables rope = RotaryTables::Make(cfg.seq_len, cfg.head_dim(), cfg.rope_theta);
  at::Tensor x = torch::randn({2, 37, 32});
  at::Tensor x2 = x.clone();
  x2.narrow(1, 30, 7).add_(1.0);
  torch::NoGradGuard no_grad;
  at::Tensor a = attn(x, &rope), b = attn(x2, &rope);
  EXPECT_TRUE(torch::equal(a.narrow(1, 0, 30), b.narrow(1, 0, 30)));
  EXPECT_FALSE(torch::allclose(a.narrow(1, 30, 7), b.narrow(1, 30, 7)));
}

// A block's residual adds with RMSNorm and its SwiGLU, fused, against the formulas in float64;
// in evaluation mode the block is the reference's ops, bitwise.
TEST(FusedCpuTest, BlockGradientsEqualAutogradOfTheFormulasInFloat64) {
  torch::manual_seed(23);
  ArchConfig cfg = Config(40, 2, 9, true);  // width 40: the 8-lane loops have tails
  Block block(cfg);
  const double eps = cfg.rms_norm_eps;
  at::Tensor x = torch::randn({2, 9, 40}).requires_grad_(true);
  at::Tensor g = torch::randn({2, 9, 40});
  at::Tensor y = block(x, nullptr);
  y.backward(g);

  auto w64 = [](const at::Tensor& w) { return w.detach().to(torch::kFloat64).requires_grad_(true); };
  at::Tensor x64 = w64(x);
  at::Tensor wqkv = w64(block->self_attn->qkv_proj->weight), wo = w64(block->self_attn->o_proj->weight);
  at::Tensor wgu = w64(block->mlp->gate_up_proj->weight), wd = w64(block->mlp->down_proj->weight);
  auto norm = [&](const at::Tensor& t) { return t * torch::rsqrt(t.square().mean(-1, true) + eps); };
  const int64_t B = 2, S = 9, H = 2, D = 20;
  at::Tensor qkv = torch::matmul(x64, wqkv.t()).view({B, S, 3, H, D});
  at::Tensor q = qkv.select(2, 0).transpose(1, 2), k = qkv.select(2, 1).transpose(1, 2);
  at::Tensor v = qkv.select(2, 2).transpose(1, 2);
  at::Tensor s = (torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(static_cast<double>(D)))
                     .masked_fill(torch::ones({S, S}, torch::kBool).triu(1), -INFINITY);
  at::Tensor attn = torch::matmul(torch::matmul(s.softmax(-1), v).transpose(1, 2).reshape({B, S, 40}), wo.t());
  at::Tensor h = norm(x64 + attn);
  auto gu = torch::matmul(h, wgu.t()).chunk(2, -1);
  at::Tensor want = norm(h + torch::matmul(torch::silu(gu[0]) * gu[1], wd.t()));
  want.backward(g.to(torch::kFloat64));

  EXPECT_LT(RelErr(y.detach(), want.detach()), 1e-5);
  EXPECT_LT(RelErr(x.grad(), x64.grad()), 1e-5);
  EXPECT_LT(RelErr(block->mlp->gate_up_proj->weight.grad(), wgu.grad()), 1e-5);
  EXPECT_LT(RelErr(block->mlp->down_proj->weight.grad(), wd.grad()), 1e-5);
  EXPECT_LT(RelErr(block->self_attn->qkv_proj->weight.grad(), wqkv.grad()), 1e-5);

  torch::NoGradGuard no_grad;
  EXPECT_TRUE(torch::equal(block(x.detach(), nullptr), y.detach()));
  // Evaluation: the reference's op sequence, which rounds differently from the fused kernels.
  block->eval();
  at::Tensor e = block(x.detach(), nullptr);
  EXPECT_LT(RelErr(e, want.detach()), 1e-5);
  EXPECT_FALSE(torch::equal(e, y.detach()));
}

}  // namespace
}  // namespace trm::model
