#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>

#include "trm/common/rank_group.h"

namespace trm {

std::string SignalName(int sig) {
  const char* abbrev = ::sigabbrev_np(sig);
  return abbrev ? "SIG" + std::string(abbrev) : "signal " + std::to_string(sig);
}

ProcessExit DescribeWaitStatus(int wait_status) {
  ProcessExit e;
  e.wait_status = wait_status;
  if (WIFEXITED(wait_status)) {
    e.exit_code = WEXITSTATUS(wait_status);
    e.what = "exited with code " + std::to_string(e.exit_code);
  } else if (WIFSIGNALED(wait_status)) {
    e.signal = WTERMSIG(wait_status);
    e.core_dumped = WCOREDUMP(wait_status);
    e.what = "killed by " + SignalName(e.signal) + (e.core_dumped ? " (core dumped)" : "");
  } else {
    e.what = "ended with wait status " + std::to_string(wait_status);
  }
  return e;
}

OutputCapture::OutputCapture(UniqueFd out, UniqueFd err, OutputLimits limits, LineSink sink)
    : limits_(limits), sink_(std::move(sink)) {
  out_.fd = std::move(out);
  out_.kind = OutputStream::kStdout;
  err_.fd = std::move(err);
  err_.kind = OutputStream::kStderr;
  for (Stream* s : {&out_, &err_}) {
    if (s->fd.valid()) ::fcntl(s->fd.get(), F_SETFL, ::fcntl(s->fd.get(), F_GETFL) | O_NONBLOCK);
  }
}

void OutputCapture::AddPollFds(std::vector<pollfd>& fds) const {
  for (const Stream* s : {&out_, &err_}) {
    if (s->fd.valid()) fds.push_back({s->fd.get(), POLLIN, 0});
  }
}

bool OutputCapture::OnReadable(int fd) {
  for (Stream* s : {&out_, &err_}) {
    if (s->fd.valid() && s->fd.get() == fd) {
      Read(*s);
      return true;
    }
  }
  return false;
}

void OutputCapture::ReadAvailable() {
  for (Stream* s : {&out_, &err_}) {
    if (s->fd.valid()) Read(*s);
  }
}

void OutputCapture::Close() {
  // Whatever is still buffered in the pipes is part of the process's story: read it first.
  for (Stream* s : {&out_, &err_}) {
    if (s->fd.valid()) Read(*s);
    if (s->fd.valid()) CloseStream(*s);
  }
}

void OutputCapture::Read(Stream& s) {
  char buf[16384];
  size_t total = 0;
  while (total < limits_.max_read_per_call) {
    const ssize_t n = ::read(s.fd.get(), buf, sizeof buf);
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
      EmitLongPieces(s);
      Emit(s.kind, s.partial);
      s.partial.clear();
      start = i + 1;
    }
    s.partial.append(buf + start, static_cast<size_t>(n) - start);
    EmitLongPieces(s);
  }
}

void OutputCapture::EmitLongPieces(Stream& s) {
  // A line longer than max_line is delivered in pieces, so the buffer stays bounded; what is
  // left (at most max_line) waits for the rest of its line.
  size_t done = 0;
  while (s.partial.size() - done > limits_.max_line) {
    Emit(s.kind, s.partial.substr(done, limits_.max_line));
    done += limits_.max_line;
  }
  s.partial.erase(0, done);
}

void OutputCapture::CloseStream(Stream& s) {
  if (!s.partial.empty()) {
    Emit(s.kind, s.partial);
    s.partial.clear();
  }
  s.fd.reset();
}

void OutputCapture::Emit(OutputStream kind, const std::string& line) {
  if (limits_.tail_lines > 0) {
    tail_.push_back(line.size() > limits_.tail_line_chars ? line.substr(0, limits_.tail_line_chars) + "..." : line);
    while (tail_.size() > limits_.tail_lines) tail_.pop_front();
  }
  if (sink_) sink_(kind, line);
}

}  // namespace trm
