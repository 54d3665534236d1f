#include "trm/worker/train_config.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>

#include "trm/common/error.h"
#include "trm/common/json_fields.h"
#include "trm/common/yaml_config.h"

namespace trm::worker {
namespace {

using nlohmann::json;

std::string Str(const json& v, const std::string& k) { return v.is_null() ? "" : JsonString(v, k); }

void Check(bool ok, const std::string& key, const std::string& what) {
  if (!ok) InvalidArgument("config key " + key + ": " + what);
}

}  // namespace

TrainConfig TrainConfig::FromJson(const json& j, const std::string& config_name) {
  if (!j.is_object()) InvalidArgument("config: expected a mapping at the top level");
  TrainConfig c;
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    const json& v = it.value();
    if (k == "data_paths") c.data_paths = JsonStringList(v, k);
    else if (k == "data_paths_test") c.data_paths_test = JsonStringList(v, k);
    else if (k == "global_batch_size") c.global_batch_size = JsonInt(v, k);
    else if (k == "gradient_accumulation_steps") c.gradient_accumulation_steps = JsonInt(v, k);
    else if (k == "epochs") c.epochs = JsonInt(v, k);
    else if (k == "eval_interval") c.eval_interval = v.is_null() ? 0 : JsonInt(v, k);
    else if (k == "min_eval_interval") c.min_eval_interval = v.is_null() ? 0 : JsonInt(v, k);
    else if (k == "checkpoint_every_eval") c.checkpoint_every_eval = JsonBool(v, k);
    else if (k == "lr") c.lr = JsonNumber(v, k);
    else if (k == "lr_min_ratio") c.lr_min_ratio = JsonNumber(v, k);
    else if (k == "lr_warmup_steps") c.lr_warmup_steps = JsonInt(v, k);
    else if (k == "beta1") c.beta1 = JsonNumber(v, k);
    else if (k == "beta2") c.beta2 = JsonNumber(v, k);
    else if (k == "weight_decay") c.weight_decay = JsonNumber(v, k);
    else if (k == "adam_eps") c.adam_eps = JsonNumber(v, k);
    else if (k == "optimizer") {
      std::string o = Str(v, k);
      if (o == "adamw") c.optimizer = OptimizerKind::kAdamW;
      else if (o == "adam_atan2" || o == "adamatan2") c.optimizer = OptimizerKind::kAdamAtan2;
      else InvalidArgument("config key optimizer: expected adamw or adam_atan2, got '" + o + "'");
    } else if (k == "ema") c.ema = JsonBool(v, k);
    else if (k == "ema_rate") c.ema_rate = JsonNumber(v, k);
    else if (k == "seed") c.seed = JsonInt(v, k);
    else if (k == "grad_clip_norm") c.grad_clip_norm = v.is_null() ? 0.0 : JsonNumber(v, k);
    else if (k == "max_steps") c.max_steps = v.is_null() ? 0 : JsonInt(v, k);
    else if (k == "allreduce_bucket_mb") c.allreduce_bucket_mb = JsonNumber(v, k);
    else if (k == "checkpoint_interval_steps") c.checkpoint_interval_steps = v.is_null() ? 0 : JsonInt(v, k);
    else if (k == "keep_checkpoints") c.keep_checkpoints = JsonInt(v, k);
    else if (k == "log_interval") c.log_interval = JsonInt(v, k);
    else if (k == "threads") c.threads = JsonInt(v, k);
    else if (k == "device") c.device = Str(v, k);
    else if (k == "deterministic") c.deterministic = JsonBool(v, k);
    else if (k == "project_name") c.project_name = Str(v, k);
    else if (k == "run_name") c.run_name = Str(v, k);
    else if (k == "run_dir" || k == "checkpoint_path") c.run_dir = Str(v, k);
    else if (k == "load_checkpoint") c.load_checkpoint = Str(v, k);
    else if (k == "resume") c.resume = JsonBool(v, k);
    else if (k == "arch") {
      if (!v.is_object()) InvalidArgument("config key arch: expected a mapping of model settings");
      c.arch = v;
    }
    // Reference keys with no meaning for chat models, accepted so reference configs load.
    else if (k == "puzzle_emb_lr" || k == "puzzle_emb_weight_decay") JsonNumber(v, k);
    else if (k == "freeze_weights") Check(!JsonBool(v, k), k, "freezing the weights is not supported");
    else if (k == "evaluators" || k == "hydra" || k == "dataset_type") {}
    else InvalidArgument("config key " + k + ": unknown key");
  }
  Check(!c.data_paths.empty(), "data_paths", "missing: give at least one dataset directory (data_paths=[DIR])");
  Check(c.global_batch_size > 0, "global_batch_size", "must be positive");
  Check(c.gradient_accumulation_steps > 0, "gradient_accumulation_steps", "must be positive");
  Check(c.epochs > 0, "epochs", "must be positive");
  Check(c.eval_interval >= 0, "eval_interval", "must not be negative");
  Check(std::isfinite(c.lr) && c.lr >= 0, "lr", "must be a non-negative number");
  Check(c.lr_min_ratio >= 0 && c.lr_min_ratio <= 1, "lr_min_ratio", "must be in [0, 1]");
  Check(c.lr_warmup_steps >= 0, "lr_warmup_steps", "must not be negative");
  Check(c.beta1 >= 0 && c.beta1 < 1, "beta1", "must be in [0, 1)");
  Check(c.beta2 >= 0 && c.beta2 < 1, "beta2", "must be in [0, 1)");
  Check(c.weight_decay >= 0, "weight_decay", "must not be negative");
  Check(c.adam_eps > 0, "adam_eps", "must be positive");
  Check(c.ema_rate >= 0 && c.ema_rate <= 1, "ema_rate", "must be in [0, 1]");
  Check(c.grad_clip_norm >= 0, "grad_clip_norm", "must not be negative");
  Check(c.max_steps >= 0, "max_steps", "must not be negative");
  Check(c.allreduce_bucket_mb >= 0 && c.allreduce_bucket_mb <= 65536, "allreduce_bucket_mb", "must be 0 to 65536");
  Check(c.checkpoint_interval_steps >= 0, "checkpoint_interval_steps", "must not be negative");
  Check(c.keep_checkpoints >= 0, "keep_checkpoints", "must not be negative");
  Check(c.log_interval > 0, "log_interval", "must be positive");
  Check(c.threads >= 0, "threads", "must not be negative");
  Check(c.device == "auto" || c.device == "cpu" || c.device == "cuda", "device", "expected auto, cpu or cuda");
  if (c.arch.is_null()) InvalidArgument("config key arch: missing (the defaults list names no arch file)");
  if (c.run_name.empty()) c.run_name = config_name;
  if (c.run_dir.empty()) c.run_dir = "checkpoints/" + c.project_name + "/" + c.run_name;
  return c;
}

