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
using Key = ConfigKey<TrainConfig>;

std::string Str(const json& v, const std::string& k) { return v.is_null() ? "" : JsonString(v, k); }

void Check(bool ok, const std::string& key, const std::string& what) {
  if (!ok) InvalidArgument("config key " + key + ": " + what);
}

// Rows for plain members; `null_zero`: YAML's null (`key:`) means 0, as in the reference.
Key Int(std::string name, int64_t TrainConfig::*m, std::string meaning, ValueCheck check = {}, bool null_zero = false) {
  return Key{std::move(name), "int", std::move(meaning),
             [m, null_zero](TrainConfig* c, const json& v, const std::string& k) {
               c->*m = null_zero && v.is_null() ? 0 : JsonInt(v, k);
             },
             std::move(check), [m](const TrainConfig& c) { return static_cast<double>(c.*m); }};
}
Key Num(std::string name, double TrainConfig::*m, std::string meaning, ValueCheck check = {}, bool null_zero = false) {
  return Key{std::move(name), "number", std::move(meaning),
             [m, null_zero](TrainConfig* c, const json& v, const std::string& k) {
               c->*m = null_zero && v.is_null() ? 0.0 : JsonNumber(v, k);
             },
             std::move(check), [m](const TrainConfig& c) { return c.*m; }};
}
Key Bool(std::string name, bool TrainConfig::*m, std::string meaning) {
  return Key{std::move(name), "bool", std::move(meaning),
             [m](TrainConfig* c, const json& v, const std::string& k) { c->*m = JsonBool(v, k); }};
}
Key String(std::string name, std::string TrainConfig::*m, std::string meaning, std::string default_text = {}) {
  Key k{std::move(name), "string", std::move(meaning),
        [m](TrainConfig* c, const json& v, const std::string& key) { c->*m = Str(v, key); }};
  k.default_text = std::move(default_text);
  return k;
}
Key Limit(Key k, double max, std::string why) {
  k.submit_max = max;
  k.submit_why = std::move(why);
  return k;
}
// The reference's keys that mean nothing for the chat model: read (so a wrong type is still an
// error) and dropped.
Key Ignored(std::string name, std::string type, std::string meaning,
            std::function<void(const json&, const std::string&)> read) {
  Key k{std::move(name), std::move(type), std::move(meaning),
        [read](TrainConfig*, const json& v, const std::string& key) { read(v, key); }};
  k.default_text = "—";
  return k;
}

}  // namespace

