// What the command handlers share inside trm_cli: the parsed flags, the stubs, the output.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <utility>

#include "args.h"
#include "trm/cli/cli.h"

namespace trm::cli {

class Context {
 public:
  Context(ConnectFn connect, std::string address, Io io, std::chrono::milliseconds timeout)
      : connect_(std::move(connect)), address_(std::move(address)), io(io), timeout(timeout) {}
  // Connects on first use, so a command line that fails local checks never dials out.
  v1::JobService::StubInterface* jobs() const { return Connected().jobs.get(); }
  v1::DatasetService::StubInterface* datasets() const { return Connected().datasets.get(); }

 private:
  const Stubs& Connected() const {
    if (!stubs_) stubs_ = connect_(address_);
    return *stubs_;
  }
  ConnectFn connect_;
  std::string address_;
  mutable std::optional<Stubs> stubs_;

 public:
  Io io;
  std::chrono::milliseconds timeout;  // unary RPC deadline (--timeout-s)
};

// One per command; they return the exit status and throw on errors.
int RunSubmit(const Args& args, const Context& ctx);
int RunList(const Args& args, const Context& ctx);
int RunStatus(const Args& args, const Context& ctx);
int RunCancel(const Args& args, const Context& ctx);
int RunCheckpoints(const Args& args, const Context& ctx);
int RunWorkers(const Args& args, const Context& ctx);
int RunWatch(const Args& args, const Context& ctx);
int RunLogs(const Args& args, const Context& ctx);
int RunPull(const Args& args, const Context& ctx);
int RunEval(const Args& args, const Context& ctx);
int RunMetrics(const Args& args, const Context& ctx);
int RunDatasetPush(const Args& args, const Context& ctx);
int RunDatasetList(const Args& args, const Context& ctx);
int RunAudit(const Args& args, const Context& ctx);
int RunQueue(const Args& args, const Context& ctx);
int RunReloadTokens(const Args& args, const Context& ctx);
int RunBackup(const Args& args, const Context& ctx);

}  // namespace trm::cli
