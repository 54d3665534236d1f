#include "trm/coordinator/job_spec.h"

#include <nlohmann/json.hpp>

#include "job_lifecycle.h"
#include "tenancy.h"
#include "trm/common/error.h"
#include "trm/common/yaml_config.h"
#include "trm/model/arch_keys.h"
#include "trm/model/config.h"
#include "trm/worker/train_config.h"

namespace trm::coordinator {
namespace {

void AtMost(const std::string& key, double value, double limit, const char* why) {
  if (value > limit)
    InvalidArgument("config " + key + " = " + std::to_string(static_cast<long long>(value)) + ": more than " +
                    std::to_string(static_cast<long long>(limit)) + " (" + why + ")");
}

// A typo must not reach a worker as a job that allocates terabytes: sizes are bounded one by
// one, then the model and one step's activations are estimated against a per-rank budget.
void CheckBudget(const worker::TrainConfig& cfg, const model::ArchConfig& a, int world_size) {
  // The keys' own limits (their tables' submit_max: docs/config-reference.md lists them).
  for (const auto& k : worker::TrainConfigKeys())
    if (k.submit_max > 0) AtMost(k.name, k.value(cfg), k.submit_max, k.submit_why.c_str());
  for (const auto& k : model::ArchConfigKeys())
    if (k.submit_max > 0) AtMost("arch." + k.name, k.value(a), k.submit_max, k.submit_why.c_str());
  AtMost("arch.H_cycles * arch.L_cycles", static_cast<double>(a.H_cycles * a.L_cycles), 4096, "recursion depth");
  const double h = static_cast<double>(a.hidden_size);
  const double params = static_cast<double>(a.L_layers) * (4 * h * h + 3 * h * static_cast<double>(a.mlp_intermediate())) +
                        2 * static_cast<double>(a.vocab_size) * h;
  // Weights, gradients, two Adam moments and an EMA copy in float32.
  const double state_bytes = params * 4 * 5;
  AtMost("the model (parameters x 20 bytes of training state)", state_bytes, 512.0 * (1ull << 30),
         "per-rank memory budget of 512 GiB; check arch.hidden_size / arch.L_layers / vocab_size");
  // Activations of one micro-batch on one rank: rows x seq_len x hidden x layers x recursion
  // (only the last H cycle keeps its graph), a generous 16 values per element.
  const double rows = static_cast<double>(cfg.global_batch_size) / world_size;
  const double act = rows * static_cast<double>(a.seq_len) * h * static_cast<double>(a.L_layers) *
                     static_cast<double>(a.L_cycles + 1) * 16 * 4;
  AtMost("one step's activations (global_batch_size / world_size x seq_len x hidden x layers)", act,
         2048.0 * (1ull << 30), "per-rank memory budget; lower global_batch_size or raise world_size");
}

}  // namespace

std::string ResolveJobConfig(const v1::JobSpec& spec, const std::string& config_dir, const std::string& data_ref,
                             std::vector<int>* world_sizes) {
  if (spec.world_size() < 1 || spec.world_size() > 4096)
    InvalidArgument("spec.world_size: " + std::to_string(spec.world_size()) + " ranks; expected 1 to 4096");
  if (spec.min_world_size() < 0 || spec.min_world_size() > spec.world_size())
    InvalidArgument("spec.min_world_size: " + std::to_string(spec.min_world_size()) + " ranks; expected 1 to world_size (" +
                    std::to_string(spec.world_size()) + "), or 0 for a job that is not elastic");
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
  RefuseManagedConfig(j);
  RefuseManagedOverrides(overrides);
  ApplyOverrides(&j, overrides);
  j["data_paths"] = nlohmann::json::array({data_ref});
  const worker::TrainConfig cfg = worker::TrainConfig::FromJson(j, name);
  if (cfg.global_batch_size % spec.world_size() != 0)
    InvalidArgument("spec.world_size: global_batch_size " + std::to_string(cfg.global_batch_size) +
                    " is not divisible by " + std::to_string(spec.world_size()) + " ranks");
  if (spec.min_world_size() > 0 && cfg.global_batch_size % spec.min_world_size() != 0)
    InvalidArgument("spec.min_world_size: global_batch_size " + std::to_string(cfg.global_batch_size) +
                    " is not divisible by " + std::to_string(spec.min_world_size()) + " ranks");
  const std::vector<int> sizes = ElasticWorldSizes(spec.world_size(), spec.min_world_size(), cfg.global_batch_size);
  if (world_sizes) *world_sizes = sizes;
  // The arch section is checked now rather than when a worker starts: vocab_size and seq_len
  // come from the dataset, so stand-ins fill them when the config leaves them out.
  nlohmann::json arch = cfg.arch.is_object() ? cfg.arch : nlohmann::json::object();
  if (!arch.contains("vocab_size")) arch["vocab_size"] = 50257;
  if (!arch.contains("seq_len")) arch["seq_len"] = 1024;
  const model::ArchConfig a = model::ArchConfig::FromJson(arch, "config arch");
  CheckBudget(cfg, a, sizes.back());  // its smallest size holds the most rows per rank
  if (!cfg.load_checkpoint.empty() || cfg.resume)
    InvalidArgument("config: load_checkpoint / resume are managed by the coordinator; remove them");
  nlohmann::json out = cfg.ToJson();
  return out.dump();
}

}  // namespace trm::coordinator
