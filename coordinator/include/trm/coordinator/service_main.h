// What `trm-coordinator` does, as library functions so they are tested without a process: its
// command line, and running the service (with `--standalone`'s local worker) until a signal.
#pragma once

#include <string>
#include <vector>

#include "trm/coordinator/server.h"

namespace trm::coordinator {

struct CommandLine {
  ServerOptions server;
  bool help = false;
  bool standalone = false;  // also run a local trm-worker under DATA_DIR/worker
  int cpu_slots = 2;
  std::string port_file;           // the port actually bound is written here (tests use port 0)
  std::string worker_binary;       // default: trm-worker beside this executable
  std::string worker_secret_file;  // also handed to the local worker
  std::string restore;             // --restore: a backup extracted into --data-dir before serving
};

// Parses argv[1..]; reads the token and secret files it names. Throws kInvalidArgument naming
// the flag (or kNotFound / kIoError naming a file).
CommandLine ParseCommandLine(const std::vector<std::string>& args);

std::string Usage();

// Serves until SIGINT / SIGTERM (taken through a signalfd by the calling thread; every thread
// started later inherits the blocked mask) or until the local worker exits, then stops the
// worker (SIGTERM, SIGKILL after a grace period, given up on after that: bounded) and the server.
// Returns the process exit code (0, or 1 with the error on stderr).
int RunService(const CommandLine& cl);

}  // namespace trm::coordinator
