// Placement: which workers run the ranks of a job. Pure functions, so the policy is tested on
// its own.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace trm::coordinator {

struct FreeSlots {
  std::string worker_id;
  int free = 0;
  bool has_ports = false;  // reported free ports (rank 0's host needs one)
};

struct RankGroup {
  std::string worker_id;
  std::vector<int> ranks;  // consecutive global ranks
};

// Packs `world_size` ranks onto as few workers as possible (ranks on one worker communicate
// fastest), most free slots first, ties by id so placement is deterministic. Rank 0 goes to a
// worker that reported free ports. nullopt when the ranks do not fit now.
std::optional<std::vector<RankGroup>> PlaceRanks(int world_size, std::vector<FreeSlots> workers);

}  // namespace trm::coordinator
