#include "progress.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>

namespace trm::worker {
namespace {

std::string Duration(double s) {
  char buf[32];
  if (s < 0 || s > 99 * 3600) return "--";
  int t = static_cast<int>(s);
  if (t >= 3600) std::snprintf(buf, sizeof buf, "%dh%02dm", t / 3600, (t / 60) % 60);
  else std::snprintf(buf, sizeof buf, "%dm%02ds", t / 60, t % 60);
  return buf;
}

}  // namespace

ProgressReporter::ProgressReporter(int mode, int64_t log_interval, bool enabled)
    : enabled_(enabled), bar_(mode == 1 || (mode < 0 && ::isatty(STDERR_FILENO))), log_interval_(log_interval) {
  start_ = last_draw_ = std::chrono::steady_clock::now();
}

void ProgressReporter::Step(const StepMetrics& m) {
  if (!enabled_) return;
  auto now = std::chrono::steady_clock::now();
  if (first_step_ < 0) {
    first_step_ = m.step - 1;
    start_ = now;
  }
  if (!m.skipped) loss_ema_ = loss_ema_ < 0 ? m.lm_loss : 0.9 * loss_ema_ + 0.1 * m.lm_loss;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  const double per_step = elapsed / static_cast<double>(std::max<int64_t>(1, m.step - first_step_));
  const double eta = per_step * static_cast<double>(m.total_steps - m.step);
  if (bar_) {
    if (m.step != m.total_steps && std::chrono::duration<double>(now - last_draw_).count() < 0.2) return;
    last_draw_ = now;
    const int width = 24;
    int filled = m.total_steps > 0 ? static_cast<int>(width * m.step / m.total_steps) : 0;
    std::string bar(static_cast<size_t>(filled), '#');
    bar.resize(width, '.');
    std::fprintf(stderr, "\r[%s] %lld/%lld loss %.4f acc %.3f lr %.2e %.0f tok/s ETA %s   ", bar.c_str(),
                 static_cast<long long>(m.step), static_cast<long long>(m.total_steps), loss_ema_, m.accuracy, m.lr,
                 m.tokens_per_s, Duration(eta).c_str());
    std::fflush(stderr);
    bar_drawn_ = true;
  } else if (m.step % log_interval_ == 0 || m.step == m.total_steps) {
    // Accuracy and ACT steps are over the rows that halted in this step; there may be none.
    const std::string halted = m.halted_rows > 0 ? fmt::format("accuracy {:.4f} act_steps {:.2f}", m.accuracy, m.act_steps)
                                                 : std::string("accuracy - (no row halted)");
    spdlog::info("step {}/{} epoch {:.2f} lm_loss {:.4f} {} lr {:.3e} grad_norm {:.3f} {:.0f} tok/s eta {}{}", m.step,
                 m.total_steps, m.epoch, m.lm_loss, halted, m.lr, m.grad_norm, m.tokens_per_s, Duration(eta),
                 m.skipped ? " (skipped: non-finite gradients)" : "");
  }
}

void ProgressReporter::Message(const std::string& line) {
  if (!enabled_) return;
  if (bar_drawn_) {
    std::fprintf(stderr, "\n");
    bar_drawn_ = false;
  }
  spdlog::info("{}", line);
}

void ProgressReporter::Finish() {
  if (bar_drawn_) std::fprintf(stderr, "\n");
  bar_drawn_ = false;
}

}  // namespace trm::worker
