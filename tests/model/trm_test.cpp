#include "trm/model/trm.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <set>

#include "trm/common/error.h"

namespace trm::model {
namespace {

ArchConfig Config(PosEncoding pos = PosEncoding::kRope) {
  ArchConfig c;
  c.vocab_size = 23;
  c.seq_len = 7;
  c.hidden_size = 16;
  c.num_heads = 2;
  c.expansion = 2;
  c.L_layers = 2;
  c.H_cycles = 2;
  c.L_cycles = 2;
  c.halt_max_steps = 3;
  c.pos_encodings = pos;
  c.forward_dtype = ForwardDtype::kFloat32;
  return c;
}

Batch RandomBatch(const ArchConfig& c, int64_t B) {
  Batch b;
  b.inputs = torch::randint(0, c.vocab_size, {B, c.seq_len}, torch::kInt32);
  b.labels = torch::randint(0, c.vocab_size, {B, c.seq_len}, torch::kInt32);
  b.labels.select(0, 0).narrow(0, 0, 2).fill_(-100);
  b.puzzle_identifiers = torch::zeros({B}, torch::kInt32);
  return b;
}

TEST(TrmTest, StateDictUsesReferenceNames) {
  Trm rope(Config(PosEncoding::kRope));
  std::set<std::string> names;
  for (const auto& [n, t] : rope->StateDict()) names.insert(n);
  std::set<std::string> want = {
      "model.inner.embed_tokens.embedding_weight", "model.inner.lm_head.weight", "model.inner.q_head.weight",
      "model.inner.q_head.bias", "model.inner.H_init", "model.inner.L_init"};
  for (int i = 0; i < 2; ++i) {
    std::string p = "model.inner.L_level.layers." + std::to_string(i) + ".";
    for (const char* s : {"self_attn.qkv_proj.weight", "self_attn.o_proj.weight", "mlp.gate_up_proj.weight",
                          "mlp.down_proj.weight"})
      want.insert(p + s);
  }
  EXPECT_EQ(names, want);
  Trm learned(Config(PosEncoding::kLearned));
  std::set<std::string> lnames;
  for (const auto& [n, t] : learned->StateDict()) lnames.insert(n);
  want.insert("model.inner.embed_pos.embedding_weight");
  EXPECT_EQ(lnames, want);
}

TEST(TrmTest, InitialisationStatistics) {
  torch::manual_seed(0);
  ArchConfig c = Config();
  c.vocab_size = 4000;
  c.hidden_size = 256;
  c.num_heads = 4;
  Trm m(c);
  auto& in = *m->inner;
  const double d = 256;
  EXPECT_NEAR(in.embed_tokens->embedding_weight.std().item<double>(), 1 / std::sqrt(d), 0.02 / std::sqrt(d));
  EXPECT_NEAR(in.lm_head->weight.std().item<double>(), 1 / std::sqrt(d), 0.02 / std::sqrt(d));
  auto& blk = *in.L_level->layers->ptr<BlockImpl>(0);
  EXPECT_NEAR(blk.self_attn->qkv_proj->weight.std().item<double>(), 1 / std::sqrt(d), 0.02 / std::sqrt(d));
  const double inter = static_cast<double>(c.mlp_intermediate());
  EXPECT_NEAR(blk.mlp->down_proj->weight.std().item<double>(), 1 / std::sqrt(inter), 0.02 / std::sqrt(inter));
  // Truncation at 2 sigma (scale-corrected): nothing beyond ~2.27 std.
  EXPECT_LE(in.embed_tokens->embedding_weight.abs().max().item<double>(), 2.28 / std::sqrt(d));
  EXPECT_EQ(in.q_head->weight.abs().sum().item<float>(), 0.0f);
  EXPECT_TRUE(torch::equal(in.q_head->bias, torch::full({2}, -5.0f)));
  EXPECT_NEAR(in.H_init.std().item<double>(), 1.0, 0.15);
  EXPECT_LE(in.H_init.abs().max().item<double>(), 2.28);
  EXPECT_FALSE(torch::equal(in.H_init, in.L_init));
  EXPECT_FALSE(in.H_init.requires_grad());
}

TEST(TrmTest, LoadStateDictRejectsMissingAndMisshapenTensors) {
  Trm m(Config());
  std::map<std::string, at::Tensor> sd;
  for (const auto& [n, t] : m->StateDict()) sd[n] = t.clone();
  m->LoadStateDict(sd, "ok");
  auto missing = sd;
  missing.erase("model.inner.lm_head.weight");
  try {
    m->LoadStateDict(missing, "ckpt.safetensors");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("ckpt.safetensors: missing tensor 'model.inner.lm_head.weight'"),
              std::string::npos);
  }
  auto wrong = sd;
  wrong["model.inner.H_init"] = torch::zeros({3});
  EXPECT_THROW(m->LoadStateDict(wrong, "x"), Error);
}

TEST(TrmTest, EvaluationRunsFullDepthAndHaltsTogether) {
  torch::manual_seed(1);
  ArchConfig c = Config();
  Trm m(c);
  m->eval();
  torch::NoGradGuard g;
  Batch b = RandomBatch(c, 4);
  Carry carry = m->InitialCarry(b);
  EXPECT_TRUE(carry.halted.all().item<bool>());
  for (int k = 1; k <= 3; ++k) {
    StepOutput out = m->forward(carry, b);
    carry = out.carry;
    EXPECT_TRUE(torch::equal(carry.steps, torch::full({4}, k, torch::kInt32)));
    EXPECT_EQ(carry.halted.all().item<bool>(), k == 3);
    EXPECT_EQ(carry.halted.any().item<bool>(), k == 3);
    EXPECT_EQ(out.metrics.at("count").item<int64_t>(), k == 3 ? 4 : 0);
    EXPECT_EQ(out.logits.sizes(), (std::vector<int64_t>{4, 7, 23}));
    EXPECT_EQ(out.q_halt_logits.scalar_type(), torch::kFloat32);
  }
}

TEST(TrmTest, TrainingCarryReplacesOnlyHaltedRows) {
  torch::manual_seed(2);
  ArchConfig c = Config();
  Trm m(c);
  {
    torch::NoGradGuard g;  // q_halt > 0 on some rows only
    m->inner->q_head->weight.normal_(0, 1);
    m->inner->q_head->bias.zero_();
  }
  m->train();
  Batch a = RandomBatch(c, 6), b = RandomBatch(c, 6);
  Carry carry = m->InitialCarry(a);
  StepOutput s1 = m->forward(carry, a);
  EXPECT_TRUE(torch::equal(s1.carry.data.inputs, a.inputs));
  at::Tensor halted = s1.carry.halted;
  EXPECT_TRUE(torch::equal(halted, s1.q_halt_logits > 0));
  StepOutput s2 = m->forward(s1.carry, b);
  for (int64_t i = 0; i < 6; ++i) {
    bool h = halted[i].item<bool>();
    EXPECT_TRUE(torch::equal(s2.carry.data.inputs[i], h ? b.inputs[i] : a.inputs[i])) << i;
    EXPECT_EQ(s2.carry.steps[i].item<int>(), h ? 1 : 2);
  }
  // Gradients reach every parameter through the last H cycle.
  s2.loss.backward();
  for (const auto& p : m->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
  }
  EXPECT_GT(m->inner->embed_tokens->embedding_weight.grad().abs().sum().item<float>(), 0.0f);
}

// Exploration draws are made for the global batch and sliced (Trm::SetExploration): a row halts
// alike whether its batch is the whole global batch or one rank's half of it.
TEST(TrmTest, ExplorationDrawsDependOnTheRowNotOnTheSplit) {
  torch::manual_seed(3);
  ArchConfig c = Config();
  c.halt_max_steps = 6;
  c.halt_exploration_prob = 0.5;
  c.no_ACT_continue = true;
  Trm m(c);
  {
    torch::NoGradGuard g;  // every row would halt after one step, unless exploration holds it
    m->inner->q_head->weight.zero_();
    m->inner->q_head->bias.fill_(5.0);
  }
  m->train();
  const int64_t B = 8;
  std::vector<Batch> batches = {RandomBatch(c, B), RandomBatch(c, B), RandomBatch(c, B)};
  auto slice = [](const Batch& b, int64_t from, int64_t n) {
    Batch s;
    s.inputs = b.inputs.narrow(0, from, n);
    s.labels = b.labels.narrow(0, from, n);
    s.puzzle_identifiers = b.puzzle_identifiers.narrow(0, from, n);
    return s;
  };
  // Three ACT calls over rows [from, from + n) of the global batch; the halted flags of each call.
  auto run = [&](int64_t from, int64_t n) {
    m->SetExploration(at::detail::createCPUGenerator(11), B, from);
    std::vector<at::Tensor> halted;
    Carry carry = m->InitialCarry(slice(batches[0], from, n));
    for (const Batch& b : batches) {
      StepOutput out = m->forward(carry, slice(b, from, n));
      carry = out.carry;
      halted.push_back(carry.halted.clone());
    }
    return halted;
  };
  std::vector<at::Tensor> whole = run(0, B), first = run(0, B / 2), second = run(B / 2, B / 2);
  for (size_t call = 0; call < whole.size(); ++call) {
    EXPECT_TRUE(torch::equal(whole[call], torch::cat({first[call], second[call]}))) << "call " << call;
  }
  // Exploration did hold some rows and not others, so the comparison covers its draws.
  const int64_t held = B - whole[0].sum().item<int64_t>();
  EXPECT_GT(held, 0);
  EXPECT_LT(held, B);
}

TEST(TrmTest, QContinueBootstrapAddsItsLoss) {
  torch::manual_seed(3);
  ArchConfig c = Config();
  c.no_ACT_continue = false;
  Trm m(c);
  m->train();
  Batch b = RandomBatch(c, 3);
  StepOutput s = m->forward(m->InitialCarry(b), b);
  ASSERT_TRUE(s.target_q_continue.defined());
  ASSERT_TRUE(s.metrics.count("q_continue_loss"));
  double lm = s.metrics.at("lm_loss").item<double>(), qh = s.metrics.at("q_halt_loss").item<double>(),
         qc = s.metrics.at("q_continue_loss").item<double>();
  EXPECT_NEAR(s.loss.item<double>(), lm + 0.5 * (qh + qc), 1e-4);
  EXPECT_TRUE((s.target_q_continue > 0).all().item<bool>() && (s.target_q_continue < 1).all().item<bool>());
}

TEST(TrmTest, StablemaxAndSoftmaxLossesDifferButAgreeOnMetrics) {
  torch::manual_seed(4);
  ArchConfig c = Config();
  c.halt_max_steps = 1;
  Trm soft(c);
  c.loss_type = LossType::kStablemaxCrossEntropy;
  Trm stable(c);
  std::map<std::string, at::Tensor> sd;
  for (const auto& [n, t] : soft->StateDict()) sd[n] = t;
  stable->LoadStateDict(sd, "soft");
  Batch b = RandomBatch(c, 2);
  torch::NoGradGuard g;
  StepOutput a = soft->forward(soft->InitialCarry(b), b), s = stable->forward(stable->InitialCarry(b), b);
  EXPECT_TRUE(torch::equal(a.logits, s.logits));
  EXPECT_NE(a.metrics.at("lm_loss").item<double>(), s.metrics.at("lm_loss").item<double>());
  EXPECT_EQ(a.metrics.at("accuracy").item<double>(), s.metrics.at("accuracy").item<double>());
}

TEST(TrmTest, Bfloat16RunsOnCpu) {
  torch::manual_seed(5);
  ArchConfig c = Config();
  c.forward_dtype = ForwardDtype::kBfloat16;
  Trm m(c);
  m->train();
  Batch b = RandomBatch(c, 2);
  StepOutput s = m->forward(m->InitialCarry(b), b);
  EXPECT_EQ(s.logits.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(s.carry.z_H.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(s.q_halt_logits.scalar_type(), torch::kFloat32);
  EXPECT_EQ(s.loss.scalar_type(), torch::kFloat32);
  s.loss.backward();
  EXPECT_TRUE(std::isfinite(s.loss.item<double>()));
  EXPECT_EQ(m->inner->lm_head->weight.grad().scalar_type(), torch::kFloat32);
  EXPECT_TRUE(torch::isfinite(m->inner->lm_head->weight.grad()).all().item<bool>());
}

}  // namespace
}  // namespace trm::model

namespace trm::model {
namespace {

// `to` gets `from`'s weights.
void CopyWeights(Trm& from, Trm& to) {
  std::map<std::string, at::Tensor> sd;
  for (const auto& [n, t] : from->StateDict()) sd[n] = t;
  to->LoadStateDict(sd, "copy");
}

// Every parameter's gradient in `got` is float32 and within `tol` (relative norm) of `want`'s.
void ExpectGradientsClose(Trm& want, Trm& got, double tol, const std::string& what) {
  auto wp = want->named_parameters(), gp = got->named_parameters();
  for (const auto& item : wp) {
    at::Tensor a = item.value().grad(), g = gp[item.key()].grad();
    ASSERT_TRUE(a.defined() && g.defined()) << item.key() << " " << what;
    EXPECT_EQ(g.scalar_type(), torch::kFloat32) << item.key() << " " << what;
    const double rel = (a - g).norm().item<double>() / std::max(a.norm().item<double>(), 1e-12);
    EXPECT_LT(rel, tol) << item.key() << " " << what << ": |want| " << a.norm().item<double>() << " |got| "
                        << g.norm().item<double>();
  }
}

struct HeadTolerances {
  double loss;  // relative, training
  double grad;  // relative norm, every parameter
  double eval;  // absolute, evaluation loss
};

// The fused head (blocks of `block_bytes`) against the plain head on a copy of the same model:
// no logits, the loss, the argmax metrics exactly, every gradient, and without autograd
// (evaluation) the loss again. A batch row with nothing to predict included.
void ExpectFusedHeadMatchesPlain(const ArchConfig& c, int64_t block_bytes, HeadTolerances tol,
                                 const std::string& what) {
  Trm plain(c), fused(c);
  fused->SetFusedHeadBlockBytes(block_bytes);
  CopyWeights(plain, fused);
  fused->SetFusedHead(true);
  plain->train();
  fused->train();
  Batch b = RandomBatch(c, 4);
  b.labels.select(0, 3).fill_(-100);  // a row with nothing to predict
  StepOutput p = plain->forward(plain->InitialCarry(b), b), f = fused->forward(fused->InitialCarry(b), b);
  EXPECT_FALSE(f.logits.defined());
  EXPECT_NEAR(f.loss.item<double>(), p.loss.item<double>(), tol.loss * std::abs(p.loss.item<double>())) << what;
  for (const char* k : {"count", "accuracy", "exact_accuracy", "q_halt_accuracy", "steps"})
    EXPECT_EQ(f.metrics.at(k).item<double>(), p.metrics.at(k).item<double>()) << k << " " << what;
  p.loss.backward();
  f.loss.backward();
  ExpectGradientsClose(plain, fused, tol.grad, what);
  torch::NoGradGuard ng;
  fused->eval();
  plain->eval();
  EXPECT_NEAR(fused->forward(fused->InitialCarry(b), b).loss.item<double>(),
              plain->forward(plain->InitialCarry(b), b).loss.item<double>(), tol.eval)
      << what;
}

// The fused, chunked LM head + cross-entropy gives the loss, gradients and metrics of the plain
// path. Vocabulary large enough for several row blocks.
TEST(TrmTest, FusedHeadMatchesThePlainLossHead) {
  torch::manual_seed(11);
  ArchConfig c = Config();
  c.vocab_size = 70000;  // 119 rows per 32 MB block: the 160 rows make a full block and a partial one
  c.seq_len = 40;
  ExpectFusedHeadMatchesPlain(c, int64_t{32} << 20, {1e-5, 1e-5, 1e-4}, "float32");
}

// The bfloat16 head on the CPU (bfloat16 logits and products, float32 softmax) against the plain
// bfloat16 path (the reference's autocast head): same bfloat16 logits, so the same argmax
// metrics; loss and gradients within bfloat16 rounding. In one block and in several (the weight
// gradient accumulated in float32 across blocks).
TEST(TrmTest, FusedBfloat16HeadMatchesThePlainBfloat16Head) {
  for (int64_t block_mb : {32, 4}) {
    torch::manual_seed(13);
    ArchConfig c = Config();
    c.vocab_size = 70000;  // 32 MB: 239 bfloat16 rows, one block; 4 MB: 29 rows, six blocks
    c.seq_len = 40;
    c.forward_dtype = ForwardDtype::kBfloat16;
    ExpectFusedHeadMatchesPlain(c, block_mb << 20, {1e-4, 2e-2, 1e-3}, std::to_string(block_mb) + " MB blocks");
  }
}

// Training's fused CPU kernels (attention, residual RMSNorm, SwiGLU in float32 between casts;
// the in-place embedding backward) against the reference's ops, both in bfloat16 with the same
// fused head: the same loss and gradients up to bfloat16 rounding, for every parameter.
TEST(TrmTest, Bfloat16FusedKernelsMatchTheReferenceOps) {
  torch::manual_seed(14);
  ArchConfig c = Config();
  c.hidden_size = 64;
  c.num_heads = 4;
  c.seq_len = 24;
  c.forward_dtype = ForwardDtype::kBfloat16;
  Trm ops(c), fused(c);
  CopyWeights(ops, fused);
  ops->SetFusedCpuKernels(false);
  for (Trm* m : {&ops, &fused}) {
    (*m)->SetFusedHead(true);
    (*m)->train();
  }
  Batch b = RandomBatch(c, 6);
  StepOutput o = ops->forward(ops->InitialCarry(b), b), f = fused->forward(fused->InitialCarry(b), b);
  EXPECT_NEAR(f.loss.item<double>(), o.loss.item<double>(), 1e-2 * std::abs(o.loss.item<double>()));
  o.loss.backward();
  f.loss.backward();
  ExpectGradientsClose(ops, fused, 5e-2, "fused kernels vs ops");
}

// The fused head reuses its buffers from call to call: a second forward while the first one's
// backward is still pending must not overwrite the first one's saved gradient, and a third call
// after both backwards (reusing the buffers) gives the first call's gradients again.
TEST(TrmTest, FusedHeadBuffersAreNotReusedUnderAPendingBackward) {
  torch::manual_seed(12);
  ArchConfig c = Config();
  c.vocab_size = 70000;
  c.seq_len = 40;
  Trm m(c);
  m->SetFusedHead(true);
  m->train();
  Batch a = RandomBatch(c, 4), b = RandomBatch(c, 4);
  auto head_grad = [&] { return m->inner->lm_head->weight.grad().clone(); };
  auto zero = [&] {
    for (auto& p : m->parameters())
      if (p.grad().defined()) p.mutable_grad().zero_();
  };
  StepOutput fa = m->forward(m->InitialCarry(a), a);
  StepOutput fb = m->forward(m->InitialCarry(b), b);  // a's backward still pending
  fa.loss.backward();
  const at::Tensor ga = head_grad();
  zero();
  fb.loss.backward();
  const at::Tensor gb = head_grad();
  zero();
  EXPECT_FALSE(torch::equal(ga, gb));
  for (int i = 0; i < 2; ++i) {  // buffers now free: reused, same result
    StepOutput again = m->forward(m->InitialCarry(a), a);
    again.loss.backward();
    EXPECT_TRUE(torch::equal(head_grad(), ga)) << i;
    zero();
  }
}

}  // namespace
}  // namespace trm::model
