// Failure records: how a rank ended, in words, and the form the launchers exchange them in.
#pragma once

#include <string>

#include "trm/common/rank_group.h"  // SignalName
#include "trm/launch/launcher.h"

namespace trm::launch {

// "exited with code 3", "killed by SIGKILL", "killed by SIGSEGV (core dumped)" from a waitpid
// status; fills exit_code / signal.
void DescribeStatus(int wait_status, Failure& f);

// JSON text; FailureFromJson throws kDataLoss naming the field on malformed input.
std::string FailureToJson(const Failure& f);
Failure FailureFromJson(const std::string& text);

}  // namespace trm::launch
