// RankProcess lives in trm_common (the worker agent spawns ranks too).
#pragma once
#include "trm/common/rank_process.h"
namespace trm::launch {
using trm::RankProcess;
using trm::SpawnSpec;
}  // namespace trm::launch
