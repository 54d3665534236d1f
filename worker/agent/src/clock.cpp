#include "trm/agent/clock.h"

namespace trm::agent {
namespace {

class RealClock : public Clock {
 public:
  int64_t SteadyMs() override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }
  int64_t UnixMs() override {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
  }
  bool WaitFor(std::unique_lock<std::mutex>& lock, std::condition_variable& cv, std::chrono::milliseconds d,
               const std::function<bool()>& pred) override {
    return cv.wait_for(lock, d, pred);
  }
};

}  // namespace

std::shared_ptr<Clock> SystemClock() {
  static const auto clock = std::make_shared<RealClock>();  // stateless
  return clock;
}

}  // namespace trm::agent
