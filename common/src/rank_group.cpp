#include "trm/common/rank_group.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>

#include "trm/common/oom_counter.h"

namespace trm {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

int PollFor(std::vector<pollfd>& fds, milliseconds timeout) {
  const int n = ::poll(fds.empty() ? nullptr : fds.data(), fds.size(), static_cast<int>(timeout.count()));
  return n < 0 ? 0 : n;  // EINTR: the caller's loop comes back
}

}  // namespace

RankGroup::RankGroup(RankGroupOptions options) : opt_(options) {}

RankGroup::~RankGroup() = default;

size_t RankGroup::Spawn(const SpawnSpec& spec, std::string name, LineSink sink) {
  auto p = std::make_unique<Proc>();
  p->name = std::move(name);
  p->oom_kills_at_start = ReadOomKillCount();
  p->proc = std::make_unique<RankProcess>(spec);
  p->output = std::make_unique<OutputCapture>(p->proc->TakeStdout(), p->proc->TakeStderr(), opt_.output,
                                              std::move(sink));
  procs_.push_back(std::move(p));
  return procs_.size() - 1;
}

pid_t RankGroup::pid(size_t i) const { return procs_[i]->proc->pid(); }

std::vector<size_t> RankGroup::Wait(std::vector<pollfd>* extra) {
  std::vector<pollfd> fds;
  if (extra) fds = *extra;
  const size_t first = fds.size();
  for (const auto& p : procs_) p->output->AddPollFds(fds);
  auto timeout = opt_.tick;
  if (stopping_ && !killed_) {
    timeout = std::clamp(std::chrono::duration_cast<milliseconds>(kill_at_ - Clock::now()), milliseconds(0),
                         opt_.tick);
  }
  if (PollFor(fds, timeout) > 0) {
    for (size_t i = 0; i < first; ++i) (*extra)[i].revents = fds[i].revents;
    Dispatch(fds, first);
  } else if (extra) {
    for (auto& f : *extra) f.revents = 0;
  }
  std::vector<size_t> exits = CollectExits();
  Escalate();
  return exits;
}

void RankGroup::Dispatch(const std::vector<pollfd>& fds, size_t first) {
  for (size_t i = first; i < fds.size(); ++i) {
    if (!fds[i].revents) continue;
    for (auto& p : procs_) {
      if (p->output->OnReadable(fds[i].fd)) break;
    }
  }
}

std::vector<size_t> RankGroup::CollectExits() {
  std::vector<size_t> out;
  for (size_t i = 0; i < procs_.size(); ++i) {
    Proc& p = *procs_[i];
    if (p.exit_seen || !p.proc->PollExit()) continue;
    // Its last words are in the pipes: they come before the exit.
    p.output->ReadAvailable();
    p.exit = DescribeWaitStatus(p.proc->wait_status());
    p.exit.signalled = p.signalled;
    if (p.exit.signal == SIGKILL && !p.signalled && p.oom_kills_at_start >= 0) {
      p.exit.oom_kills_before = p.oom_kills_at_start;
      p.exit.oom_kills_after = ReadOomKillCount();
      p.exit.oom_killed = p.exit.oom_kills_after > p.exit.oom_kills_before;
    }
    p.exit_seen = true;
    out.push_back(i);
  }
  return out;
}

int RankGroup::Stop(milliseconds grace, int first_signal) {
  if (stopping_) return 0;
  stopping_ = true;
  grace_ = grace;
  kill_at_ = Clock::now() + grace;
  int n = 0;
  for (auto& p : procs_) n += p->exit_seen ? 0 : 1;
  SignalRunning(first_signal);
  return n;
}

void RankGroup::Kill() {
  stopping_ = true;
  killed_ = true;
  killed_at_ = Clock::now();
  SignalRunning(SIGKILL);
}

void RankGroup::SignalRunning(int sig) {
  for (auto& p : procs_) {
    if (p->exit_seen) continue;
    p->proc->SignalGroup(sig);
    p->signalled = true;
  }
}

void RankGroup::Escalate() {
  if (!stopping_ || done()) return;
  const auto now = Clock::now();
  if (!killed_ && now >= kill_at_) {
    for (auto& p : procs_) {
      if (!p->exit_seen) spdlog::warn("{} did not exit within {} ms of SIGTERM: SIGKILL", p->name, grace_.count());
    }
    Kill();
  }
  if (killed_ && now - killed_at_ > opt_.kill_wait) {
    for (auto& p : procs_) {
      if (!p->exit_seen) {
        spdlog::error("{} (pid {}) survives SIGKILL (stuck in the kernel?); leaving it", p->name, p->proc->pid());
      }
    }
    abandoned_ = true;
  }
}

bool RankGroup::done() const {
  return abandoned_ || std::all_of(procs_.begin(), procs_.end(), [](const auto& p) { return p->exit_seen; });
}

void RankGroup::Drain() {
  if (drained_) return;
  drained_ = true;
  for (auto& p : procs_) p->proc->Reap();
  const auto until = Clock::now() + opt_.pipe_drain;
  for (auto now = Clock::now(); now < until; now = Clock::now()) {
    std::vector<pollfd> fds;
    for (const auto& p : procs_) p->output->AddPollFds(fds);
    if (fds.empty()) break;
    const auto left = std::chrono::duration_cast<milliseconds>(until - now) + milliseconds(1);
    if (PollFor(fds, std::min(left, milliseconds(50))) > 0) Dispatch(fds, 0);
  }
  for (auto& p : procs_) p->output->Close();
}

}  // namespace trm
