// trmctl, the user CLI of the control plane, as a library: `Run` parses the command line,
// connects through a caller-supplied factory and runs one command. The RPCs go through the
// generated StubInterfaces, so tests drive the same code against in-process fakes.
#pragma once

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "trm/common/error.h"
#include "trm/v1/trm.grpc.pb.h"

namespace trm::cli {

// Bad command-line usage (unknown flag, missing value, bad local config): main exits 2 on it.
class UsageError : public Error {
 public:
  explicit UsageError(const std::string& message) : Error(Code::kInvalidArgument, message) {}
};

// A failed RPC (the server's message is kept): main exits 1 on it whatever its code, because the
// command line itself was usable.
class RpcError : public Error {
 public:
  RpcError(Code code, const std::string& message) : Error(code, message) {}
};

struct Stubs {
  std::shared_ptr<v1::JobService::StubInterface> jobs;
  std::shared_ptr<v1::DatasetService::StubInterface> datasets;
};
// Makes the stubs for a coordinator address (main: MakeChannel; tests: an in-process server).
using ConnectFn = std::function<Stubs(const std::string& address)>;

struct Io {
  std::ostream* out;
  std::ostream* err;
  bool out_is_tty = false;  // progress is redrawn in place only on a terminal
};

// Runs `trmctl args...` (args without the program name). Returns the exit status of a command
// that completed (0, or 1 for a watched job that failed); throws UsageError / RpcError /
// trm::Error otherwise.
int Run(const std::vector<std::string>& args, const ConnectFn& connect, const Io& io);

// The text of `trmctl --help` / `trmctl CMD --help`; empty command = the overview.
std::string Usage(const std::string& command);

// Exit status for an exception escaping Run (2 = unusable input), per docs/error-policy.md.
int ExitCodeFor(const std::exception& e);

// `trmctl completion bash`: a bash completion function over every command and its flags.
std::string BashCompletion();

}  // namespace trm::cli
