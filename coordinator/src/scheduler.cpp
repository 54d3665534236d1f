#include "trm/coordinator/scheduler.h"

#include <algorithm>

namespace trm::coordinator {

std::optional<std::vector<RankGroup>> PlaceRanks(int world_size, std::vector<FreeSlots> workers) {
  if (world_size <= 0) return std::nullopt;
  workers.erase(std::remove_if(workers.begin(), workers.end(), [](const FreeSlots& w) { return w.free <= 0; }),
                workers.end());
  std::sort(workers.begin(), workers.end(), [](const FreeSlots& a, const FreeSlots& b) {
    if (a.free != b.free) return a.free > b.free;
    return a.worker_id < b.worker_id;
  });
  // One worker that holds the whole job, if any (the smallest such, to keep big holes free).
  const FreeSlots* single = nullptr;
  for (const auto& w : workers) {
    if (w.free >= world_size && w.has_ports && (!single || w.free < single->free)) single = &w;
  }
  std::vector<RankGroup> out;
  if (single) {
    RankGroup g{single->worker_id, {}};
    for (int r = 0; r < world_size; ++r) g.ranks.push_back(r);
    out.push_back(std::move(g));
    return out;
  }
  // Rank 0's worker first: the largest one with ports.
  auto first = std::find_if(workers.begin(), workers.end(), [](const FreeSlots& w) { return w.has_ports; });
  if (first == workers.end()) return std::nullopt;
  std::rotate(workers.begin(), first, first + 1);
  int next = 0;
  for (const auto& w : workers) {
    if (next == world_size) break;
    RankGroup g{w.worker_id, {}};
    for (int i = 0; i < w.free && next < world_size; ++i) g.ranks.push_back(next++);
    out.push_back(std::move(g));
  }
  if (next < world_size) return std::nullopt;
  return out;
}

}  // namespace trm::coordinator
