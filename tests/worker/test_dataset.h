// The small byte-tokenized chat dataset the worker tests train on, built from one of the shared
// example files.
#pragma once

#include <string>
#include <vector>

#include "trm/data/dataset_builder.h"

namespace trm::worker {

inline void BuildTestDataset(const std::string& shared_file, int subsample_size, const std::string& output_dir) {
  data::BuildOptions b;
  b.input = std::string(TRM_SHARED_DIR) + "/data/" + shared_file;
  b.tokenizer = "byte";
  b.max_length = 32;
  b.subsample_size = subsample_size;
  b.output_dir = output_dir;
  data::BuildDataset(b);
}

// The config overrides of the worker tests' short runs on that dataset: a 45k-parameter model,
// batch 8, 3 epochs, no evaluation, deterministic halting.
inline std::vector<std::string> TinyRunOverrides(const std::string& dataset_dir, const std::string& run_dir) {
  return {"data_paths=[" + dataset_dir + "]", "run_dir=" + run_dir, "global_batch_size=8", "epochs=3",
          "eval_interval=0", "lr=3e-3", "lr_warmup_steps=2", "threads=1", "arch.hidden_size=32", "arch.num_heads=2",
          "arch.L_layers=1", "arch.H_cycles=2", "arch.L_cycles=1", "arch.halt_max_steps=3",
          "arch.halt_exploration_prob=0.0"};
}

}  // namespace trm::worker
