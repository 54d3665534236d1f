// Exit codes of trm-train, and the failure kinds trm-worker reports for them (shown by trmctl
// status). One table so that the trainer, the worker and the docs agree (docs/error-policy.md).
#pragma once

#include <string>

namespace trm {

constexpr int kExitOk = 0;
constexpr int kExitError = 1;        // anything not below
constexpr int kExitBadInput = 2;     // bad config, missing or corrupt data / checkpoint
constexpr int kExitOutOfMemory = 3;  // an allocation failed (host or GPU)
constexpr int kExitDiskFull = 4;     // no space, quota or file size limit while writing
constexpr int kExitTimeout = 5;      // a collective or rendezvous ran past its timeout
constexpr int kExitCancelled = 130;  // stopped by SIGINT / SIGTERM (one rank) / SIGUSR1 after a checkpoint

// "bad_input" | "oom" | "disk_full" | "timeout" | "exit_code" (any other non-zero code).
inline std::string FailureKindOfExitCode(int code) {
  switch (code) {
    case kExitBadInput: return "bad_input";
    case kExitOutOfMemory: return "oom";
    case kExitDiskFull: return "disk_full";
    case kExitTimeout: return "timeout";
    default: return "exit_code";
  }
}

}  // namespace trm
