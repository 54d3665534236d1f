// The small byte-tokenized chat dataset the worker tests train on, built from one of the shared
// example files.
#pragma once

#include <string>

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

}  // namespace trm::worker
