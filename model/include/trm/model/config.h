// The model configuration: every key of the reference `arch:` section, with the spec's chat
// defaults. Torch-free so config tools and fuzzers need no LibTorch.
#pragma once

#include <string>

#include <nlohmann/json_fwd.hpp>

namespace trm::model {

enum class PosEncoding { kRope, kLearned, kNone };
enum class LossType { kSoftmaxCrossEntropy, kStablemaxCrossEntropy };
enum class ForwardDtype { kFloat32, kBfloat16 };

struct ArchConfig {
  // Set from the dataset / job rather than the arch file; vocab_size and seq_len are required.
  int64_t vocab_size = 0;
  int64_t seq_len = 0;
  int64_t batch_size = 0;  // informational: the model accepts any batch size
  int64_t num_puzzle_identifiers = 1;

  int64_t hidden_size = 384;
  int64_t num_heads = 12;
  double expansion = 4.0;
  int64_t L_layers = 4;
  int64_t H_layers = 0;  // ignored, kept for config compatibility
  int64_t H_cycles = 1;
  int64_t L_cycles = 1;
  int64_t halt_max_steps = 1;
  double halt_exploration_prob = 0.0;
  PosEncoding pos_encodings = PosEncoding::kRope;
  std::string pos_encodings_name = "rope";  // as written; anything but rope/learned means none
  double rope_theta = 10000.0;
  double rms_norm_eps = 1e-5;
  bool causal = true;
  ForwardDtype forward_dtype = ForwardDtype::kBfloat16;
  int64_t puzzle_emb_ndim = 0;
  int64_t puzzle_emb_len = 0;
  bool mlp_t = false;
  bool no_ACT_continue = true;
  LossType loss_type = LossType::kSoftmaxCrossEntropy;

  int64_t head_dim() const { return hidden_size / num_heads; }
  // SwiGLU intermediate width: round_half_even(expansion * hidden * 2/3) rounded up to 256.
  int64_t mlp_intermediate() const;

  // Throws trm::Error(kInvalidArgument) naming the key when a value is out of range or two keys
  // disagree (e.g. hidden_size not divisible by num_heads). `where` prefixes the message.
  void Validate(const std::string& where = "arch") const;

  // Parses the reference's JSON/YAML-shaped object. Missing keys take the defaults above, except
  // vocab_size and seq_len which are required. Unknown keys and wrong types are errors that name
  // the key. `loss` may be an object with `loss_type` (and an ignored `name`), and
  // `loss_type` given separately overrides it. Validates before returning.
  static ArchConfig FromJson(const nlohmann::json& arch, const std::string& where = "arch");

  // The reference key names, round-trippable through FromJson.
  nlohmann::json ToJson() const;
};

const char* LossTypeName(LossType t);
LossType ParseLossType(const std::string& name, const std::string& where);

}  // namespace trm::model
