// An attempt's outgoing events (logs, metrics, exits) waiting for ReportEvents. Bounded: when
// full, the oldest log lines go first, then the oldest metrics; exits are never dropped (the
// coordinator needs them to finish the job). Log lines are cut to 2 KiB and rate-limited per
// rank, so one chatty rank cannot flood the coordinator (its log file keeps everything).
// Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "trm/v1/trm.pb.h"

namespace trm::agent {

struct EventBufferLimits {
  size_t max_events = 20000;
  size_t max_line_bytes = 2048;
  double log_lines_per_s = 200;  // per rank, sustained
  double log_burst = 2000;
};

class EventBuffer {
 public:
  explicit EventBuffer(EventBufferLimits limits = {}) : lim_(limits) {}

  void AddLog(int rank, const std::string& line);
  void Add(v1::WorkerEvent event);
  // Up to `max` events from the front (removed); PutBack returns them after a failed delivery.
  std::vector<v1::WorkerEvent> Take(size_t max);
  void PutBack(std::vector<v1::WorkerEvent> events);
  size_t size() const;
  uint64_t dropped() const;

 private:
  struct Bucket {
    double tokens = -1;  // < 0: not started (full)
    std::chrono::steady_clock::time_point last{};
    uint64_t dropped = 0;
  };
  void PushLocked(v1::WorkerEvent event);

  EventBufferLimits lim_;
  mutable std::mutex mu_;
  std::deque<v1::WorkerEvent> q_;
  std::map<int, Bucket> buckets_;
  uint64_t dropped_ = 0;
};

}  // namespace trm::agent
