#include "generation.h"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>

#include <algorithm>
#include <memory>
#include <optional>

#include "failure.h"
#include "trm/common/error.h"

namespace trm::launch {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

// Longest sleep of the loop: rank exits and signals wake it at once (SIGCHLD), other nodes' news
// is polled.
constexpr milliseconds kTick{100};
// After SIGKILL a process is gone within milliseconds unless stuck in the kernel (D state); we
// do not wait on such a process forever.
constexpr milliseconds kKillWait{10000};
// Pipes still open after every rank exited belong to processes that left the rank's process group.
constexpr milliseconds kPipeDrain{1000};

struct Rank {
  const RankPlan* plan;
  std::unique_ptr<RankProcess> proc;
  std::unique_ptr<RankOutput> output;
};

std::string Name(const RankPlan& p, int node) {
  return "rank " + std::to_string(p.global_rank) + " (local rank " + std::to_string(p.local_rank) + ", node " +
         std::to_string(node) + ")";
}

class Supervisor {
 public:
  Supervisor(const GenerationPlan& plan, Rendezvous& rdzv, SignalWatcher& signals)
      : plan_(plan), rdzv_(rdzv), signals_(signals), seen_signals_(signals.termination_count()) {}

  GenerationResult Run() {
    Start();
    while (true) {
      WaitForEvents();
      HandleSignals();
      HandleExits();
      HandleRemote();
      Escalate();
      if (!AllExited()) continue;
      if (!drained_) Drain();
      if (stopping_ || view_.failure) return {true, signal_};
      if (!done_reported_) {
        rdzv_.ReportDone(plan_.generation);
        done_reported_ = true;
        spdlog::debug("generation {}: every rank of node {} exited 0", plan_.generation, plan_.node_rank);
        view_ = rdzv_.Poll(plan_.generation);  // a single node knows at once
      }
      if (view_.all_done) return {false, 0};
    }
  }

 private:
  void Start() {
    ranks_.reserve(plan_.ranks.size());
    try {
      for (const auto& p : plan_.ranks) {
        Rank r{&p, std::make_unique<RankProcess>(p.spawn), nullptr};
        r.output = std::make_unique<RankOutput>(r.proc->TakeStdout(), r.proc->TakeStderr(), p.output);
        ranks_.push_back(std::move(r));
      }
    } catch (const Error& e) {
      // The other nodes must not wait for us; our ranks die with ~RankProcess.
      Failure f;
      f.generation = plan_.generation;
      f.node_rank = plan_.node_rank;
      f.what = std::string("node ") + std::to_string(plan_.node_rank) + " could not start its ranks: " + e.what();
      f.abort = true;
      rdzv_.ReportFailure(f);
      throw;
    }
  }

  void WaitForEvents() {
    std::vector<pollfd> fds{{signals_.fd(), POLLIN, 0}};
    std::vector<RankOutput*> owners{nullptr};
    for (auto& r : ranks_) r.output->AddPollFds(fds, owners);
    auto timeout = kTick;
    if (stopping_ && !killed_) {
      timeout = std::clamp(std::chrono::duration_cast<milliseconds>(kill_at_ - Clock::now()), milliseconds(0), kTick);
    }
    const int n = ::poll(fds.data(), fds.size(), static_cast<int>(timeout.count()));
    if (n <= 0) return;
    if (fds[0].revents) signals_.Drain();
    for (size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents) owners[i]->OnReadable(fds[i].fd);
    }
  }

  void HandleSignals() {
    const int n = signals_.termination_count();
    if (n == seen_signals_) return;
    seen_signals_ = n;
    signal_ = signals_.last_termination_signal();
    // Every node stops, and nobody restarts: the user wants the run over.
    Failure f;
    f.generation = plan_.generation;
    f.node_rank = plan_.node_rank;
    f.signal = signal_;
    f.what = "the launcher of node " + std::to_string(plan_.node_rank) + " got " + SignalName(signal_);
    f.abort = true;
    rdzv_.ReportFailure(f);
    if (!stopping_) {
      BeginStop(f.what);
    } else if (!killed_) {  // already stopping: the user is out of patience
      spdlog::warn("{} while stopping: killing the ranks now", SignalName(signal_));
      KillAll();
    }
  }