json TrainConfig::ToJson() const {
  json j;
  j["data_paths"] = data_paths;
  j["data_paths_test"] = data_paths_test;
  j["global_batch_size"] = global_batch_size;
  j["gradient_accumulation_steps"] = gradient_accumulation_steps;
  j["epochs"] = epochs;
  j["eval_interval"] = eval_interval;
  j["min_eval_interval"] = min_eval_interval;
  j["checkpoint_every_eval"] = checkpoint_every_eval;
  j["lr"] = lr;
  j["lr_min_ratio"] = lr_min_ratio;
  j["lr_warmup_steps"] = lr_warmup_steps;
  j["beta1"] = beta1;
  j["beta2"] = beta2;
  j["weight_decay"] = weight_decay;
  j["adam_eps"] = adam_eps;
  j["optimizer"] = optimizer == OptimizerKind::kAdamW ? "adamw" : "adam_atan2";
  j["ema"] = ema;
  j["ema_rate"] = ema_rate;
  j["seed"] = seed;
  j["grad_clip_norm"] = grad_clip_norm;
  j["max_steps"] = max_steps;
  j["allreduce_bucket_mb"] = allreduce_bucket_mb;
  j["checkpoint_interval_steps"] = checkpoint_interval_steps;
  j["keep_checkpoints"] = keep_checkpoints;
  j["log_interval"] = log_interval;
  j["threads"] = threads;
  j["device"] = device;
  j["deterministic"] = deterministic;
  j["project_name"] = project_name;
  j["run_name"] = run_name;
  j["run_dir"] = run_dir;
  j["load_checkpoint"] = load_checkpoint;
  j["resume"] = resume;
  j["arch"] = arch;
  return j;
}

TrainConfig LoadTrainConfig(const std::string& config_dir, const std::string& config_name,
                            const std::vector<std::string>& overrides) {
  json j = LoadComposedConfig(config_dir, config_name);
  ApplyOverrides(&j, overrides);
  return TrainConfig::FromJson(j, config_name);
}

std::string DefaultConfigDir() {
  if (const char* env = std::getenv("TRM_CONFIG_DIR"); env && *env) return env;
  if (std::filesystem::exists("configs")) return "configs";
  return TRM_SOURCE_CONFIG_DIR;
}

int64_t ScheduleSteps(const TrainConfig& cfg, int64_t train_rows) {
  const double rows_per_step = static_cast<double>(cfg.global_batch_size * cfg.gradient_accumulation_steps);
  return static_cast<int64_t>(static_cast<double>(cfg.epochs) * static_cast<double>(train_rows) / rows_per_step);
}

int64_t StepsToRun(const TrainConfig& cfg, int64_t train_rows) {
  const int64_t total = ScheduleSteps(cfg, train_rows);
  return cfg.max_steps > 0 ? std::min(total, cfg.max_steps) : total;
}

}  // namespace trm::worker
