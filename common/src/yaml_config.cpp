#include "trm/common/yaml_config.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>

#include "trm/common/error.h"
#include "trm/common/file_util.h"

namespace trm {
namespace {

using nlohmann::json;

bool ParseInt(const std::string& s, int64_t* out) {
  if (s.empty()) return false;
  size_t i = (s[0] == '-' || s[0] == '+') ? 1 : 0;
  if (i == s.size()) return false;
  for (size_t k = i; k < s.size(); ++k)
    if (s[k] < '0' || s[k] > '9') return false;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *out = v;
  return true;
}

bool ParseFloat(const std::string& s, double* out) {
  if (s == ".inf" || s == "+.inf" || s == ".Inf") { *out = HUGE_VAL; return true; }
  if (s == "-.inf" || s == "-.Inf") { *out = -HUGE_VAL; return true; }
  if (s == ".nan" || s == ".NaN") { *out = NAN; return true; }
  bool digit = false;
  for (char c : s) {
    if (c >= '0' && c <= '9') digit = true;
    else if (c != '.' && c != 'e' && c != 'E' && c != '-' && c != '+') return false;
  }
  if (!digit) return false;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end == s.c_str() || *end != '\0') return false;
  *out = v;
  return true;
}

json ScalarToJson(const YAML::Node& n) {
  const std::string& s = n.Scalar();
  if (n.Tag() == "!") return s;  // quoted: always a string
  if (s == "true" || s == "True" || s == "TRUE") return true;
  if (s == "false" || s == "False" || s == "FALSE") return false;
  if (s == "null" || s == "Null" || s == "NULL" || s == "~" || s.empty()) return nullptr;
  int64_t i;
  if (ParseInt(s, &i)) return i;
  double d;
  if (ParseFloat(s, &d)) return d;
  return s;
}

// Aliases make the YAML graph shared or even cyclic (`a: &x [*x]`), and expanding it is
// recursive and can be exponential ("billion laughs"): both are bounded.
constexpr int kMaxDepth = 256;
constexpr size_t kMaxNodes = size_t{1} << 16;  // configs hold hundreds

struct Budget {
  const std::string& source;
  size_t nodes_left = kMaxNodes;
};

json NodeToJson(const YAML::Node& n, Budget& b, int depth) {
  if (depth > kMaxDepth || b.nodes_left == 0) {
    InvalidArgument(b.source + ":" + std::to_string(n.Mark().line + 1) + ": " +
                    (depth > kMaxDepth ? "nested deeper than " + std::to_string(kMaxDepth) + " levels"
                                       : "more than " + std::to_string(kMaxNodes) + " values") +
                    " (a recursive or repeatedly expanded alias?)");
  }
  --b.nodes_left;
  switch (n.Type()) {
    case YAML::NodeType::Null:
    case YAML::NodeType::Undefined: return nullptr;
    case YAML::NodeType::Scalar: return ScalarToJson(n);
    case YAML::NodeType::Sequence: {
      json a = json::array();
      for (const auto& e : n) a.push_back(NodeToJson(e, b, depth + 1));
      return a;
    }
    case YAML::NodeType::Map: {
      json o = json::object();
      for (const auto& kv : n) {
        if (!kv.first.IsScalar()) {
          InvalidArgument(b.source + ":" + std::to_string(kv.first.Mark().line + 1) + ": mapping keys must be scalars");
        }
        o[kv.first.Scalar()] = NodeToJson(kv.second, b, depth + 1);
      }
      return o;
    }
  }
  return nullptr;
}

// Recursive merge: values of `over` replace those of `base`; mappings merge key by key.
void Merge(json* base, const json& over) {
  if (!base->is_object() || !over.is_object()) {
    *base = over;
    return;
  }
  for (auto it = over.begin(); it != over.end(); ++it) {
    if (base->contains(it.key())) Merge(&(*base)[it.key()], it.value());
    else (*base)[it.key()] = it.value();
  }
}

json LoadFile(const std::string& path) {
  if (!std::filesystem::exists(path)) NotFound(path + ": config file not found");
  return YamlToJson(ReadFile(path), path);
}

}  // namespace

json YamlToJson(const std::string& text, const std::string& source) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    InvalidArgument(source + ":" + std::to_string(e.mark.line + 1) + ":" + std::to_string(e.mark.column + 1) +
                    ": invalid YAML: " + e.msg);
  }
  Budget budget{source};
  return NodeToJson(root, budget, 0);
}

json LoadComposedConfig(const std::string& config_dir, const std::string& name) {
  const std::string path = (std::filesystem::path(config_dir) / (name + ".yaml")).string();
  json self = LoadFile(path);
  if (self.is_null()) self = json::object();
  if (!self.is_object()) InvalidArgument(path + ": expected a mapping at the top level");
  json defaults = self.contains("defaults") ? self["defaults"] : json::array();
  self.erase("defaults");
  if (!defaults.is_array()) InvalidArgument(path + ": defaults: expected a list");
  json out = json::object();
  bool self_applied = false;
  for (const auto& d : defaults) {
    if (d.is_string() && d.get<std::string>() == "_self_") {
      Merge(&out, self);
      self_applied = true;
    } else if (d.is_object() && d.size() == 1) {
      const std::string group = d.begin().key();
      if (!d.begin().value().is_string()) InvalidArgument(path + ": defaults: " + group + ": expected a file name");
      const std::string file = d.begin().value().get<std::string>();
      const std::string sub = (std::filesystem::path(config_dir) / group / (file + ".yaml")).string();
      json part = LoadFile(sub);
      if (!part.is_object()) InvalidArgument(sub + ": expected a mapping at the top level");
      json wrapped = json::object();
      wrapped[group] = part;
      Merge(&out, wrapped);
    } else if (d.is_string()) {
      Merge(&out, LoadComposedConfig(config_dir, d.get<std::string>()));
    } else {
      InvalidArgument(path + ": defaults: entries must be '_self_', a name, or 'group: name', got " + d.dump(-1, ' ', false, json::error_handler_t::replace));
    }
  }
  if (!self_applied) Merge(&out, self);  // Hydra's default: the file's own keys win
  return out;
}

void ApplyOverrides(json* config, const std::vector<std::string>& overrides) {
  for (const std::string& ov : overrides) {
    const auto eq = ov.find('=');
    std::string key = ov.substr(0, eq);
    const bool remove = !key.empty() && key[0] == '~';
    const bool add = !key.empty() && key[0] == '+';  // Hydra's "add"; adding is always allowed
    if (remove || add) key = key.substr(1);
    if (key.empty() || (eq == std::string::npos && !remove)) {
      InvalidArgument("override '" + ov + "': expected key=value (e.g. global_batch_size=2 or arch.H_cycles=3)");
    }
    if (config->is_null()) *config = json::object();  // an empty file
    if (!config->is_object()) {
      InvalidArgument("override '" + ov + "': the config is a " + config->type_name() + ", not a mapping of keys");
    }
    json* node = config;
    size_t start = 0;
    std::string part;
    while (true) {
      size_t dot = key.find('.', start);
      part = key.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
      if (part.empty()) InvalidArgument("override '" + ov + "': empty key segment");
      if (dot == std::string::npos) break;
      if (!node->contains(part)) (*node)[part] = json::object();
      node = &(*node)[part];
      if (!node->is_object()) InvalidArgument("override '" + ov + "': '" + key.substr(0, dot) + "' is not a mapping");
      start = dot + 1;
    }
    if (remove) {
      node->erase(part);
      continue;
    }
    (*node)[part] = YamlToJson(ov.substr(eq + 1), "override '" + ov + "'");
  }
}

}  // namespace trm
