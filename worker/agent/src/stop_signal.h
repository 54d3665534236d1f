// An attempt's "stop" (the coordinator's order, the worker shutting down, a failure): raised
// once with a reason, seen by the rank supervisor and the checkpoint publisher, and waited on
// (bounded, on the agent's clock) by retry backoffs. Thread-safe.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>

#include "trm/agent/clock.h"

namespace trm::agent {

class StopSignal {
 public:
  explicit StopSignal(Clock* clock) : clock_(clock) {}

  // The first reason sticks; false when the stop was raised already. `drain` (a preemption):
  // the ranks stop, but checkpoints they write are still uploaded; `grace_ms` >= 0 replaces the
  // attempt's SIGTERM -> SIGKILL grace.
  bool Raise(const std::string& reason, bool drain = false, int64_t grace_ms = -1) {
    std::lock_guard<std::mutex> lock(mu_);
    if (raised_) return false;
    raised_ = true;
    reason_ = reason;
    drain_ = drain;
    grace_ms_ = grace_ms;
    cv_.notify_all();
    return true;
  }
  bool drain() const {
    std::lock_guard<std::mutex> lock(mu_);
    return raised_ && drain_;
  }
  int64_t grace_ms() const {
    std::lock_guard<std::mutex> lock(mu_);
    return grace_ms_;
  }
  bool raised() const {
    std::lock_guard<std::mutex> lock(mu_);
    return raised_;
  }
  std::string reason() const {
    std::lock_guard<std::mutex> lock(mu_);
    return reason_;
  }
  // Waits up to `d` of the clock; true when the stop is raised.
  bool WaitFor(std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> lock(mu_);
    return clock_->WaitFor(lock, cv_, d, [&] { return raised_; });
  }
  // The same, but a draining stop does not count: uploads it keeps retrying.
  bool WaitForHardStop(std::chrono::milliseconds d) {
    std::unique_lock<std::mutex> lock(mu_);
    return clock_->WaitFor(lock, cv_, d, [&] { return raised_ && !drain_; });
  }

 private:
  Clock* clock_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool drain_ = false;
  int64_t grace_ms_ = -1;
  bool raised_ = false;
  std::string reason_;
};

}  // namespace trm::agent
