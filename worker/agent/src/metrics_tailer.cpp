#include "metrics_tailer.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>

#include "trm/common/error.h"
#include "trm/common/unique_fd.h"

namespace trm::agent {
namespace fs = std::filesystem;
namespace {

constexpr size_t kKeepSteps = 4096;         // metric lines remembered for checkpoint infos
constexpr size_t kMaxReadPerPoll = 4 << 20;  // a huge backlog is read over several polls
constexpr size_t kMaxLine = 1 << 20;

}  // namespace

std::vector<MetricsLine> MetricsTailer::Poll() {
  std::vector<MetricsLine> out;
  UniqueFd fd(::open(path_.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return out;
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return out;
  if (st.st_ino != inode_ || static_cast<uint64_t>(st.st_size) < offset_) {
    // Rewritten (the trainer trims it atomically on resume): start over; the step filter below
    // keeps already-reported lines from being reported twice.
    inode_ = st.st_ino;
    offset_ = 0;
    partial_.clear();
  }
  std::string data;
  char buf[65536];
  while (data.size() < kMaxReadPerPoll) {
    const ssize_t n = ::pread(fd.get(), buf, sizeof buf, static_cast<off_t>(offset_ + data.size()));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    data.append(buf, static_cast<size_t>(n));
  }
  offset_ += data.size();
  partial_ += data;
  size_t start = 0;
  for (size_t nl; (nl = partial_.find('\n', start)) != std::string::npos; start = nl + 1) {
    const std::string line = partial_.substr(start, nl - start);
    if (line.empty()) continue;
    MetricsLine m;
    try {
      m = worker::ParseMetricsLine(line, path_);
    } catch (const Error& e) {
      spdlog::warn("skipping a malformed line: {}", e.what());
      continue;
    }
    if (m.eval) {
      if (m.step <= last_eval_step_) continue;
      last_eval_step_ = m.step;
      last_eval_ = m.values;
    } else {
      if (m.step <= last_train_step_) continue;
      last_train_step_ = m.step;
      by_step_[m.step] = m.values;
      while (by_step_.size() > kKeepSteps) by_step_.erase(by_step_.begin());
    }
    out.push_back(std::move(m));
  }
  partial_.erase(0, start);
  if (partial_.size() > kMaxLine) partial_.clear();  // not a metrics line; do not grow forever
  return out;
}

std::map<std::string, double> MetricsTailer::ValuesForCheckpoint(int64_t step) const {
  std::map<std::string, double> v;
  if (auto it = by_step_.find(step); it != by_step_.end()) v = it->second;
  for (const auto& [k, x] : last_eval_) {
    if (k != worker::metric_key::kStep) v[k] = x;  // eval keys are eval_*; "step" is the checkpoint's own
  }
  v[worker::metric_key::kStep] = static_cast<double>(step);
  return v;
}

}  // namespace trm::agent
