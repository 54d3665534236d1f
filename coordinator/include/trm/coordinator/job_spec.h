// Checking a submitted JobSpec and resolving its training config, before anything is stored.
#pragma once

#include <string>
#include <vector>

#include "trm/v1/trm.pb.h"

namespace trm::coordinator {

// Parses spec.config_yaml (or loads spec.config_name from config_dir when no YAML is sent),
// applies the overrides, points data_paths at `data_ref` and validates the whole config with
// the trainer's own reader, plus what only the service knows (world size against the batch).
// Returns the resolved config as JSON text, and in `world_sizes` (may be null) the sizes the job
// may run on, largest first (spec.world_size; for an elastic job down to spec.min_world_size,
// those that divide global_batch_size). Throws InvalidArgument naming the field or key.
std::string ResolveJobConfig(const v1::JobSpec& spec, const std::string& config_dir, const std::string& data_ref,
                             std::vector<int>* world_sizes = nullptr);

}  // namespace trm::coordinator
