// Hydra-style configuration files, as the reference uses them: a YAML file may start with a
// `defaults:` list that pulls other files in under a key (`- arch: trm_chat` loads
// `<dir>/arch/trm_chat.yaml` into `arch`; `_self_` marks where the file's own keys apply), and
// command-line overrides `key=value` / `a.b.c=value` / `+key=value` replace values. Values are
// parsed as YAML (`data_paths=[data/x,data/y]`, `lr=1e-4`, `ema=true`).
//
// The result is a JSON tree (nlohmann::json) so one set of typed readers validates configs from
// files, overrides and RPCs alike. Torch-free. Errors are trm::Error(kInvalidArgument / kNotFound)
// naming the file (and line) or the override.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace trm {

// Parses YAML text into JSON. Plain scalars become bool / integer / float / null when they look
// like one (YAML 1.2 core schema plus Python-style True/False), quoted scalars stay strings.
nlohmann::json YamlToJson(const std::string& yaml_text, const std::string& source_name);

// Loads `<config_dir>/<name>.yaml`, composing its `defaults:` list.
nlohmann::json LoadComposedConfig(const std::string& config_dir, const std::string& name);

// Applies `key=value` overrides in order; a missing key is added (`+key=` is accepted too) and
// `~key` deletes. Whether a key is known is checked by the typed reader that consumes the tree,
// so a typo fails there, naming the key. Errors here name the override.
void ApplyOverrides(nlohmann::json* config, const std::vector<std::string>& overrides);

}  // namespace trm
