// The benchmark presets of shared/reference/trm_ref.py (PRESETS), as model configurations.
#pragma once

#include <string>

#include "trm/model/config.h"

namespace trm::bench {

// tiny | language | chat; float32, rope, causal, expansion 4, halt_exploration_prob 0.1.
model::ArchConfig PresetConfig(const std::string& name);
double PeakRssMb();

}  // namespace trm::bench
