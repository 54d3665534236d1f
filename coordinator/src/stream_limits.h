// Bounds on what clients can make the coordinator hold or absorb: concurrent long-lived streams
// (each holds a server thread for its whole life) and the event rate of each worker (each event
// is a database write). Over a bound a call fails RESOURCE_EXHAUSTED; clients retry later (the
// worker keeps its events buffered). Internal. Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "trm/common/error.h"

namespace trm::coordinator {

// At most `max` holders at a time.
class StreamLimit {
 public:
  StreamLimit(std::string what, int max) : what_(std::move(what)), max_(max) {}

  class Slot {
   public:
    explicit Slot(StreamLimit* l) : l_(l) {}
    Slot(const Slot&) = delete;
    Slot& operator=(const Slot&) = delete;
    ~Slot() {
      std::lock_guard<std::mutex> lock(l_->mu_);
      --l_->held_;
    }

   private:
    StreamLimit* l_;
  };

  // Throws kResourceExhausted when `max` slots are held.
  Slot Acquire() {
    std::lock_guard<std::mutex> lock(mu_);
    if (held_ >= max_)
      ThrowError(Code::kResourceExhausted, "too many concurrent " + what_ + " (" + std::to_string(max_) +
                                               "); retry later");
    ++held_;
    return Slot(this);
  }
  int held() {
    std::lock_guard<std::mutex> lock(mu_);
    return held_;
  }

 private:
  std::string what_;
  int max_;
  std::mutex mu_;
  int held_ = 0;
};

// A token bucket per key: `rate` tokens a second, up to `burst` saved.
class RateLimit {
 public:
  RateLimit(std::string what, double rate, double burst, std::function<int64_t()> now_ms = nullptr)
      : what_(std::move(what)), rate_(rate), burst_(burst), now_ms_(std::move(now_ms)) {
    if (!now_ms_) {
      now_ms_ = [] {
        return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
            .count();
      };
    }
  }

  // Takes `n` tokens from `key`'s bucket; throws kResourceExhausted (taking none) when it has
  // fewer.
  void Take(const std::string& key, double n) {
    std::lock_guard<std::mutex> lock(mu_);
    const int64_t now = now_ms_();
    auto [it, fresh] = buckets_.try_emplace(key, Bucket{burst_, now});
    Bucket& b = it->second;
    if (!fresh) b.tokens = std::min(burst_, b.tokens + rate_ * static_cast<double>(now - b.at_ms) / 1000.0);
    b.at_ms = now;
    if (n > b.tokens)
      ThrowError(Code::kResourceExhausted, key + ": more than " + std::to_string(static_cast<int64_t>(rate_)) + " " +
                                               what_ + " a second; slow down");
    b.tokens -= n;
  }

 private:
  struct Bucket {
    double tokens;
    int64_t at_ms;
  };
  std::string what_;
  double rate_, burst_;
  std::function<int64_t()> now_ms_;
  std::mutex mu_;
  std::map<std::string, Bucket> buckets_;
};

}  // namespace trm::coordinator
