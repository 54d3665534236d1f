#include "trm/model/layers.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <limits>

#include <cmath>

#include "trm/model/init.h"

namespace trm::model {
namespace {

ArchConfig SmallConfig(bool causal) {
  ArchConfig c;
  c.vocab_size = 11;
  c.seq_len = 6;
  c.hidden_size = 8;
  c.num_heads = 2;
  c.expansion = 2;
  c.L_layers = 2;
  c.causal = causal;
  c.forward_dtype = ForwardDtype::kFloat32;
  return c;
}

TEST(LayersTest, RmsNormHandChecked) {
  at::Tensor x = torch::tensor({3.0f, 4.0f}).view({1, 2});
  at::Tensor y = RmsNorm(x, 0.0);
  const double r = std::sqrt(12.5);  // mean(9, 16)
  EXPECT_NEAR(y[0][0].item<float>(), 3 / r, 1e-6);
  EXPECT_NEAR(y[0][1].item<float>(), 4 / r, 1e-6);
  // bfloat16 in, bfloat16 out, computed in float32.
  at::Tensor yb = RmsNorm(x.to(torch::kBFloat16), 1e-5);
  EXPECT_EQ(yb.scalar_type(), torch::kBFloat16);
  EXPECT_NEAR(yb[0][1].item<float>(), 4 / r, 1e-2);
}

// The CPU's one-pass backward (RmsNormFn) against autograd through the reference's ops in
// float64; the forward stays bitwise the reference's op sequence.
TEST(LayersTest, RmsNormBackwardEqualsAutogradOfTheOps) {
  torch::manual_seed(3);
  for (const std::vector<int64_t>& shape : {std::vector<int64_t>{4, 7, 37}, std::vector<int64_t>{3, 128}}) {
    at::Tensor x = (torch::randn(shape) * 3).requires_grad_(true);
    at::Tensor g = torch::randn(shape);
    at::Tensor y = RmsNorm(x, 1e-5);
    {
      torch::NoGradGuard no_grad;
      at::Tensor want = x * torch::rsqrt(x.square().mean(-1, true) + 1e-5);
      EXPECT_TRUE(torch::equal(y, want));
    }
    y.backward(g);
    at::Tensor x64 = x.detach().to(torch::kFloat64).requires_grad_(true);
    (x64 * torch::rsqrt(x64.square().mean(-1, true) + 1e-5)).backward(g.to(torch::kFloat64));
    const double err = (x.grad().to(torch::kFloat64) - x64.grad()).abs().max().item<double>();
    EXPECT_LT(err, 1e-5 * x64.grad().abs().max().item<double>()) << "shape of " << shape.size() << " dims";
  }
  // Without grad, or bfloat16 in: the same values through the plain ops.
  at::Tensor xb = torch::randn({2, 16}).to(torch::kBFloat16).requires_grad_(true);
  RmsNorm(xb, 1e-5).sum().backward();
  EXPECT_EQ(xb.grad().scalar_type(), torch::kBFloat16);
}

TEST(LayersTest, CastedLinearCastsWeightsToTheActivationDtype) {
  CastedLinear lin(3, 2, true);
  {
    torch::NoGradGuard g;
    lin->weight.copy_(torch::tensor({1.0f, 2.0f, 3.0f, -1.0f, 0.0f, 1.0f}).view({2, 3}));
    lin->bias.copy_(torch::tensor({0.5f, -0.5f}));
  }
  at::Tensor x = torch::tensor({1.0f, 1.0f, 2.0f}).view({1, 3});
  at::Tensor y = lin(x);
  EXPECT_FLOAT_EQ(y[0][0].item<float>(), 1 + 2 + 6 + 0.5f);
  EXPECT_FLOAT_EQ(y[0][1].item<float>(), -1 + 0 + 2 - 0.5f);
  at::Tensor yb = lin(x.to(torch::kBFloat16));
  EXPECT_EQ(yb.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(lin->weight.scalar_type(), torch::kFloat32);  // parameters stay float32
  EXPECT_FLOAT_EQ(yb[0][0].item<float>(), 9.5f);
}

TEST(LayersTest, EmbeddingLooksUpAndCasts) {
  CastedEmbedding emb(4, 2, 1.0);
  {
    torch::NoGradGuard g;
    emb->embedding_weight.copy_(torch::arange(8, torch::kFloat32).view({4, 2}));
  }
  at::Tensor ids = torch::tensor({3, 0}, torch::kInt32).view({1, 2});
  at::Tensor e = emb(ids, torch::kBFloat16);
  EXPECT_EQ(e.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(e.sizes(), (std::vector<int64_t>{1, 2, 2}));
  EXPECT_FLOAT_EQ(e[0][0][1].item<float>(), 7.0f);
  EXPECT_FLOAT_EQ(e[0][1][0].item<float>(), 0.0f);
}

// Training mode's backward adds into the weight's gradient in place (repeated ids included),
// as autograd's dense gradient would be accumulated; without a gradient yet it returns one.
TEST(LayersTest, TrainingEmbeddingAccumulatesItsGradientLikeAten) {
  torch::manual_seed(5);
  CastedEmbedding emb(50, 8, 1.0);
  at::Tensor ids = torch::randint(0, 50, {3, 40}, torch::kInt32);  // 120 lookups of 50 rows: repeats
  ids[0][1] = ids[0][0];
  for (at::ScalarType dt : {torch::kFloat32, torch::kBFloat16}) {
    emb->embedding_weight.mutable_grad() = at::Tensor();
    emb->eval();  // ATen's embedding and its backward
    at::Tensor g = torch::randn({3, 40, 8}).to(dt);
    emb(ids, dt).backward(g);
    emb(ids, dt).backward(g);
    const at::Tensor want = emb->embedding_weight.grad().clone();
    emb->embedding_weight.mutable_grad() = at::Tensor();
    emb->train();
    emb(ids, dt).backward(g);  // no gradient yet: a dense one is returned
    const at::Tensor first = emb->embedding_weight.grad();
    emb(ids, dt).backward(g);  // then in place
    EXPECT_EQ(emb->embedding_weight.grad().data_ptr(), first.data_ptr());
    EXPECT_TRUE(torch::allclose(emb->embedding_weight.grad(), want, 1e-6, 1e-6)) << dt;
    EXPECT_GT(want.abs().sum().item<double>(), 0.0);
  }
  emb->train();
  EXPECT_ANY_THROW(emb(torch::full({1, 1}, 50, torch::kInt32), torch::kFloat32).sum().backward());
}

// CastTo is bitwise ATen's conversion both ways: ties to even, NaN, infinities, subnormals, and
// lengths that are not a multiple of the vector width; its gradient is the cast back.
TEST(LayersTest, CastToIsBitwiseAtensConversion) {
  at::Tensor x = torch::randn({1001}) * 1e3;
  at::Tensor bits = torch::randint(0, 1 << 30, {999}, torch::kInt32);  // arbitrary float patterns
  at::Tensor special = torch::tensor({0.0f, -0.0f, 1.0f + 1.0f / 256, 1.0f + 3.0f / 256, 1e-40f, -1e-39f,
                                      std::numeric_limits<float>::infinity(), -std::numeric_limits<float>::infinity(),
                                      std::nanf(""), 3.4e38f});
  at::Tensor all = torch::cat({x, bits.view(torch::kFloat32), -bits.view(torch::kFloat32), special});
  at::Tensor got = CastTo(all, torch::kBFloat16), want = all.to(torch::kBFloat16);
  EXPECT_TRUE(torch::equal(got.view(torch::kInt16), want.view(torch::kInt16)));
  at::Tensor back = CastTo(want, torch::kFloat32), back_want = want.to(torch::kFloat32);
  EXPECT_TRUE(torch::equal(back.view(torch::kInt32), back_want.view(torch::kInt32)));
  at::Tensor leaf = torch::randn({37}, torch::requires_grad());
  at::Tensor g = torch::randn({37}).to(torch::kBFloat16);
  CastTo(leaf, torch::kBFloat16).backward(g);
  EXPECT_EQ(leaf.grad().scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::equal(leaf.grad(), g.to(torch::kFloat32)));
}

TEST(LayersTest, RotaryHandChecked) {
  // head_dim 2: inv_freq = [1], so position p rotates (x0, x1) by angle p.
  RotaryTables rope = RotaryTables::Make(4, 2, 10000.0);
  EXPECT_EQ(rope.cos.sizes(), (std::vector<int64_t>{4, 2}));
  at::Tensor x = torch::tensor({1.0f, 0.0f, 1.0f, 0.0f}).view({1, 2, 1, 2});  // [B, S, H, D]
  at::Tensor y = ApplyRotary(x, rope, 0);
  EXPECT_NEAR(y[0][0][0][0].item<float>(), 1.0, 1e-6);  // position 0: identity
  EXPECT_NEAR(y[0][0][0][1].item<float>(), 0.0, 1e-6);
  // position 1: x*cos + rotate_half(x)*sin = (cos 1, sin 1)
  EXPECT_NEAR(y[0][1][0][0].item<float>(), std::cos(1.0), 1e-6);
  EXPECT_NEAR(y[0][1][0][1].item<float>(), std::sin(1.0), 1e-6);
  // With an offset of 2 the first row is position 2.
  at::Tensor z = ApplyRotary(x, rope, 2);
  EXPECT_NEAR(z[0][0][0][0].item<float>(), std::cos(2.0), 1e-6);
  // head_dim 4: frequencies 1 and theta^-0.5.
  RotaryTables r4 = RotaryTables::Make(3, 4, 100.0);
  EXPECT_NEAR(r4.cos[2][1].item<float>(), std::cos(2.0 / 10.0), 1e-6);
  EXPECT_NEAR(r4.sin[2][3].item<float>(), std::sin(2.0 / 10.0), 1e-6);
}

// Attention equals a hand-written softmax(q k^T / sqrt(d)) v with the causal mask.
TEST(LayersTest, AttentionMatchesExplicitFormula) {
  for (bool causal : {true, false}) {
    torch::manual_seed(3);
    ArchConfig cfg = SmallConfig(causal);
    Attention attn(cfg);
    RotaryTables rope = RotaryTables::Make(cfg.seq_len, cfg.head_dim(), cfg.rope_theta);
    at::Tensor x = torch::randn({2, 5, 8});
    at::Tensor got = attn(x, &rope);

    const int64_t H = 2, D = 4;
    at::Tensor qkv = torch::matmul(x, attn->qkv_proj->weight.t()).view({2, 5, 3 * H, D});
    at::Tensor q = ApplyRotary(qkv.narrow(2, 0, H), rope, 0).transpose(1, 2);
    at::Tensor k = ApplyRotary(qkv.narrow(2, H, H), rope, 0).transpose(1, 2);
    at::Tensor v = qkv.narrow(2, 2 * H, H).transpose(1, 2);
    at::Tensor s = torch::matmul(q, k.transpose(-1, -2)) / std::sqrt(4.0);
    if (causal) s = s.masked_fill(torch::ones({5, 5}, torch::kBool).triu(1), -INFINITY);
    at::Tensor o = torch::matmul(s.softmax(-1), v).transpose(1, 2).reshape({2, 5, 8});
    at::Tensor want = torch::matmul(o, attn->o_proj->weight.t());
    EXPECT_TRUE(torch::allclose(got, want, 1e-5, 1e-5)) << "causal=" << causal;
  }
}

TEST(LayersTest, CausalAttentionIgnoresTheFuture) {
  torch::manual_seed(4);
  for (bool causal : {true, false}) {
    ArchConfig cfg = SmallConfig(causal);
    Attention attn(cfg);
    at::Tensor x = torch::randn({1, 6, 8});
    at::Tensor x2 = x.clone();
    x2.narrow(1, 4, 2).add_(1.0);  // change positions 4 and 5
    at::Tensor a = attn(x, nullptr), b = attn(x2, nullptr);
    bool prefix_same = torch::allclose(a.narrow(1, 0, 4), b.narrow(1, 0, 4), 1e-6, 1e-6);
    EXPECT_EQ(prefix_same, causal);
  }
}

TEST(LayersTest, CachedAttentionMatchesFullAttention) {
  torch::manual_seed(5);
  ArchConfig cfg = SmallConfig(true);
  Attention attn(cfg);
  RotaryTables rope = RotaryTables::Make(cfg.seq_len, cfg.head_dim(), cfg.rope_theta);
  at::Tensor x = torch::randn({2, 6, 8});
  at::Tensor full = attn(x, &rope);
  KvCache cache;
  at::Tensor first = attn(x.narrow(1, 0, 3), &rope, &cache);  // prompt of 3
  at::Tensor rest = attn(x.narrow(1, 3, 2), &rope, &cache);   // 2 more at once
  at::Tensor last = attn(x.narrow(1, 5, 1), &rope, &cache);   // then one
  EXPECT_TRUE(torch::allclose(torch::cat({first, rest, last}, 1), full, 1e-5, 1e-5));
  EXPECT_EQ(cache.k.size(2), 6);
}

TEST(LayersTest, SwiGluShapesAndFormula) {
  torch::manual_seed(6);
  SwiGlu mlp(8, 256);
  EXPECT_EQ(mlp->gate_up_proj->weight.sizes(), (std::vector<int64_t>{512, 8}));
  EXPECT_EQ(mlp->down_proj->weight.sizes(), (std::vector<int64_t>{8, 256}));
  at::Tensor x = torch::randn({3, 8});
  at::Tensor gu = torch::matmul(x, mlp->gate_up_proj->weight.t());
  at::Tensor gate = gu.narrow(1, 0, 256), up = gu.narrow(1, 256, 256);
  at::Tensor want = torch::matmul(gate * torch::sigmoid(gate) * up, mlp->down_proj->weight.t());
  EXPECT_TRUE(torch::allclose(mlp(x), want, 1e-5, 1e-5));
}

// The CPU's one-pass backwards of RoPE (RotaryFn) and of SwiGLU's activation (SwiGluActFn)
// against autograd through the reference's ops in float64, on a strided q as the attention
// passes it; the forwards stay bitwise the reference's ops.
TEST(LayersTest, RotaryAndSwiGluBackwardsEqualAutogradOfTheOps) {
  torch::manual_seed(8);
  const int64_t B = 2, S = 5, H = 3, D = 8;
  RotaryTables rope = RotaryTables::Make(16, D, 10000.0);
  at::Tensor qkv = torch::randn({B, S, 3, H, D}).requires_grad_(true);
  at::Tensor q = qkv.unbind(2)[0];  // strided, as AttentionImpl passes it
  at::Tensor g = torch::randn({B, S, H, D});
  at::Tensor y = ApplyRotary(q, rope, 3);
  auto reference_ops = [&](const at::Tensor& x, const at::Tensor& cos, const at::Tensor& sin) {
    auto h = x.unflatten(-1, {2, D / 2}).unbind(-2);
    return x * cos + torch::cat({-h[1], h[0]}, -1) * sin;
  };
  const at::Tensor cos = rope.cos.narrow(0, 3, S).unsqueeze(1), sin = rope.sin.narrow(0, 3, S).unsqueeze(1);
  {
    torch::NoGradGuard no_grad;
    EXPECT_TRUE(torch::equal(y, reference_ops(q, cos, sin)));
    // The layouts attention asks for hold the same values, laid out as its products read them
    // (q as [B, H, S, D], k^T as [B, H, D, S]), with and without autograd.
    for (bool grad : {false, true}) {
      torch::AutoGradMode mode(grad);
      at::Tensor bhsd = ApplyRotary(q, rope, 3, RotaryLayout::kBHSD);
      at::Tensor bhds = ApplyRotary(q, rope, 3, RotaryLayout::kBHDS);
      EXPECT_TRUE(torch::equal(bhsd, y)) << grad;
      EXPECT_TRUE(torch::equal(bhds, y)) << grad;
      EXPECT_TRUE(bhsd.transpose(1, 2).is_contiguous()) << grad;
      EXPECT_TRUE(bhds.permute({0, 2, 3, 1}).is_contiguous()) << grad;
    }
  }
  y.backward(g);
  at::Tensor q64 = q.detach().to(torch::kFloat64).requires_grad_(true);
  reference_ops(q64, cos.to(torch::kFloat64), sin.to(torch::kFloat64)).backward(g.to(torch::kFloat64));
  at::Tensor dq = qkv.grad().unbind(2)[0];
  EXPECT_LT((dq.to(torch::kFloat64) - q64.grad()).abs().max().item<double>(), 1e-6);
  EXPECT_EQ(qkv.grad().unbind(2)[1].abs().max().item<float>(), 0.0f);  // k and v untouched

  SwiGlu mlp(8, 24);
  at::Tensor x = (torch::randn({4, 3, 8}) * 2).requires_grad_(true);
  at::Tensor out = mlp(x);
  at::Tensor gu = torch::matmul(x.detach(), mlp->gate_up_proj->weight.detach().t());
  {
    torch::NoGradGuard no_grad;
    auto p = gu.chunk(2, -1);
    EXPECT_TRUE(torch::allclose(out, torch::matmul(torch::silu(p[0]) * p[1], mlp->down_proj->weight.t()), 1e-6, 1e-6));
  }
  at::Tensor go = torch::randn({4, 3, 8});
  out.backward(go);
  at::Tensor x64 = x.detach().to(torch::kFloat64).requires_grad_(true);
  at::Tensor w1 = mlp->gate_up_proj->weight.detach().to(torch::kFloat64), w2 = mlp->down_proj->weight.detach().to(torch::kFloat64);
  auto p64 = torch::matmul(x64, w1.t()).chunk(2, -1);
  torch::matmul(torch::silu(p64[0]) * p64[1], w2.t()).backward(go.to(torch::kFloat64));
  const double scale = x64.grad().abs().max().item<double>();
  EXPECT_LT((x.grad().to(torch::kFloat64) - x64.grad()).abs().max().item<double>(), 1e-5 * scale);
}

TEST(LayersTest, PostNormBlockOutputsUnitRms) {
  torch::manual_seed(7);
  ArchConfig cfg = SmallConfig(true);
  Block block(cfg);
  at::Tensor y = block(torch::randn({2, 4, 8}) * 10, nullptr);
  at::Tensor rms = y.square().mean(-1).sqrt();
  EXPECT_TRUE(torch::allclose(rms, torch::ones_like(rms), 1e-4, 1e-4));
}

TEST(LayersTest, ReasoningModuleAddsInjectionFirst) {
  torch::manual_seed(8);
  ArchConfig cfg = SmallConfig(true);
  ReasoningModule m(cfg);
  EXPECT_EQ(m->num_layers(), 2);
  at::Tensor h = torch::randn({1, 3, 8}), inj = torch::randn({1, 3, 8});
  EXPECT_TRUE(torch::allclose(m(h, inj, nullptr), m(h + inj, torch::zeros_like(inj), nullptr), 1e-6, 1e-6));
}

TEST(InitTest, TruncatedNormalHasRequestedStdAndBounds) {
  torch::manual_seed(9);
  at::Tensor t = torch::empty({1 << 20});
  TruncNormalInit(t, 0.05);
  EXPECT_NEAR(t.std().item<double>(), 0.05, 0.05 * 0.01);
  EXPECT_NEAR(t.mean().item<double>(), 0.0, 0.001);
  // Truncated at 2 "raw" sigmas; the corrected scale is ~1.14x the std.
  double bound = t.abs().max().item<double>();
  EXPECT_LE(bound, 2 * 0.05 * 1.1379 + 1e-6);
  EXPECT_GT(bound, 2 * 0.05 * 1.13);
  at::Tensor z = torch::ones({4});
  TruncNormalInit(z, 0.0);
  EXPECT_EQ(z.abs().sum().item<float>(), 0.0f);
}

}  // namespace
}  // namespace trm::model
