// The agent's clock, injectable as the coordinator's is (CoordinatorOptions::now_ms): every
// time-driven wait of the agent (heartbeat and report intervals, retry backoff, the publisher's
// tick) goes through it, so tests drive time instead of sleeping. The ranks' stop escalation
// (RankGroup) keeps real time: it waits on real processes.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>

namespace trm::agent {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t SteadyMs() = 0;  // monotonic, for intervals and deadlines
  virtual int64_t UnixMs() = 0;    // wall time, for what is reported (phase times, created_unix_ms)
  // With `lock` held on cv's mutex: waits until pred() holds (re-checked when cv is notified)
  // or `d` of this clock passed; returns pred().
  virtual bool WaitFor(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, std::chrono::milliseconds d,
                       const std::function<bool()>& pred) = 0;
};

// steady_clock and system_clock.
std::shared_ptr<Clock> SystemClock();

}  // namespace trm::agent
