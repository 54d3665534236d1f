// Where a rank's output lines go (RankGroup splits them, trm/common/rank_group.h): into its log
// file (--log-dir) and to the launcher's console (plain, or "[rank N] "-prefixed with --tee).
#pragma once

#include <string>

#include "trm/common/rank_group.h"
#include "unique_fd.h"

namespace trm::launch {

struct OutputRoute {
  std::string log_path;  // empty: no log file
  bool console = true;   // copy lines to the launcher's stdout/stderr (each to its own)
  std::string prefix;    // put before each console line
};

// A LineSink for one rank. Not thread-safe; owned by the supervision loop.
class RankOutput {
 public:
  // Creates/truncates the log file (kIoError naming --log-dir when that fails).
  explicit RankOutput(OutputRoute route);

  void Write(OutputStream stream, const std::string& line);
  LineSink Sink() {
    return [this](OutputStream s, const std::string& line) { Write(s, line); };
  }
  const std::string& log_path() const { return route_.log_path; }

 private:
  OutputRoute route_;
  UniqueFd log_;
  bool log_failed_ = false;
};

}  // namespace trm::launch
