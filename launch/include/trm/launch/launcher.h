// The launcher: runs LaunchOptions::nproc_per_node ranks of a program on this node, supervises
// them with the other nodes' launchers, stops and restarts the whole group when a rank fails
// (docs/launch.md).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "trm/launch/options.h"

namespace trm::launch {

// Why a generation (one attempt of the whole group) failed: the first failure any node
// reported. A failure of the launcher machinery itself (a node lost, a signal) has rank -1.
struct Failure {
  int generation = 0;
  int node_rank = 0;
  int global_rank = -1;
  int local_rank = -1;
  int exit_code = -1;  // >= 0 when the rank exited
  int signal = 0;      // > 0 when a signal killed it
  std::string what;    // e.g. "exited with code 3", "killed by SIGKILL", "launcher got SIGTERM"
  std::string log_path;               // the rank's log file, when --log-dir
  std::vector<std::string> log_tail;  // last lines of the rank's output (stdout and stderr)
  bool abort = false;                 // no restart: a launcher was told to stop
  // Elastic: the generation ended because a node joined; the next one runs with it, and that
  // restart is not counted against --max-restarts.
  bool resize = false;
};

struct LaunchResult {
  // 0: every rank of the last generation exited 0; 1: a failure with no restart left (or the
  // rendezvous broke); 128+N: this launcher got signal N and stopped the run.
  int exit_code = 0;
  int generations = 0;             // attempts run (by this node)
  int restarts = 0;                // of them, restarts after a failure (set when the run failed)
  std::optional<Failure> failure;  // the last generation's first failure, when it failed
};

// Runs the job to completion. Blocking, and every wait inside is bounded: ranks are stopped
// (SIGTERM, SIGKILL after grace_period_s) and reaped before this returns or throws, so no rank
// outlives it. Once the rendezvous is joined and until it returns, it owns the process's
// SIGINT, SIGTERM, SIGHUP, SIGQUIT (stop the run, exit 128+N), SIGCHLD and SIGPIPE (ignored)
// dispositions, restoring them on return; one call per process at a time, from a thread that
// outlives the ranks (PR_SET_PDEATHSIG follows the forking thread). Throws trm::Error for
// unusable input (kInvalidArgument, kNotFound: PROGRAM, inconsistent nodes; kIoError: --log-dir) and for
// a broken rendezvous (kUnavailable, kDeadlineExceeded).
LaunchResult RunLaunch(const LaunchOptions& options);

// The multi-line report main prints after "error: " when a run failed: who failed first (global
// rank, local rank, node), how, and the tail of its log.
std::string DescribeFailure(const LaunchResult& result, const LaunchOptions& options);

}  // namespace trm::launch
