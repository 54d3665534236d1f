// A config section as one table: each key's type, meaning, reader, check and submission limit
// in one row. The parser (TrainConfig::FromJson, ArchConfig::FromJson), the coordinator's
// submission checks and the generated docs/config-reference.md all read the same rows, so the
// reference cannot say something the code does not do.
#pragma once

#include <nlohmann/json.hpp>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "trm/common/error.h"

namespace trm {

// What a value must be: the text the docs show and the error quotes ("must be <text>"), and the
// test. Checked after every key is read (so an override wins over the file).
struct ValueCheck {
  std::string text;
  std::function<bool(double)> ok;  // numbers; null for checks `read` makes itself (enumerations)
};
inline ValueCheck Positive() { return {"positive", [](double v) { return v > 0; }}; }
inline ValueCheck NonNegative() { return {"0 or more", [](double v) { return v >= 0; }}; }
inline ValueCheck InRange(double lo, double hi, bool hi_open, std::string text) {
  return {std::move(text), [=](double v) { return std::isfinite(v) && v >= lo && (hi_open ? v < hi : v <= hi); }};
}

template <class C>
struct ConfigKey {
  std::string name;
  std::string type;     // int, number, bool, string, list of strings, mapping, or "a | b" choices
  std::string meaning;  // one or two sentences, for the reference
  std::function<void(C*, const nlohmann::json&, const std::string& key)> read;
  ValueCheck check = {};                 // text "" = anything of the type
  std::function<double(const C&)> value = {};  // the number `check` and `submit_max` test
  std::string default_text = {};         // when the default is not the default struct's value
  double submit_max = 0;                 // > 0: the coordinator refuses a job with more
  std::string submit_why = {};
};

// Checks every row's `check` against the read config; `prefix` + key names the key.
template <class C>
void CheckConfigValues(const std::vector<ConfigKey<C>>& keys, const C& c, const std::string& prefix) {
  for (const auto& k : keys) {
    if (!k.check.ok || !k.value) continue;
    const double v = k.value(c);
    if (!k.check.ok(v)) {
      nlohmann::json shown = v;
      if (v == std::floor(v) && std::fabs(v) < 9e15) shown = static_cast<int64_t>(v);
      InvalidArgument(prefix + k.name + ": must be " + k.check.text + ", got " + shown.dump());
    }
  }
}

template <class C>
const ConfigKey<C>* FindConfigKey(const std::vector<ConfigKey<C>>& keys, const std::string& name) {
  for (const auto& k : keys)
    if (k.name == name) return &k;
  return nullptr;
}

// The reference table of a section in Markdown: key, type, default, check, limit, meaning.
// `defaults` is the section's default values as its ToJson writes them.
template <class C>
std::string ConfigKeysMarkdown(const std::vector<ConfigKey<C>>& keys, const nlohmann::json& defaults) {
  auto cell = [](std::string s) {
    for (size_t i = 0; (i = s.find('|', i)) != std::string::npos; i += 2) s.replace(i, 1, "\\|");
    return s;
  };
  std::string out = "| key | type | default | must be | submission limit | meaning |\n|---|---|---|---|---|---|\n";
  for (const auto& k : keys) {
    std::string def = k.default_text;
    if (def.empty() && defaults.contains(k.name)) def = "`" + defaults.at(k.name).dump() + "`";
    std::string limit;
    if (k.submit_max > 0) {
      nlohmann::json m = k.submit_max;
      if (k.submit_max == std::floor(k.submit_max)) m = static_cast<int64_t>(k.submit_max);
      limit = "≤ " + m.dump() + (k.submit_why.empty() ? "" : " (" + k.submit_why + ")");
    }
    out += "| `" + k.name + "` | " + cell(k.type) + " | " + cell(def) + " | " + cell(k.check.text) + " | " + cell(limit) +
           " | " + cell(k.meaning) + " |\n";
  }
  return out;
}

}  // namespace trm
