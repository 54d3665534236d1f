#include "trm/worker/checkpoint_list.h"

#include <algorithm>
#include <filesystem>

namespace trm::worker {
namespace fs = std::filesystem;

bool ParseStepDirName(const std::string& name, int64_t* step) {
  if (name.rfind("step_", 0) != 0 || name.size() == 5 || name.size() > 5 + 18) return false;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    v = v * 10 + (name[i] - '0');
  }
  *step = v;
  return true;
}

std::vector<std::pair<int64_t, std::string>> ListCheckpoints(const std::string& run_dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return out;
  for (fs::directory_iterator it(run_dir, ec), end; !ec && it != end; it.increment(ec)) {
    int64_t step;
    std::error_code ec2;
    if (it->is_directory(ec2) && ParseStepDirName(it->path().filename().string(), &step) &&
        (fs::exists(it->path() / "manifest.json", ec2) || fs::exists(it->path() / "state.json", ec2))) {
      out.emplace_back(step, it->path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace trm::worker
