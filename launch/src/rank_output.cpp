#include "rank_output.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "trm/common/error.h"

namespace trm::launch {
namespace {

// Whole lines in one write() each, so ranks sharing the console do not split each other's lines.
bool WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = ::write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

RankOutput::RankOutput(OutputRoute route) : route_(std::move(route)) {
  if (!route_.log_path.empty()) {
    log_.reset(::open(route_.log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644));
    if (!log_.valid()) FileError("--log-dir: cannot create " + route_.log_path, errno);
  }
}

void RankOutput::Write(OutputStream stream, const std::string& line) {
  if (log_.valid() && !log_failed_ && !WriteAll(log_.get(), line + "\n")) {
    log_failed_ = true;
    spdlog::warn("cannot write {}: {}; the rest of this rank's log is lost", route_.log_path, std::strerror(errno));
  }
  // A closed console (EPIPE; SIGPIPE is ignored) must not stop the run.
  if (route_.console) (void)WriteAll(stream == OutputStream::kStdout ? 1 : 2, route_.prefix + line + "\n");
}

}  // namespace trm::launch
