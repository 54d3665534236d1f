#include "trm/coordinator/job_spec.h"

#include <nlohmann/json.hpp>

#include "trm/common/error.h"
#include "trm/common/yaml_config.h"
#include "trm/model/config.h"
#include "trm/worker/train_config.h"

namespace trm::coordinator {

std::string ResolveJobConfig(const v1::JobSpec& spec, const std::string& config_dir, const std::string& data_ref) {
  if (spec.world_size() < 1 || spec.world_size() > 4096)
    InvalidArgument("spec.world_size: " + std::to_string(spec.world_size()) + " ranks; expected 1 to 4096");
  if (spec.max_restarts() < 0 || spec.max_restarts() > 1000)
    InvalidArgument("spec.max_restarts: " + std::to_string(spec.max_restarts()) + "; expected 0 to 1000");
  if (spec.name().size() > 128) InvalidArgument("spec.name: longer than 128 characters");
  if (spec.config_yaml().size() > (1 << 20)) InvalidArgument("spec.config_yaml: larger than 1 MiB");
  if (spec.overrides_size() > 1000) InvalidArgument("spec.overrides: more than 1000 overrides");
  nlohmann::json j;
  const std::string name = spec.config_name().empty() ? "job" : spec.config_name();
  if (!spec.config_yaml().empty()) {
    j = YamlToJson(spec.config_yaml(), "spec.config_yaml");
  } else if (!spec.config_name().empty()) {
    if (spec.config_name().find('/') != std::string::npos || spec.config_name().find("..") != std::string::npos)
      InvalidArgument("spec.config_name '" + spec.config_name() + "': expected a config name such as cfg_chat");
    j = LoadComposedConfig(config_dir, spec.config_name());
  } else {
    InvalidArgument("spec: config_yaml or config_name is required");
  }
  if (!j.is_object()) InvalidArgument("spec.config_yaml: expected a mapping of config keys");
  j.erase("defaults");  // composed already
  std::vector<std::string> overrides(spec.overrides().begin(), spec.overrides().end());
  ApplyOverrides(&j, overrides);
  j["data_paths"] = nlohmann::json::array({data_ref});
  const worker::TrainConfig cfg = worker::TrainConfig::FromJson(j, name);
  if (cfg.global_batch_size % spec.world_size() != 0)
    InvalidArgument("spec.world_size: global_batch_size " + std::to_string(cfg.global_batch_size) +
                    " is not divisible by " + std::to_string(spec.world_size()) + " ranks");
  // The arch section is checked now rather than when a worker starts: vocab_size and seq_len
  // come from the dataset, so stand-ins fill them when the config leaves them out.
  nlohmann::json arch = cfg.arch.is_object() ? cfg.arch : nlohmann::json::object();
  if (!arch.contains("vocab_size")) arch["vocab_size"] = 50257;
  if (!arch.contains("seq_len")) arch["seq_len"] = 1024;
  model::ArchConfig::FromJson(arch, "config arch");
  if (!cfg.load_checkpoint.empty() || cfg.resume)
    InvalidArgument("config: load_checkpoint / resume are managed by the coordinator; remove them");
  nlohmann::json out = cfg.ToJson();
  return out.dump();
}

}  // namespace trm::coordinator