const std::vector<ConfigKey<TrainConfig>>& TrainConfigKeys() {
  using C = TrainConfig;
  static const std::vector<Key> keys = [] {
    std::vector<Key> k;
    k.push_back(Key{"data_paths", "list of strings",
                    "Dataset directories (`trm-data build` output) whose train splits are concatenated. Set by the "
                    "coordinator for service jobs (`trmctl submit --dataset`).",
                    [](C* c, const json& v, const std::string& key) { c->data_paths = JsonStringList(v, key); }});
    k.back().default_text = "required";
    k.push_back(Key{"data_paths_test", "list of strings", "Test splits to evaluate; empty: the test/ split of data_paths.",
                    [](C* c, const json& v, const std::string& key) { c->data_paths_test = JsonStringList(v, key); }});
    k.push_back(Limit(Int("global_batch_size", &C::global_batch_size,
                          "Rows per micro-step over all ranks; each rank takes global_batch_size / world size.",
                          Positive()),
                      1 << 22, "rows per step"));
    k.push_back(Limit(Int("gradient_accumulation_steps", &C::gradient_accumulation_steps,
                          "Micro-steps per optimiser step.", Positive()),
                      1 << 16, "micro-steps"));
    k.push_back(Limit(Int("epochs", &C::epochs, "Passes over the training rows that the schedule (and its LR decay) spans.",
                          Positive()),
                      1e9, "epochs"));
    k.push_back(Int("eval_interval", &C::eval_interval, "Epochs between evaluations on the test split; 0 or null: never.",
                    NonNegative(), true));
    k.push_back(Int("min_eval_interval", &C::min_eval_interval, "No evaluation before this epoch.", {}, true));
    k.push_back(Bool("checkpoint_every_eval", &C::checkpoint_every_eval, "Save a checkpoint at every evaluation."));
    k.push_back(Num("lr", &C::lr, "Peak learning rate, reached after the warm-up.",
                    {"a non-negative number", [](double v) { return std::isfinite(v) && v >= 0; }}));
    k.push_back(Num("lr_min_ratio", &C::lr_min_ratio,
                    "Floor of the cosine decay as a fraction of lr (1: constant after the warm-up).",
                    InRange(0, 1, false, "in [0, 1]")));
    k.push_back(Int("lr_warmup_steps", &C::lr_warmup_steps, "Optimiser steps of linear warm-up from 0.", NonNegative()));
    k.push_back(Num("beta1", &C::beta1, "The optimiser's first-moment decay.", InRange(0, 1, true, "in [0, 1)")));
    k.push_back(Num("beta2", &C::beta2, "The optimiser's second-moment decay.", InRange(0, 1, true, "in [0, 1)")));
    k.push_back(Num("weight_decay", &C::weight_decay, "Decoupled weight decay.", NonNegative()));
    k.push_back(Num("adam_eps", &C::adam_eps, "AdamW's epsilon (adam_atan2 has none).", Positive()));
    k.push_back(Key{"optimizer", "adamw | adam_atan2",
                    "The optimiser; adam_atan2 (also spelt adamatan2) is the reference's scale-invariant Adam.",
                    [](C* c, const json& v, const std::string& key) {
                      const std::string o = Str(v, key);
                      if (o == "adamw") c->optimizer = OptimizerKind::kAdamW;
                      else if (o == "adam_atan2" || o == "adamatan2") c->optimizer = OptimizerKind::kAdamAtan2;
                      else InvalidArgument("config key optimizer: expected adamw or adam_atan2, got '" + o + "'");
                    }});
    k.push_back(Bool("ema", &C::ema, "Keep an exponential moving average of the weights; evaluations use it."));
    k.push_back(Num("ema_rate", &C::ema_rate, "The moving average's decay per step.", InRange(0, 1, false, "in [0, 1]")));
    k.push_back(Int("seed", &C::seed, "Seeds the initial weights, the data order and the ACT exploration."));
    k.push_back(Num("grad_clip_norm", &C::grad_clip_norm, "Clips the global gradient norm to this; 0 or null: no clipping.",
                    NonNegative(), true));
    k.push_back(Int("max_steps", &C::max_steps, "Stops after this many optimiser steps; 0 or null: the whole schedule.",
                    NonNegative(), true));
    k.push_back(Num("allreduce_bucket_mb", &C::allreduce_bucket_mb,
                    "Data parallel: gradients are summed in buckets of about this size, each as soon as backward has "
                    "produced it; 0: one all-reduce after backward.",
                    InRange(0, 65536, false, "0 to 65536")));
    k.push_back(Int("checkpoint_interval_steps", &C::checkpoint_interval_steps,
                    "Optimiser steps between checkpoints; 0 or null: only at evaluations and the end.", NonNegative(), true));
    k.push_back(Int("keep_checkpoints", &C::keep_checkpoints,
                    "Checkpoints the run directory keeps (the newest); 0: all. The coordinator keeps its own "
                    "(`--keep-last`).",
                    NonNegative()));
    k.push_back(Int("log_interval", &C::log_interval, "Optimiser steps between log lines when not on a terminal.",
                    Positive()));
    k.push_back(Int("threads", &C::threads, "CPU threads of every pool; 0: the cores divided among the local ranks.",
                    NonNegative()));
    k.push_back(Key{"device", "auto | cpu | cuda", "Where the model runs; auto: CUDA when there is a GPU.",
                    [](C* c, const json& v, const std::string& key) {
                      c->device = Str(v, key);
                      Check(c->device == "auto" || c->device == "cpu" || c->device == "cuda", "device",
                            "expected auto, cpu or cuda, got '" + c->device + "'");
                    }});
    k.push_back(Bool("deterministic", &C::deterministic,
                     "On GPUs, deterministic kernels, so that a resumed run equals an uninterrupted one bit for bit; "
                     "false trades that for speed (the CPU kernels are deterministic anyway)."));
    k.push_back(Bool("fused_cpu_kernels", &C::fused_cpu_kernels,
                     "CPU float32 training runs fused attention, RMSNorm and SwiGLU kernels (faster; they round "
                     "differently from the reference at ~1e-6 a step); false runs the reference's op sequence, "
                     "whose forward is bitwise the PyTorch reference's. Evaluation always runs the latter. The "
                     "fused kernels' last bits depend on whether the CPU has AVX2 + FMA: a run resumed on a "
                     "machine of the other kind continues, but not bit for bit."));
    k.push_back(String("project_name", &C::project_name, "Names the default run directory."));
    k.push_back(String("run_name", &C::run_name, "Names the run in logs and its default directory.", "the config's name"));
    k.push_back(String("run_dir", &C::run_dir, "Where checkpoints and metrics.jsonl go (the service sets it per attempt).",
                       "`checkpoints/<project_name>/<run_name>`"));
    k.push_back(String("checkpoint_path", &C::run_dir, "The reference's name for run_dir.", "—"));
    k.push_back(String("load_checkpoint", &C::load_checkpoint,
                       "Starts from this checkpoint directory (the coordinator manages it for service jobs)."));
    k.push_back(Bool("resume", &C::resume,
                     "Resumes from the latest checkpoint in run_dir (the coordinator manages it for service jobs)."));
    k.push_back(Key{"arch", "mapping", "The model: the arch keys below, composed from `arch/NAME.yaml` by `defaults:`.",
                    [](C* c, const json& v, const std::string&) {
                      if (!v.is_object()) InvalidArgument("config key arch: expected a mapping of model settings");
                      c->arch = v;
                    }});
    k.back().default_text = "from the config's `defaults:`";
    k.push_back(Ignored("puzzle_emb_lr", "number", "The reference's puzzle embeddings: accepted, unused by the chat model.",
                        [](const json& v, const std::string& key) { JsonNumber(v, key); }));
    k.push_back(Ignored("puzzle_emb_weight_decay", "number", "As puzzle_emb_lr.",
                        [](const json& v, const std::string& key) { JsonNumber(v, key); }));
    k.push_back(Ignored("freeze_weights", "bool", "Accepted as false only: freezing the weights is not supported.",
                        [](const json& v, const std::string& key) {
                          Check(!JsonBool(v, key), key, "freezing the weights is not supported");
                        }));
    for (const char* name : {"evaluators", "hydra", "dataset_type"})
      k.push_back(Ignored(name, "any", "The reference's: accepted and ignored.", [](const json&, const std::string&) {}));
    return k;
  }();
  return keys;
}

TrainConfig TrainConfig::FromJson(const json& j, const std::string& config_name) {
  if (!j.is_object()) InvalidArgument("config: expected a mapping at the top level");
  TrainConfig c;
  const auto& keys = TrainConfigKeys();
  for (auto it = j.begin(); it != j.end(); ++it) {
    const Key* k = FindConfigKey(keys, it.key());
    if (!k) InvalidArgument("config key " + it.key() + ": unknown key");
    k->read(&c, it.value(), it.key());
  }
  Check(!c.data_paths.empty(), "data_paths", "missing: give at least one dataset directory (data_paths=[DIR])");
  CheckConfigValues(keys, c, "config key ");
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
  j["fused_cpu_kernels"] = fused_cpu_kernels;
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
