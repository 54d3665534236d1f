#include "trm/model/config.h"

#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "trm/common/error.h"
#include "trm/common/json_fields.h"

namespace trm::model {
namespace {

using nlohmann::json;

// Python's round(): half to even.
int64_t RoundHalfEven(double x) {
  double r = std::nearbyint(x);  // default rounding mode is to-nearest-even
  return static_cast<int64_t>(r);
}

}  // namespace

const char* LossTypeName(LossType t) {
  return t == LossType::kStablemaxCrossEntropy ? "stablemax_cross_entropy" : "softmax_cross_entropy";
}

LossType ParseLossType(const std::string& name, const std::string& where) {
  if (name == "softmax_cross_entropy") return LossType::kSoftmaxCrossEntropy;
  if (name == "stablemax_cross_entropy") return LossType::kStablemaxCrossEntropy;
  InvalidArgument(where + ": unknown loss_type '" + name +
                  "', expected softmax_cross_entropy or stablemax_cross_entropy");
}

int64_t ArchConfig::mlp_intermediate() const {
  int64_t w = RoundHalfEven(expansion * static_cast<double>(hidden_size) * 2.0 / 3.0);
  return (w + 255) / 256 * 256;
}

void ArchConfig::Validate(const std::string& where) const {
  auto positive = [&](const char* key, int64_t v) {
    if (v <= 0) InvalidArgument(where + "." + key + ": must be positive, got " + std::to_string(v));
  };
  positive("vocab_size", vocab_size);
  positive("seq_len", seq_len);
  positive("hidden_size", hidden_size);
  positive("num_heads", num_heads);
  positive("L_layers", L_layers);
  positive("H_cycles", H_cycles);
  positive("L_cycles", L_cycles);
  positive("halt_max_steps", halt_max_steps);
  if (batch_size < 0) InvalidArgument(where + ".batch_size: must not be negative");
  if (hidden_size % num_heads != 0) {
    InvalidArgument(where + ".hidden_size: " + std::to_string(hidden_size) +
                    " is not divisible by num_heads " + std::to_string(num_heads));
  }
  if (pos_encodings == PosEncoding::kRope && head_dim() % 2 != 0) {
    InvalidArgument(where + ".num_heads: rope needs an even head_dim, hidden_size/num_heads = " +
                    std::to_string(head_dim()));
  }
  if (!(expansion > 0) || !std::isfinite(expansion)) {
    InvalidArgument(where + ".expansion: must be a positive number");
  }
  // mlp_intermediate() rounds expansion * hidden_size * 2/3 to an int64: keep it exact and in range.
  if (expansion * static_cast<double>(hidden_size) > 1e15) {
    InvalidArgument(where + ".expansion: expansion * hidden_size is too large for the MLP width");
  }
  if (!(halt_exploration_prob >= 0.0 && halt_exploration_prob <= 1.0)) {
    InvalidArgument(where + ".halt_exploration_prob: must be in [0, 1]");
  }
  if (!(rope_theta > 0)) InvalidArgument(where + ".rope_theta: must be positive");
  if (!(rms_norm_eps > 0)) InvalidArgument(where + ".rms_norm_eps: must be positive");
  if (puzzle_emb_ndim != 0 || puzzle_emb_len != 0) {
    InvalidArgument(where + ".puzzle_emb_ndim/puzzle_emb_len: puzzle embeddings are not supported "
                    "by the chat model, expected 0");
  }
  if (mlp_t) InvalidArgument(where + ".mlp_t: the sequence-axis MLP is not supported, expected false");
}

ArchConfig ArchConfig::FromJson(const json& arch, const std::string& where) {
  if (!arch.is_object()) InvalidArgument(where + ": expected a mapping of arch keys, got " + arch.type_name());
  ArchConfig c;
  bool have_vocab = false, have_seq = false;
  for (auto it = arch.begin(); it != arch.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    const std::string key = where + "." + k;
    if (k == "vocab_size") { c.vocab_size = JsonInt(v, key); have_vocab = true; }
    else if (k == "seq_len") { c.seq_len = JsonInt(v, key); have_seq = true; }
    else if (k == "batch_size") c.batch_size = JsonInt(v, key);
    else if (k == "num_puzzle_identifiers") c.num_puzzle_identifiers = JsonInt(v, key);
    else if (k == "hidden_size") c.hidden_size = JsonInt(v, key);
    else if (k == "num_heads") c.num_heads = JsonInt(v, key);
    else if (k == "expansion") c.expansion = JsonNumber(v, key);
    else if (k == "L_layers") c.L_layers = JsonInt(v, key);
    else if (k == "H_layers") c.H_layers = JsonInt(v, key);
    else if (k == "H_cycles") c.H_cycles = JsonInt(v, key);
    else if (k == "L_cycles") c.L_cycles = JsonInt(v, key);
    else if (k == "halt_max_steps") c.halt_max_steps = JsonInt(v, key);
    else if (k == "halt_exploration_prob") c.halt_exploration_prob = JsonNumber(v, key);
    else if (k == "pos_encodings") {
      c.pos_encodings_name = JsonString(v, key);
      c.pos_encodings = c.pos_encodings_name == "rope"      ? PosEncoding::kRope
                        : c.pos_encodings_name == "learned" ? PosEncoding::kLearned
                                                            : PosEncoding::kNone;
    } else if (k == "rope_theta") c.rope_theta = JsonNumber(v, key);
    else if (k == "rms_norm_eps") c.rms_norm_eps = JsonNumber(v, key);
    else if (k == "causal") c.causal = JsonBool(v, key);
    else if (k == "forward_dtype") {
      std::string d = JsonString(v, key);
      if (d == "float32") c.forward_dtype = ForwardDtype::kFloat32;
      else if (d == "bfloat16") c.forward_dtype = ForwardDtype::kBfloat16;
      else InvalidArgument(key + ": expected float32 or bfloat16, got '" + d + "'");
    } else if (k == "puzzle_emb_ndim") c.puzzle_emb_ndim = JsonInt(v, key);
    else if (k == "puzzle_emb_len") c.puzzle_emb_len = JsonInt(v, key);
    else if (k == "mlp_t") c.mlp_t = JsonBool(v, key);
    else if (k == "no_ACT_continue") c.no_ACT_continue = JsonBool(v, key);
    else if (k == "name") JsonString(v, key);  // the reference's Python class path; informational
    else if (k == "loss") {
      if (!v.is_object()) InvalidArgument(key + ": expected a mapping with loss_type, got " + v.type_name());
      for (auto li = v.begin(); li != v.end(); ++li) {
        if (li.key() == "loss_type") c.loss_type = ParseLossType(JsonString(li.value(), key + ".loss_type"), key + ".loss_type");
        else if (li.key() == "name") JsonString(li.value(), key + ".name");
        else InvalidArgument(key + "." + li.key() + ": unknown key (expected loss_type or name)");
      }
    } else if (k == "loss_type") c.loss_type = ParseLossType(JsonString(v, key), key);
    else InvalidArgument(key + ": unknown arch key");
  }
  if (!have_vocab) InvalidArgument(where + ".vocab_size: missing (set it from the dataset)");
  if (!have_seq) InvalidArgument(where + ".seq_len: missing (set it from the dataset)");
  c.Validate(where);
  return c;
}

json ArchConfig::ToJson() const {
  json j;
  j["vocab_size"] = vocab_size;
  j["seq_len"] = seq_len;
  j["batch_size"] = batch_size;
  j["num_puzzle_identifiers"] = num_puzzle_identifiers;
  j["hidden_size"] = hidden_size;
  j["num_heads"] = num_heads;
  j["expansion"] = expansion;
  j["L_layers"] = L_layers;
  j["H_layers"] = H_layers;
  j["H_cycles"] = H_cycles;
  j["L_cycles"] = L_cycles;
  j["halt_max_steps"] = halt_max_steps;
  j["halt_exploration_prob"] = halt_exploration_prob;
  j["pos_encodings"] = pos_encodings_name;
  j["rope_theta"] = rope_theta;
  j["rms_norm_eps"] = rms_norm_eps;
  j["causal"] = causal;
  j["forward_dtype"] = forward_dtype == ForwardDtype::kFloat32 ? "float32" : "bfloat16";
  j["puzzle_emb_ndim"] = puzzle_emb_ndim;
  j["puzzle_emb_len"] = puzzle_emb_len;
  j["mlp_t"] = mlp_t;
  j["no_ACT_continue"] = no_ACT_continue;
  j["loss"] = {{"loss_type", LossTypeName(loss_type)}};
  return j;
}

}  // namespace trm::model
