#include "trm/model/generate.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "trm/common/error.h"

namespace trm::model {
namespace {

ArchConfig Config(PosEncoding pos, int64_t H, int64_t L, int64_t M) {
  ArchConfig c;
  c.vocab_size = 37;
  c.seq_len = 24;
  c.hidden_size = 32;
  c.num_heads = 4;
  c.expansion = 2;
  c.L_layers = 2;
  c.H_cycles = H;
  c.L_cycles = L;
  c.halt_max_steps = M;
  c.pos_encodings = pos;
  c.forward_dtype = ForwardDtype::kFloat32;
  return c;
}

// Cached decoding equals recomputing the whole sequence, for every recursion shape.
TEST(GenerateTest, CachedLogitsMatchRecompute) {
  for (auto [pos, H, L, M] : {std::tuple{PosEncoding::kRope, 2, 3, 3}, std::tuple{PosEncoding::kLearned, 3, 1, 2},
                              std::tuple{PosEncoding::kNone, 1, 1, 1}}) {
    torch::manual_seed(1);
    Trm model(Config(pos, H, L, M));
    Decoder cached(model, true), full(model, false);
    at::Tensor prompt = torch::randint(0, 37, {1, 7}, torch::kInt32);
    at::Tensor a = cached.Append(prompt), b = full.Append(prompt);
    EXPECT_TRUE(torch::allclose(a, b, 1e-4, 1e-4));
    for (int i = 0; i < 10; ++i) {
      at::Tensor t = torch::randint(0, 37, {1, 1 + i % 2}, torch::kInt32);  // 1 or 2 tokens at a time
      a = cached.Append(t);
      b = full.Append(t);
      EXPECT_TRUE(torch::allclose(a, b, 1e-4, 1e-4)) << "step " << i << " max diff " << (a - b).abs().max().item<float>();
    }
    EXPECT_EQ(cached.length(), full.length());
  }
}

TEST(GenerateTest, GreedyGenerationIsIdenticalWithAndWithoutCache) {
  torch::manual_seed(2);
  Trm model(Config(PosEncoding::kRope, 2, 2, 2));
  GenerateOptions o;
  o.max_new_tokens = 15;
  o.sampling.temperature = 0;
  Decoder cached(model, true), full(model, false);
  std::vector<int32_t> prompt = {3, 5, 7, 11};
  auto a = Generate(cached, prompt, o), b = Generate(full, prompt, o);
  EXPECT_EQ(a.size(), 15u);
  EXPECT_EQ(a, b);
}

TEST(GenerateTest, StopsAtStopTokenAndAtTheContextEnd) {
  torch::manual_seed(3);
  Trm model(Config(PosEncoding::kRope, 1, 1, 1));
  GenerateOptions o;
  o.max_new_tokens = 100;
  o.sampling.temperature = 0;
  Decoder d(model, true);
  std::vector<int32_t> prompt = {1, 2, 3};
  auto all = Generate(d, prompt, o);
  // The context (24) fills up; the prediction made from the full context is the last token.
  EXPECT_EQ(static_cast<int64_t>(prompt.size() + all.size()), 25);
  ASSERT_GE(all.size(), 3u);
  d.Reset();
  o.stop_tokens = {all[2]};
  auto stopped = Generate(d, prompt, o);
  EXPECT_LE(stopped.size(), 2u);
  d.Reset();
  EXPECT_THROW(d.Append(torch::zeros({1, 25}, torch::kInt32)), Error);
}

TEST(GenerateTest, SamplingIsSeededAndRespectsTopK) {
  at::Tensor logits = torch::tensor({0.0f, 1.0f, 2.0f, 3.0f, -1.0f});
  SamplingOptions s;
  s.temperature = 1.0;
  s.seed = 7;
  Sampler a(s), b(s);
  std::vector<int32_t> xa, xb;
  for (int i = 0; i < 50; ++i) {
    xa.push_back(a.Sample(logits));
    xb.push_back(b.Sample(logits));
  }
  EXPECT_EQ(xa, xb);
  s.top_k = 2;
  Sampler k(s);
  for (int i = 0; i < 100; ++i) {
    int32_t t = k.Sample(logits);
    EXPECT_TRUE(t == 2 || t == 3) << t;
  }
  s.top_k = 0;
  s.top_p = 0.5;  // token 3 alone holds ~64% of the mass
  Sampler p(s);
  for (int i = 0; i < 50; ++i) EXPECT_EQ(p.Sample(logits), 3);
  s.temperature = 0;
  EXPECT_EQ(Sampler(s).Sample(logits), 3);
}

TEST(GenerateTest, CachedDecodingRefusesBidirectionalModels) {
  ArchConfig c = Config(PosEncoding::kRope, 1, 1, 1);
  c.causal = false;
  Trm model(c);
  EXPECT_THROW(Decoder(model, true), Error);
  Decoder full(model, false);
  EXPECT_EQ(full.Append(torch::ones({1, 3}, torch::kInt32)).size(1), 37);
}

// Prompts of different lengths, batched in lockstep, give each prompt's tokens generated alone:
// greedy, and sampled with row r seeded seed + r (so a prompt's sample does not depend on its
// batch); also with stop tokens, a short max_new_tokens and rows that run into the context end.
TEST(GenerateTest, BatchedGenerationEqualsOneByOne) {
  torch::manual_seed(4);
  Trm model(Config(PosEncoding::kRope, 2, 2, 2));
  const std::vector<std::vector<int32_t>> prompts = {
      {3, 5, 7, 11}, {1}, {2, 4, 6, 8, 10, 12, 14, 16, 18}, {9, 9}, {30, 31, 32, 33, 34, 35, 36, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13}};
  for (double temperature : {0.0, 1.0}) {
    for (int64_t max_new : {int64_t{3}, int64_t{30}}) {
      GenerateOptions o;
      o.max_new_tokens = max_new;
      o.sampling.temperature = temperature;
      o.sampling.seed = 100;
      o.stop_tokens = {36};
      Decoder batched(model, true, static_cast<int64_t>(prompts.size()));
      auto all = GenerateBatch(batched, prompts, o, /*first_row=*/5);
      ASSERT_EQ(all.size(), prompts.size());
      size_t longest = 0;
      for (size_t r = 0; r < prompts.size(); ++r) {
        GenerateOptions alone = o;
        alone.sampling.seed = o.sampling.seed + 5 + r;
        Decoder single(model, true);
        EXPECT_EQ(all[r], Generate(single, prompts[r], alone))
            << "row " << r << " temperature " << temperature << " max_new_tokens " << max_new;
        EXPECT_LE(static_cast<int64_t>(all[r].size()), max_new);
        EXPECT_LE(static_cast<int64_t>(prompts[r].size() + all[r].size()), 25);
        longest = std::max(longest, all[r].size());
      }
      EXPECT_GT(longest, 0u);
    }
  }
  // The same prompts in batches of two (a different first_row each) give the same rows.
  GenerateOptions o;
  o.max_new_tokens = 8;
  o.sampling.temperature = 1.0;
  Decoder whole(model, true, 5), pair(model, true, 2);
  auto all = GenerateBatch(whole, prompts, o);
  auto second = GenerateBatch(pair, {prompts[2], prompts[3]}, o, 2);
  EXPECT_EQ(second[0], all[2]);
  EXPECT_EQ(second[1], all[3]);
}

TEST(GenerateTest, BatchedGenerationRejectsBadPrompts) {
  torch::manual_seed(5);
  Trm model(Config(PosEncoding::kRope, 1, 1, 1));
  GenerateOptions o;
  Decoder d(model, true, 2);
  EXPECT_THROW(GenerateBatch(d, {{1, 2}}, o), Error);  // batch mismatch
  EXPECT_THROW(GenerateBatch(d, {{1, 2}, {}}, o), Error);
  EXPECT_THROW(GenerateBatch(d, {{1, 2}, std::vector<int32_t>(25, 1)}, o), Error);
  // A prompt as long as the context gives one token, as Generate does.
  o.sampling.temperature = 0;
  auto out = GenerateBatch(d, {{1, 2}, std::vector<int32_t>(24, 1)}, o);
  EXPECT_EQ(out[1].size(), 1u);
}

}  // namespace
}  // namespace trm::model
