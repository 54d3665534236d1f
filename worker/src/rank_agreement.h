// What every rank of a data-parallel run must hold alike (the resolved model, the schedule, the
// dataset's identity), checked once at start. Ranks of several machines each read their own
// config overrides and their own copy of the data; a difference would otherwise surface as
// silently diverging weights, or as collectives of different shapes or counts that hang until
// their timeout. Private to worker/.
#pragma once

#include <c10/core/Device.h>

#include <nlohmann/json.hpp>
#include <string>

#include "trm/worker/collective.h"

namespace trm::worker {

// Collective. Throws InvalidArgument on every rank when any rank's `mine` differs from rank 0's,
// naming `what`, the first differing rank and the differing fields with both values.
void RequireSameOnEveryRank(Collective& comm, c10::Device device, const nlohmann::json& mine, const std::string& what);

}  // namespace trm::worker
