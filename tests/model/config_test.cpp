#include "trm/model/config.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "trm/common/error.h"

namespace trm::model {
namespace {

using nlohmann::json;

std::string ErrorOf(const json& j) {
  try {
    ArchConfig::FromJson(j);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kInvalidArgument);
    return e.what();
  }
  return "";
}

TEST(ArchConfigTest, DefaultsAreTheSpecChatDefaults) {
  ArchConfig c = ArchConfig::FromJson(json{{"vocab_size", 50266}, {"seq_len", 256}});
  EXPECT_EQ(c.hidden_size, 384);
  EXPECT_EQ(c.num_heads, 12);
  EXPECT_EQ(c.expansion, 4.0);
  EXPECT_EQ(c.L_layers, 4);
  EXPECT_EQ(c.H_cycles, 1);
  EXPECT_EQ(c.L_cycles, 1);
  EXPECT_EQ(c.halt_max_steps, 1);
  EXPECT_EQ(c.halt_exploration_prob, 0.0);
  EXPECT_EQ(c.pos_encodings, PosEncoding::kRope);
  EXPECT_EQ(c.rope_theta, 10000.0);
  EXPECT_EQ(c.rms_norm_eps, 1e-5);
  EXPECT_TRUE(c.causal);
  EXPECT_EQ(c.forward_dtype, ForwardDtype::kBfloat16);
  EXPECT_TRUE(c.no_ACT_continue);
  EXPECT_EQ(c.loss_type, LossType::kSoftmaxCrossEntropy);
  EXPECT_EQ(c.head_dim(), 32);
}

TEST(ArchConfigTest, ParsesReferenceKeysIncludingLossSection) {
  json j = {{"name", "recursive_reasoning.trm@TinyRecursiveReasoningModel_ACTV1"},
            {"vocab_size", 97}, {"seq_len", 24}, {"batch_size", 3}, {"hidden_size", 64}, {"num_heads", 4},
            {"expansion", 4}, {"L_layers", 2}, {"H_layers", 0}, {"H_cycles", 2}, {"L_cycles", 3},
            {"halt_max_steps", 3}, {"halt_exploration_prob", 0.1}, {"pos_encodings", "learned"},
            {"causal", false}, {"forward_dtype", "float32"}, {"no_ACT_continue", false},
            {"puzzle_emb_ndim", 0}, {"puzzle_emb_len", 0}, {"mlp_t", false},
            {"loss", {{"name", "losses@ACTLossHead"}, {"loss_type", "stablemax_cross_entropy"}}}};
  ArchConfig c = ArchConfig::FromJson(j);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.H_cycles, 2);
  EXPECT_EQ(c.pos_encodings, PosEncoding::kLearned);
  EXPECT_FALSE(c.causal);
  EXPECT_FALSE(c.no_ACT_continue);
  EXPECT_EQ(c.forward_dtype, ForwardDtype::kFloat32);
  EXPECT_EQ(c.loss_type, LossType::kStablemaxCrossEntropy);
  // Round trip through the reference key names.
  ArchConfig again = ArchConfig::FromJson(c.ToJson());
  EXPECT_EQ(again.ToJson(), c.ToJson());
}

TEST(ArchConfigTest, AnyOtherPositionEncodingMeansNone) {
  ArchConfig c = ArchConfig::FromJson(json{{"vocab_size", 5}, {"seq_len", 4}, {"pos_encodings", "none"}});
  EXPECT_EQ(c.pos_encodings, PosEncoding::kNone);
  EXPECT_EQ(c.ToJson()["pos_encodings"], "none");
}

TEST(ArchConfigTest, ErrorsNameTheKey) {
  json base = {{"vocab_size", 10}, {"seq_len", 8}};
  json j = base;
  j["hidden_size"] = 30;
  j["num_heads"] = 4;
  EXPECT_NE(ErrorOf(j).find("arch.hidden_size: 30 is not divisible by num_heads 4"), std::string::npos);

  j = base;
  j.erase("vocab_size");
  EXPECT_NE(ErrorOf(j).find("arch.vocab_size: missing"), std::string::npos);

  j = base;
  j["hiden_size"] = 32;
  EXPECT_NE(ErrorOf(j).find("arch.hiden_size: unknown arch key"), std::string::npos);

  j = base;
  j["H_cycles"] = "two";
  EXPECT_NE(ErrorOf(j).find("arch.H_cycles: expected an integer"), std::string::npos);

  j = base;
  j["H_cycles"] = 1.5;
  EXPECT_NE(ErrorOf(j).find("arch.H_cycles: expected an integer"), std::string::npos);

  j = base;
  j["causal"] = 1;
  EXPECT_NE(ErrorOf(j).find("arch.causal: expected true or false"), std::string::npos);

  j = base;
  j["L_cycles"] = 0;
  EXPECT_NE(ErrorOf(j).find("arch.L_cycles: must be positive"), std::string::npos);

  j = base;
  j["loss"] = {{"loss_type", "hinge"}};
  EXPECT_NE(ErrorOf(j).find("unknown loss_type 'hinge'"), std::string::npos);

  j = base;
  j["forward_dtype"] = "float16";
  EXPECT_NE(ErrorOf(j).find("arch.forward_dtype: expected float32 or bfloat16"), std::string::npos);

  j = base;
  j["halt_exploration_prob"] = 1.5;
  EXPECT_NE(ErrorOf(j).find("arch.halt_exploration_prob"), std::string::npos);

  j = base;
  j["puzzle_emb_ndim"] = 512;
  EXPECT_NE(ErrorOf(j).find("puzzle embeddings are not supported"), std::string::npos);

  EXPECT_NE(ErrorOf(json::array()).find("expected a mapping"), std::string::npos);
}

TEST(ArchConfigTest, SwiGluWidthRoundsHalfToEvenThenUpTo256) {
  ArchConfig c;
  c.hidden_size = 384;
  c.expansion = 4;
  EXPECT_EQ(c.mlp_intermediate(), 1024);  // 1024 exactly
  c.hidden_size = 64;
  EXPECT_EQ(c.mlp_intermediate(), 256);   // 170.67 -> 171 -> 256
  c.hidden_size = 400;
  EXPECT_EQ(c.mlp_intermediate(), 1280);  // 1066.67 -> 1067 -> 1280
  // 3 * 128.25 * 2 / 3 = 256.5: half-to-even gives 256 (one block); half-up would give 512.
  c.hidden_size = 3;
  c.expansion = 128.25;
  EXPECT_EQ(c.mlp_intermediate(), 256);
  // 3 * 128.75 * 2 / 3 = 257.5 -> 258 -> 512.
  c.expansion = 128.75;
  EXPECT_EQ(c.mlp_intermediate(), 512);
}

}  // namespace
}  // namespace trm::model
