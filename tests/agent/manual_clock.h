// A Clock (trm/agent/clock.h) that moves only when the test says so, for the agent's
// time-driven behaviour (heartbeat and report intervals, retry backoff) without sleeping.
#pragma once

#include <atomic>
#include <chrono>

#include "trm/agent/clock.h"

namespace trm::agent::testing {

class ManualClock : public Clock {
 public:
  int64_t SteadyMs() override { return now_; }
  int64_t UnixMs() override { return kEpochMs + now_; }
  bool WaitFor(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, std::chrono::milliseconds d,
               const std::function<bool()>& pred) override {
    const int64_t until = now_ + d.count();
    while (!pred()) {
      if (now_ >= until) return false;
      // Woken by cv as usual; the short real wait only notices Advance() (it never decides).
      cv.wait_for(lock, std::chrono::milliseconds(2));
    }
    return true;
  }
  void Advance(std::chrono::milliseconds d) { now_ += d.count(); }

 private:
  static constexpr int64_t kEpochMs = 1700000000000;
  std::atomic<int64_t> now_{0};
};

}  // namespace trm::agent::testing
