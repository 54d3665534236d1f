// trm-worker's command line.
#pragma once

#include <string>
#include <vector>

#include "trm/agent/agent.h"

namespace trm::agent {

struct WorkerCommandLine {
  std::string coordinator;      // HOST:PORT
  std::string metrics_listen;   // empty: no Prometheus endpoint
  AgentOptions agent;
};

// Throws kInvalidArgument naming the flag. Fills the defaults: id (persisted in
// work-dir/worker_id), train binary next to this executable, one CPU slot.
WorkerCommandLine ParseWorkerCommandLine(const std::vector<std::string>& args);

// hostname + "-" + 6 random hex characters, created once and kept in work_dir/worker_id so a
// restarted worker is the same worker to the coordinator.
std::string PersistentWorkerId(const std::string& work_dir);

extern const char* const kWorkerUsage;

}  // namespace trm::agent
