// Where a rank's stdout and stderr go: line by line into its log file (--log-dir), to the
// launcher's console (plain, or "[rank N] "-prefixed with --tee), and always into a bounded tail
// the failure report shows.
#pragma once

#include <poll.h>

#include <deque>
#include <string>
#include <vector>

#include "unique_fd.h"

namespace trm::launch {

struct OutputRoute {
  std::string log_path;  // empty: no log file
  bool console = true;   // copy lines to the launcher's stdout/stderr (each to its own)
  std::string prefix;    // put before each console line
  size_t tail_lines = 40;
};

// Not thread-safe; owned by the supervision loop.
class RankOutput {
 public:
  // Takes the read ends of the rank's stdout/stderr pipes; creates/truncates the log file
  // (kIoError naming it when that fails).
  RankOutput(UniqueFd out, UniqueFd err, OutputRoute route);

  // Adds a pollfd for every stream still open; `owner` gets this object per added entry.
  void AddPollFds(std::vector<pollfd>& fds, std::vector<RankOutput*>& owner);
  // Reads what `fd` has without blocking (bounded per call so one chatty rank cannot starve the
  // loop) and closes it at EOF.
  void OnReadable(int fd);
  // Reads what both pipes hold now, without waiting (a rank that just exited: its last words).
  void ReadAvailable();
  bool open() const { return out_.fd.valid() || err_.fd.valid(); }
  // Flushes partial lines and closes the streams (e.g. a leftover process still holds a pipe).
  void Close();

  std::vector<std::string> Tail() const { return {tail_.begin(), tail_.end()}; }
  const std::string& log_path() const { return route_.log_path; }

 private:
  struct Stream {
    UniqueFd fd;
    int console_fd;
    std::string partial;
  };
  void Emit(const Stream& s, const std::string& line);
  void CloseStream(Stream& s);

  OutputRoute route_;
  UniqueFd log_;
  bool log_failed_ = false;
  Stream out_, err_;
  std::deque<std::string> tail_;
};

}  // namespace trm::launch
