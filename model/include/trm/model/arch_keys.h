// The arch section's keys as a table (common/config_keys.h): ArchConfig::FromJson and Validate
// read it, and so do the coordinator's submission checks and docs/config-reference.md.
#pragma once

#include <vector>

#include "trm/common/config_keys.h"
#include "trm/model/config.h"

namespace trm::model {

const std::vector<ConfigKey<ArchConfig>>& ArchConfigKeys();

}  // namespace trm::model
