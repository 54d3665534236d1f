// trm-train's main makes the process-wide settings (ConfigureTrainingProcess) before it builds
// its Trainer; a test that builds Trainers in one process does the same before each, as each
// stands for a process of its own.
#pragma once

#include "trm/worker/trainer.h"

namespace trm::worker {

inline TrainConfig AtProcessStart(TrainConfig config, int rank = 0) {
  ConfigureTrainingProcess(config, rank);
  return config;
}

}  // namespace trm::worker
