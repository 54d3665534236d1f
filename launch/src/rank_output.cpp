#include "rank_output.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "trm/common/error.h"

namespace trm::launch {
namespace {

constexpr size_t kMaxLine = 64 * 1024;      // a longer line is emitted in pieces
constexpr size_t kMaxTailLine = 1000;       // the report keeps this much of each line
constexpr size_t kMaxReadPerCall = 256 * 1024;

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

RankOutput::RankOutput(UniqueFd out, UniqueFd err, OutputRoute route) : route_(std::move(route)) {
  out_.fd = std::move(out);
  out_.console_fd = 1;
  err_.fd = std::move(err);
  err_.console_fd = 2;
  for (Stream* s : {&out_, &err_}) {
    if (s->fd.valid()) ::fcntl(s->fd.get(), F_SETFL, ::fcntl(s->fd.get(), F_GETFL) | O_NONBLOCK);
  }
  if (!route_.log_path.empty()) {
    log_.reset(::open(route_.log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0644));
    if (!log_.valid()) IoError("--log-dir: cannot create " + route_.log_path + ": " + std::strerror(errno));
  }
}

void RankOutput::AddPollFds(std::vector<pollfd>& fds, std::vector<RankOutput*>& owner) {
  for (Stream* s : {&out_, &err_}) {
    if (!s->fd.valid()) continue;
    fds.push_back({s->fd.get(), POLLIN, 0});
    owner.push_back(this);
  }
}

void RankOutput::OnReadable(int fd) {
  Stream& s = fd == out_.fd.get() ? out_ : err_;
  if (!s.fd.valid() || s.fd.get() != fd) return;
  char buf[16384];
  size_t total = 0;
  while (total < kMaxReadPerCall) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
    if (n <= 0) {  // EOF (or an error, which ends the stream the same way)
      CloseStream(s);
      return;
    }
    total += static_cast<size_t>(n);
    size_t start = 0;
    for (size_t i = 0; i < static_cast<size_t>(n); ++i) {
      if (buf[i] != '\n') continue;
      s.partial.append(buf + start, i - start);
      Emit(s, s.partial);
      s.partial.clear();
      start = i + 1;
    }
    s.partial.append(buf + start, static_cast<size_t>(n) - start);
    if (s.partial.size() >= kMaxLine) {
      Emit(s, s.partial);
      s.partial.clear();
    }
  }
}

void RankOutput::ReadAvailable() {
  for (Stream* s : {&out_, &err_}) {
    if (s->fd.valid()) OnReadable(s->fd.get());
  }
}

void RankOutput::Close() {
  // Whatever is still buffered in the pipes is part of the rank's story: read it first.
  for (Stream* s : {&out_, &err_}) {
    if (s->fd.valid()) OnReadable(s->fd.get());
    if (s->fd.valid()) CloseStream(*s);
  }
}

void RankOutput::CloseStream(Stream& s) {
  if (!s.partial.empty()) {
    Emit(s, s.partial);
    s.partial.clear();
  }
  s.fd.reset();
}

void RankOutput::Emit(const Stream& s, const std::string& line) {
  tail_.push_back(line.size() > kMaxTailLine ? line.substr(0, kMaxTailLine) + "..." : line);
  while (tail_.size() > route_.tail_lines) tail_.pop_front();
  if (log_.valid() && !log_failed_ && !WriteAll(log_.get(), line + "\n")) {
    log_failed_ = true;
    spdlog::warn("cannot write {}: {}; the rest of this rank's log is lost", route_.log_path, std::strerror(errno));
  }
  // A closed console (EPIPE; SIGPIPE is ignored) must not stop the run.
  if (route_.console) (void)WriteAll(s.console_fd, route_.prefix + line + "\n");
}

}  // namespace trm::launch
