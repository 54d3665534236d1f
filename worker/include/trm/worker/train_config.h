// The training configuration: the reference's keys (cfg_*.yaml + arch/*.yaml, composed with
// `defaults:` and overridden from the command line) plus the service's own (max_steps,
// checkpoint_interval_steps, run_dir, ...). Torch-free.
#pragma once

#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <vector>

#include "trm/common/config_keys.h"

namespace trm::worker {

enum class OptimizerKind { kAdamW, kAdamAtan2 };

struct TrainConfig {
  std::vector<std::string> data_paths;       // datasets whose train splits are concatenated
  std::vector<std::string> data_paths_test;  // test splits to evaluate; empty = test/ of data_paths
  int64_t global_batch_size = 32;            // rows per micro-step, over all ranks
  int64_t gradient_accumulation_steps = 1;   // micro-steps per optimiser step
  int64_t epochs = 100;
  int64_t eval_interval = 10;                // epochs between evaluations; 0 = never
  int64_t min_eval_interval = 0;             // no evaluation before this epoch
  bool checkpoint_every_eval = true;
  double lr = 1e-4;
  double lr_min_ratio = 1.0;
  int64_t lr_warmup_steps = 2000;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double weight_decay = 0.1;
  double adam_eps = 1e-8;
  OptimizerKind optimizer = OptimizerKind::kAdamW;
  bool ema = false;
  double ema_rate = 0.999;
  int64_t seed = 0;
  double grad_clip_norm = 0.0;               // 0 = no clipping
  int64_t max_steps = 0;                     // 0 = run the whole schedule
  // Data parallel: gradients are summed in buckets of about this size, each started as soon as
  // backward has produced it (overlapping the rest of backward); 0 = one all-reduce after it.
  double allreduce_bucket_mb = 4.0;
  int64_t checkpoint_interval_steps = 0;     // 0 = only at evaluations / the end
  int64_t keep_checkpoints = 3;              // last K kept; 0 = keep all
  int64_t log_interval = 10;                 // optimiser steps between log lines off a terminal
  int64_t threads = 0;                       // CPU threads of every pool (thread_pools.h); 0 = cores / local ranks
  std::string device = "auto";               // auto | cpu | cuda
  // On GPUs: deterministic kernels, so a resumed run equals an uninterrupted one bit for bit
  // (the CPU kernels used are deterministic anyway); false trades that for speed.
  bool deterministic = true;
  // CPU float32 training: the fused attention / RMSNorm / SwiGLU kernels (faster), or false for
  // the reference's op sequence, whose forward is bitwise the PyTorch reference's.
  bool fused_cpu_kernels = true;
  std::string project_name = "trm";
  std::string run_name;                      // default: the config name
  std::string run_dir;                       // default: checkpoints/<project_name>/<run_name>
  std::string load_checkpoint;               // resume from this checkpoint directory
  bool resume = false;                       // resume from the latest checkpoint in run_dir
  nlohmann::json arch;                       // the arch section; ArchConfig once the data is known

  // Reads a composed config (after overrides). Unknown keys and wrong types are errors naming the
  // key. Applies the derived defaults (run_name, run_dir).
  static TrainConfig FromJson(const nlohmann::json& j, const std::string& config_name);
  nlohmann::json ToJson() const;
};

// Every key FromJson reads, with its type, check, submission limit and meaning (config_keys.h):
// the reader, the coordinator's checks and docs/config-reference.md use this table.
const std::vector<ConfigKey<TrainConfig>>& TrainConfigKeys();

// Optimiser steps of the whole schedule for `train_rows` training rows: epochs x rows / (global
// batch x accumulation), truncated (the reference's rule; the LR schedule spans it). 0 or less
// means the data is too small for one step.
int64_t ScheduleSteps(const TrainConfig& cfg, int64_t train_rows);
// Steps a run actually makes: the schedule, cut at max_steps when that is set.
int64_t StepsToRun(const TrainConfig& cfg, int64_t train_rows);

// configs/<name>.yaml composed with its defaults and the overrides, then parsed.
TrainConfig LoadTrainConfig(const std::string& config_dir, const std::string& config_name,
                            const std::vector<std::string>& overrides);

// Where configs/ is: $TRM_CONFIG_DIR, else ./configs, else the source tree's configs/.
std::string DefaultConfigDir();

}  // namespace trm::worker
