// trm-launch's command line: torchrun's interface (docs/launch.md), parsed into LaunchOptions.
#pragma once

#include <string>
#include <vector>

namespace trm::launch {

struct LaunchOptions {
  int nnodes = 1;      // the most nodes (--nnodes N, or MAX of MIN:MAX)
  int min_nnodes = 1;  // the fewest a generation may run on: MIN of --nnodes MIN:MAX, else nnodes
  int nproc_per_node = 1;
  int node_rank = 0;
  // --rdzv-endpoint HOST[:PORT]; rdzv_host is empty when the flag was not given.
  std::string rdzv_host;
  int rdzv_port = 29400;  // torchrun's default rendezvous port
  std::string rdzv_id = "none";
  bool standalone = false;
  int max_restarts = 0;
  std::string log_dir;  // empty: ranks' output goes to the launcher's stdout/stderr
  bool tee = false;
  double grace_period_s = 5;   // SIGTERM -> SIGKILL
  double rdzv_timeout_s = 60;  // every wait on another node
  // Elastic: once MIN nodes joined, how long the first generation waits for more (torchrun's
  // last_call_timeout).
  double rdzv_last_call_s = 30;
  bool help = false;           // -h / --help: print LaunchUsage() and exit 0
  std::string program;
  std::vector<std::string> args;  // PROGRAM's arguments, verbatim

  bool elastic() const { return min_nnodes < nnodes; }
};

// Parses the arguments after argv[0]. Options end at the first argument that is not an option
// (PROGRAM) or at "--". Throws trm::Error(kInvalidArgument) naming the flag and what was
// expected: unknown flags, bad numbers, a missing PROGRAM, --node-rank >= --nnodes, a malformed
// --rdzv-endpoint, --nnodes > 1 without --rdzv-endpoint, ...
LaunchOptions ParseLaunchArgs(const std::vector<std::string>& args);

std::string LaunchUsage();

}  // namespace trm::launch
