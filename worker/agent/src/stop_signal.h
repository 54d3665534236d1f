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

  // The first reason sticks; false when the stop was raised already.
  bool Raise(const std::string& reason) {
    std::lock_guard<std::mutex> lock(mu_);
    if (raised_) return false;
    raised_ = true;
    reason_ = reason;
    cv_.notify_all();
    return true;
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

 private:
  Clock* clock_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  bool raised_ = false;
  std::string reason_;
};

}  // namespace trm::agent