  void HandleExits() {
    for (auto& r : ranks_) {
      if (r.proc->exited() || !r.proc->PollExit()) continue;
      const int status = r.proc->wait_status();
      const bool ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
      if (ok || stopping_) {
        Failure d;
        DescribeStatus(status, d);
        spdlog::debug("{} {}", Name(*r.plan, plan_.node_rank), d.what);
        continue;
      }
      // Its last words are in the pipes already; the report needs them.
      r.output->ReadAvailable();
      Failure f;
      f.generation = plan_.generation;
      f.node_rank = plan_.node_rank;
      f.global_rank = r.plan->global_rank;
      f.local_rank = r.plan->local_rank;
      DescribeStatus(status, f);
      f.log_path = r.output->log_path();
      f.log_tail = r.output->Tail();
      rdzv_.ReportFailure(f);
      BeginStop(Name(*r.plan, plan_.node_rank) + " " + f.what);
    }
  }

  void HandleRemote() {
    view_ = rdzv_.Poll(plan_.generation);
    if (view_.failure && !stopping_) {
      const Failure& f = *view_.failure;
      BeginStop(f.global_rank >= 0 ? "rank " + std::to_string(f.global_rank) + " on node " +
                                         std::to_string(f.node_rank) + " " + f.what
                                   : f.what);
    }
  }

  void BeginStop(const std::string& why) {
    stopping_ = true;
    kill_at_ = Clock::now() + plan_.grace;
    int running = 0;
    for (auto& r : ranks_) {
      if (r.proc->exited()) continue;
      r.proc->SignalGroup(SIGTERM);
      ++running;
    }
    if (running > 0) spdlog::warn("{}: stopping {} running rank(s) of node {}", why, running, plan_.node_rank);
  }

  void Escalate() {
    if (!stopping_) return;
    const auto now = Clock::now();
    if (!killed_ && now >= kill_at_) {
      for (auto& r : ranks_) {
        if (!r.proc->exited()) {
          spdlog::warn("{} did not exit within {} ms of SIGTERM: SIGKILL", Name(*r.plan, plan_.node_rank),
                       plan_.grace.count());
        }
      }
      KillAll();
    }
    if (killed_ && now - killed_at_ > kKillWait && !AllExited()) {
      for (auto& r : ranks_) {
        if (!r.proc->exited()) {
          spdlog::error("{} (pid {}) survives SIGKILL (stuck in the kernel?); leaving it", Name(*r.plan, plan_.node_rank),
                        r.proc->pid());
        }
      }
      abandoned_ = true;
    }
  }

  void KillAll() {
    killed_ = true;
    killed_at_ = Clock::now();
    for (auto& r : ranks_) {
      if (!r.proc->exited()) r.proc->SignalGroup(SIGKILL);
    }
  }

  bool AllExited() const {
    return abandoned_ || std::all_of(ranks_.begin(), ranks_.end(), [](const Rank& r) { return r.proc->exited(); });
  }

  // Every rank exited: kill what is left of their process groups, reap, and collect the rest of
  // their output (bounded: a process that left the group may hold a pipe open).
  void Drain() {
    drained_ = true;
    for (auto& r : ranks_) r.proc->Reap();
    const auto until = Clock::now() + kPipeDrain;
    while (Clock::now() < until) {
      std::vector<pollfd> fds;
      std::vector<RankOutput*> owners;
      for (auto& r : ranks_) r.output->AddPollFds(fds, owners);
      if (fds.empty()) break;
      if (::poll(fds.data(), fds.size(), 50) <= 0) continue;
      for (size_t i = 0; i < fds.size(); ++i) {
        if (fds[i].revents) owners[i]->OnReadable(fds[i].fd);
      }
    }
    for (auto& r : ranks_) r.output->Close();
  }

  const GenerationPlan& plan_;
  Rendezvous& rdzv_;
  SignalWatcher& signals_;
  std::vector<Rank> ranks_;
  int seen_signals_;
  int signal_ = 0;
  bool stopping_ = false;
  bool killed_ = false;
  bool abandoned_ = false;
  bool drained_ = false;
  bool done_reported_ = false;
  Clock::time_point kill_at_{}, killed_at_{};
  GenerationView view_;
};

}  // namespace

GenerationResult RunGeneration(const GenerationPlan& plan, Rendezvous& rdzv, SignalWatcher& signals) {
  return Supervisor(plan, rdzv, signals).Run();
}

}  // namespace trm::launch
