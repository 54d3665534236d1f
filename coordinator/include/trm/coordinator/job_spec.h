// Checking a submitted JobSpec and resolving its training config, before anything is stored.
#pragma once

#include <string>

#include "trm/v1/trm.pb.h"

namespace trm::coordinator {

// Parses spec.config_yaml (or loads spec.config_name from config_dir when no YAML is sent),
// applies the overrides, points data_paths at `data_ref` and validates the whole config with
// the trainer's own reader, plus what only the service knows (world size against the batch).
// Returns the resolved config as JSON text. Throws InvalidArgument naming the field or key.
std::string ResolveJobConfig(const v1::JobSpec& spec, const std::string& config_dir, const std::string& data_ref);

}  // namespace trm::coordinator
