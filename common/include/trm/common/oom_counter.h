// How many processes the kernel's OOM killer has killed, where a rank's SIGKILL can be told apart
// from ours: a rank killed by SIGKILL that the worker did not send, while this count went up, was
// (most likely) killed for memory. RankGroup classifies exits with it (rank_group.h).
#pragma once

#include <cstdint>
#include <string>

namespace trm {

// The OOM kill count of this process's memory cgroup (v2 memory.events, v1 memory.oom_control),
// else the machine's (/proc/vmstat, Linux 4.13+); -1 when none can be read. `root` replaces "/"
// (tests). Never throws.
int64_t ReadOomKillCount(const std::string& root = "");

}  // namespace trm
