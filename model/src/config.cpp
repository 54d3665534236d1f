#include "trm/model/config.h"

#include <cmath>
#include <set>

#include <nlohmann/json.hpp>

#include "trm/common/error.h"
#include "trm/common/json_fields.h"
#include "trm/model/arch_keys.h"

namespace trm::model {
namespace {

using nlohmann::json;

// Python's round(): half to even.
int64_t RoundHalfEven(double x) {
  double r = std::nearbyint(x);  // default rounding mode is to-nearest-even
  return static_cast<int64_t>(r);
}

}  // namespace

namespace {

using Key = ConfigKey<ArchConfig>;

Key Int(std::string name, int64_t ArchConfig::*m, std::string meaning, ValueCheck check = {}) {
  return Key{std::move(name), "int", std::move(meaning),
             [m](ArchConfig* c, const json& v, const std::string& k) { c->*m = JsonInt(v, k); }, std::move(check),
             [m](const ArchConfig& c) { return static_cast<double>(c.*m); }};
}
Key Num(std::string name, double ArchConfig::*m, std::string meaning, ValueCheck check = {}) {
  return Key{std::move(name), "number", std::move(meaning),
             [m](ArchConfig* c, const json& v, const std::string& k) { c->*m = JsonNumber(v, k); }, std::move(check),
             [m](const ArchConfig& c) { return c.*m; }};
}
Key Bool(std::string name, bool ArchConfig::*m, std::string meaning, ValueCheck check = {}) {
  return Key{std::move(name), "bool", std::move(meaning),
             [m](ArchConfig* c, const json& v, const std::string& k) { c->*m = JsonBool(v, k); }, std::move(check),
             [m](const ArchConfig& c) { return c.*m ? 1.0 : 0.0; }};
}
Key Limit(Key k, double max, std::string why) {
  k.submit_max = max;
  k.submit_why = std::move(why);
  return k;
}
ValueCheck Zero(const char* why) { return {std::string("0 (") + why + ")", [](double v) { return v == 0; }}; }

}  // namespace

const std::vector<ConfigKey<ArchConfig>>& ArchConfigKeys() {
  using C = ArchConfig;
  static const std::vector<Key> keys = [] {
    std::vector<Key> k;
    k.push_back(Limit(Int("vocab_size", &C::vocab_size, "Tokens of the vocabulary: the dataset's tokenizer sets it.",
                          Positive()),
                      4.0e6, "vocabulary"));
    k.back().default_text = "from the dataset";
    k.push_back(Limit(Int("seq_len", &C::seq_len, "Tokens per row: the dataset sets it.", Positive()), 1 << 20,
                      "context"));
    k.back().default_text = "from the dataset";
    k.push_back(Int("batch_size", &C::batch_size, "Informational: the model takes any batch size.", NonNegative()));
    k.push_back(Int("num_puzzle_identifiers", &C::num_puzzle_identifiers,
                    "The reference's puzzle count: accepted, unused by the chat model."));
    k.push_back(Limit(Int("hidden_size", &C::hidden_size, "Width of the transformer; a multiple of num_heads.", Positive()),
                      65536, "the largest model this service trains"));
    k.push_back(Int("num_heads", &C::num_heads, "Attention heads; with rope, hidden_size / num_heads must be even.",
                    Positive()));
    k.push_back(Num("expansion", &C::expansion,
                    "SwiGLU width: round(expansion × hidden_size × 2/3), rounded up to a multiple of 256.",
                    {"a positive number", [](double v) { return v > 0 && std::isfinite(v); }}));
    k.push_back(Limit(Int("L_layers", &C::L_layers, "Transformer blocks of the one recursive network.", Positive()), 256,
                      "layers"));
    k.push_back(Int("H_layers", &C::H_layers, "Ignored (kept so the reference's configs load)."));
    k.push_back(Int("H_cycles", &C::H_cycles, "High-level cycles (updates of z_H) per ACT step.", Positive()));
    k.push_back(Int("L_cycles", &C::L_cycles, "Low-level cycles (updates of z_L) per H cycle.", Positive()));
    k.push_back(Limit(Int("halt_max_steps", &C::halt_max_steps, "ACT steps at most per row.", Positive()), 1024,
                      "ACT steps"));
    k.push_back(Num("halt_exploration_prob", &C::halt_exploration_prob,
                    "In training, the probability that a row gets a random minimum number of ACT steps.",
                    InRange(0, 1, false, "in [0, 1]")));
    k.push_back(Key{"pos_encodings", "rope | learned | none",
                    "Position encoding; any other value means none.",
                    [](C* c, const json& v, const std::string& key) {
                      c->pos_encodings_name = JsonString(v, key);
                      c->pos_encodings = c->pos_encodings_name == "rope"      ? PosEncoding::kRope
                                         : c->pos_encodings_name == "learned" ? PosEncoding::kLearned
                                                                              : PosEncoding::kNone;
                    }});
    k.push_back(Num("rope_theta", &C::rope_theta, "RoPE's base.", Positive()));
    k.push_back(Num("rms_norm_eps", &C::rms_norm_eps, "RMSNorm's epsilon.", Positive()));
    k.push_back(Bool("causal", &C::causal, "Causal attention (the chat variant); false: bidirectional, as the puzzle TRM."));
    k.push_back(Key{"forward_dtype", "float32 | bfloat16",
                    "The forward's compute dtype; the master weights, optimiser and loss stay float32.",
                    [](C* c, const json& v, const std::string& key) {
                      const std::string d = JsonString(v, key);
                      if (d == "float32") c->forward_dtype = ForwardDtype::kFloat32;
                      else if (d == "bfloat16") c->forward_dtype = ForwardDtype::kBfloat16;
                      else InvalidArgument(key + ": expected float32 or bfloat16, got '" + d + "'");
                    }});
    k.push_back(Int("puzzle_emb_ndim", &C::puzzle_emb_ndim, "The reference's puzzle embeddings.",
                    Zero("puzzle embeddings are not supported by the chat model")));
    k.push_back(Int("puzzle_emb_len", &C::puzzle_emb_len, "As puzzle_emb_ndim.",
                    Zero("puzzle embeddings are not supported by the chat model")));
    k.push_back(Bool("mlp_t", &C::mlp_t, "The reference's MLP over the sequence axis.",
                     {"false (the sequence-axis MLP is not supported)", [](double v) { return v == 0; }}));
    k.push_back(Bool("no_ACT_continue", &C::no_ACT_continue,
                     "The halting head learns from the halt target only, without the continue Q-target."));
    k.push_back(Key{"name", "string", "The reference's Python class path: informational.",
                    [](C*, const json& v, const std::string& key) { JsonString(v, key); }});
    k.back().default_text = "—";
    k.push_back(Key{"loss", "mapping", "The reference's loss section: `{loss_type, name}`.",
                    [](C* c, const json& v, const std::string& key) {
                      if (!v.is_object()) InvalidArgument(key + ": expected a mapping with loss_type, got " + v.type_name());
                      for (auto li = v.begin(); li != v.end(); ++li) {
                        if (li.key() == "loss_type")
                          c->loss_type = ParseLossType(JsonString(li.value(), key + ".loss_type"), key + ".loss_type");
                        else if (li.key() == "name") JsonString(li.value(), key + ".name");
                        else InvalidArgument(key + "." + li.key() + ": unknown key (expected loss_type or name)");
                      }
                    }});
    k.push_back(Key{"loss_type", "softmax_cross_entropy | stablemax_cross_entropy",
                    "The LM loss; given here it overrides loss.loss_type.",
                    [](C* c, const json& v, const std::string& key) { c->loss_type = ParseLossType(JsonString(v, key), key); }});
    k.back().default_text = "`\"softmax_cross_entropy\"`";
    return k;
  }();
  return keys;
}

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
  CheckConfigValues(ArchConfigKeys(), *this, where + ".");
  if (hidden_size % num_heads != 0) {
    InvalidArgument(where + ".hidden_size: " + std::to_string(hidden_size) +
                    " is not divisible by num_heads " + std::to_string(num_heads));
  }
  if (pos_encodings == PosEncoding::kRope && head_dim() % 2 != 0) {
    InvalidArgument(where + ".num_heads: rope needs an even head_dim, hidden_size/num_heads = " +
                    std::to_string(head_dim()));
  }
  // mlp_intermediate() rounds expansion * hidden_size * 2/3 to an int64: keep it exact and in range.
  if (expansion * static_cast<double>(hidden_size) > 1e15) {
    InvalidArgument(where + ".expansion: expansion * hidden_size is too large for the MLP width");
  }
}

ArchConfig ArchConfig::FromJson(const json& arch, const std::string& where) {
  if (!arch.is_object()) InvalidArgument(where + ": expected a mapping of arch keys, got " + arch.type_name());
  ArchConfig c;
  const auto& keys = ArchConfigKeys();
  for (auto it = arch.begin(); it != arch.end(); ++it) {
    const auto* k = FindConfigKey(keys, it.key());
    if (!k) InvalidArgument(where + "." + it.key() + ": unknown arch key");
    k->read(&c, it.value(), where + "." + it.key());
  }
  if (!arch.contains("vocab_size")) InvalidArgument(where + ".vocab_size: missing (set it from the dataset)");
  if (!arch.contains("seq_len")) InvalidArgument(where + ".seq_len: missing (set it from the dataset)");
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
