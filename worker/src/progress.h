// Progress display for long training: a one-line bar on a terminal, one log line every N steps
// otherwise (so CI and log files get no carriage-return noise).
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "trm/worker/trainer.h"

namespace trm::worker {

class ProgressReporter {
 public:
  // mode as TrainerOptions::progress; a disabled reporter (ranks other than 0) prints nothing.
  ProgressReporter(int mode, int64_t log_interval, bool enabled = true);
  void Step(const StepMetrics& m);
  void Message(const std::string& line);  // a log line that does not break the bar
  void Finish();

 private:
  bool enabled_;
  bool bar_;
  int64_t log_interval_;
  bool bar_drawn_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
  int64_t first_step_ = -1;
  double loss_ema_ = -1;
};

}  // namespace trm::worker
