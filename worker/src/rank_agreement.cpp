#include "rank_agreement.h"

#include <torch/torch.h>

#include <vector>

#include "collective_bytes.h"
#include "trm/common/error.h"

namespace trm::worker {
namespace {

using nlohmann::json;

// "a.b: rank 0 has X, rank R has Y" for each leaf where the two differ (objects are walked,
// anything else compared whole).
void Diff(const json& a, const json& b, const std::string& path, int rank, std::vector<std::string>* out) {
  if (a.is_object() && b.is_object()) {
    for (auto it = a.begin(); it != a.end(); ++it) {
      const std::string p = path.empty() ? it.key() : path + "." + it.key();
      Diff(it.value(), b.contains(it.key()) ? b[it.key()] : json(), p, rank, out);
    }
    for (auto it = b.begin(); it != b.end(); ++it) {
      if (!a.contains(it.key())) Diff(json(), it.value(), path.empty() ? it.key() : path + "." + it.key(), rank, out);
    }
    return;
  }
  if (a != b) out->push_back(path + ": rank 0 has " + a.dump() + ", rank " + std::to_string(rank) + " has " + b.dump());
}

}  // namespace

void RequireSameOnEveryRank(Collective& comm, c10::Device device, const json& mine, const std::string& what) {
  const int world = comm.world(), rank = comm.rank();
  if (world == 1) return;
  const std::string own = mine.dump();
  const std::string first = BroadcastString(comm, device, rank == 0 ? own : std::string(), 0);
  // Which ranks differ, summed so that every rank learns it and all fail together.
  at::Tensor differs = torch::zeros({world}, torch::kLong);
  differs[rank] = first == own ? 0 : 1;
  differs = differs.to(device);
  comm.AllReduceSum(differs);
  differs = differs.cpu();
  int bad = -1, count = 0;
  for (int r = 0; r < world; ++r) {
    if (differs[r].item<int64_t>() != 0) {
      if (bad < 0) bad = r;
      ++count;
    }
  }
  if (bad < 0) return;
  // The first differing rank tells everyone its values, so every rank's error names the fields.
  const std::string theirs = BroadcastString(comm, device, rank == bad ? own : std::string(), bad);
  std::vector<std::string> fields;
  Diff(json::parse(first), json::parse(theirs), "", bad, &fields);
  std::string msg = what + " differs between ranks (" + std::to_string(count) + " of " + std::to_string(world) +
                    " ranks differ from rank 0; every rank must run the same config on the same data):";
  for (size_t i = 0; i < fields.size() && i < 8; ++i) msg += (i ? "; " : " ") + fields[i];
  if (fields.size() > 8) msg += "; and " + std::to_string(fields.size() - 8) + " more";
  InvalidArgument(msg);
}

}  // namespace trm::worker
