// One-line progress bar with rate for long builds, on stderr. Internal.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

namespace trm::data::internal {

class ProgressBar {
 public:
  // Disabled: every call is a no-op.
  ProgressBar(bool enabled, uint64_t total_bytes);
  // Redraws at most 5 times a second.
  void Update(uint64_t bytes, uint64_t records);
  // Clears the line.
  void Finish();

 private:
  bool enabled_;
  uint64_t total_;
  std::chrono::steady_clock::time_point start_, last_;
  bool drawn_ = false;
};

}  // namespace trm::data::internal
