// Follows a trainer's metrics.jsonl (one JSON object a line, appended as steps finish; the
// schema is trm/worker/step_metrics.h).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "trm/worker/step_metrics.h"

namespace trm::agent {

using worker::MetricsLine;  // the schema's (step_metrics.h): step, total_steps, eval, every numeric key

// Not thread-safe.
class MetricsTailer {
 public:
  explicit MetricsTailer(std::string path) : path_(std::move(path)) {}

  // New complete lines since the last call (a torn last line waits for its newline). A file that
  // shrank or was replaced is read again from the start; lines at steps already seen are skipped.
  // Malformed lines are skipped with a warning. Missing file: nothing.
  std::vector<MetricsLine> Poll();

  // The training values at `step` merged with the latest evaluation's (for checkpoints).
  std::map<std::string, double> ValuesForCheckpoint(int64_t step) const;
  int64_t last_step() const { return last_train_step_; }
  bool seen_any() const { return last_train_step_ >= 0; }

 private:
  std::string path_;
  uint64_t offset_ = 0;
  ino_t inode_ = 0;
  std::string partial_;
  int64_t last_train_step_ = -1, last_eval_step_ = -1;
  std::map<int64_t, std::map<std::string, double>> by_step_;  // bounded: recent steps
  std::map<std::string, double> last_eval_;
};

}  // namespace trm::agent
