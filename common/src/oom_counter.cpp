#include "trm/common/oom_counter.h"

#include <fstream>

namespace trm {
namespace {

// The value of the "oom_kill N" line of a key-value file, or -1.
int64_t OomKillIn(const std::string& path) {
  std::ifstream in(path);
  std::string key;
  int64_t value = 0;
  while (in >> key >> value) {
    if (key == "oom_kill") return value;
  }
  return -1;
}

}  // namespace

int64_t ReadOomKillCount(const std::string& root) {
  std::ifstream cg(root + "/proc/self/cgroup");
  std::string line;
  while (std::getline(cg, line)) {
    // "0::/path" (v2) or "4:memory:/path" (v1).
    const size_t a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    int64_t n = -1;
    if (controllers.empty()) n = OomKillIn(root + "/sys/fs/cgroup" + path + "/memory.events");
    else if (controllers == "memory") n = OomKillIn(root + "/sys/fs/cgroup/memory" + path + "/memory.oom_control");
    if (n >= 0) return n;
  }
  return OomKillIn(root + "/proc/vmstat");
}

}  // namespace trm
