#include "progress.h"

#include <cstdio>

namespace trm::data::internal {

ProgressBar::ProgressBar(bool enabled, uint64_t total_bytes)
    : enabled_(enabled), total_(total_bytes), start_(std::chrono::steady_clock::now()), last_(start_) {}

void ProgressBar::Update(uint64_t bytes, uint64_t records) {
  if (!enabled_) return;
  const auto now = std::chrono::steady_clock::now();
  if (drawn_ && now - last_ < std::chrono::milliseconds(200)) return;
  last_ = now;
  drawn_ = true;
  const double secs = std::chrono::duration<double>(now - start_).count();
  const double frac = total_ > 0 ? static_cast<double>(bytes) / static_cast<double>(total_) : 0.0;
  constexpr int kWidth = 30;
  const int filled = static_cast<int>(frac * kWidth);
  char bar[kWidth + 1];
  for (int i = 0; i < kWidth; ++i) bar[i] = i < filled ? '=' : (i == filled ? '>' : ' ');
  bar[kWidth] = '\0';
  const double mbps = secs > 0 ? static_cast<double>(bytes) / secs / 1e6 : 0.0;
  const double eta = frac > 0 ? secs * (1 - frac) / frac : 0.0;
  std::fprintf(stderr, "\r[%s] %5.1f%%  %7.1f MB/s  %9llu conversations  %.0fs left ", bar, frac * 100, mbps,
               static_cast<unsigned long long>(records), eta);
  std::fflush(stderr);
}

void ProgressBar::Finish() {
  if (enabled_ && drawn_) std::fprintf(stderr, "\r%90s\r", "");
}

}  // namespace trm::data::internal
