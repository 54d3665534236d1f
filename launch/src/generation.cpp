#include "generation.h"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <memory>

#include "failure.h"
#include "trm/common/error.h"

namespace trm::launch {
namespace {

// The failure report shows this many of the failing rank's last lines.
constexpr size_t kTailLines = 40;

std::string Name(const RankPlan& p, int node) {
  return "rank " + std::to_string(p.global_rank) + " (local rank " + std::to_string(p.local_rank) + ", node " +
         std::to_string(node) + ")";
}

RankGroupOptions GroupOptions() {
  RankGroupOptions o;
  o.output.tail_lines = kTailLines;
  return o;
}

// The launcher's policy over RankGroup: the first failure anywhere stops every node, a signal
// to the launcher stops the run, and every node's success is agreed through the rendezvous.
class Supervisor {
 public:
  Supervisor(const GenerationPlan& plan, Rendezvous& rdzv, SignalWatcher& signals)
      : plan_(plan), rdzv_(rdzv), signals_(signals), seen_signals_(signals.termination_count()),
        group_(GroupOptions()) {}

  GenerationResult Run() {
    Start();
    while (true) {
      const std::vector<size_t> exits = WaitForEvents();
      HandleSignals();
      HandleExits(exits);
      HandleRemote();
      if (!group_.done()) continue;
      group_.Drain();
      if (group_.stopping() || view_.failure) return {true, signal_};
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
    outputs_.reserve(plan_.ranks.size());
    try {
      for (const auto& p : plan_.ranks) {
        outputs_.push_back(std::make_unique<RankOutput>(p.output));
        group_.Spawn(p.spawn, Name(p, plan_.node_rank), outputs_.back()->Sink());
      }
    } catch (const Error& e) {
      // The other nodes must not wait for us; our ranks die with ~RankGroup.
      Failure f;
      f.generation = plan_.generation;
      f.node_rank = plan_.node_rank;
      f.what = std::string("node ") + std::to_string(plan_.node_rank) + " could not start its ranks: " + e.what();
      f.abort = true;
      rdzv_.ReportFailure(f);
      throw;
    }
  }

  // Rank exits and signals wake it at once (SIGCHLD); other nodes' news is polled.
  std::vector<size_t> WaitForEvents() {
    std::vector<pollfd> extra{{signals_.fd(), POLLIN, 0}};
    std::vector<size_t> exits = group_.Wait(&extra);
    if (extra[0].revents) signals_.Drain();
    return exits;
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
    if (!group_.stopping()) {
      BeginStop(f.what);
    } else if (!group_.killed()) {  // already stopping: the user is out of patience
      spdlog::warn("{} while stopping: killing the ranks now", SignalName(signal_));
      group_.Kill();
    }
  }

  void HandleExits(const std::vector<size_t>& exits) {
    for (size_t i : exits) {
      const RankPlan& p = plan_.ranks[i];
      const ProcessExit& x = group_.exit(i);
      if (x.ok() || group_.stopping()) {
        spdlog::debug("{} {}", Name(p, plan_.node_rank), x.what);
        continue;
      }
      Failure f;
      f.generation = plan_.generation;
      f.node_rank = plan_.node_rank;
      f.global_rank = p.global_rank;
      f.local_rank = p.local_rank;
      DescribeStatus(x.wait_status, f);
      f.log_path = outputs_[i]->log_path();
      f.log_tail = group_.Tail(i);  // its last words included: read before the exit was reported
      rdzv_.ReportFailure(f);
      BeginStop(Name(p, plan_.node_rank) + " " + f.what);
    }
  }

  void HandleRemote() {
    view_ = rdzv_.Poll(plan_.generation);
    if (view_.failure && !group_.stopping()) {
      const Failure& f = *view_.failure;
      BeginStop(f.global_rank >= 0 ? "rank " + std::to_string(f.global_rank) + " on node " +
                                         std::to_string(f.node_rank) + " " + f.what
                                   : f.what);
    }
  }

  // SIGTERM now; RankGroup sends SIGKILL after the grace period (at once on a second signal).
  void BeginStop(const std::string& why) {
    const int running = group_.Stop(plan_.grace);
    if (running > 0) spdlog::warn("{}: stopping {} running rank(s) of node {}", why, running, plan_.node_rank);
  }

  const GenerationPlan& plan_;
  Rendezvous& rdzv_;
  SignalWatcher& signals_;
  int seen_signals_;
  std::vector<std::unique_ptr<RankOutput>> outputs_;  // outlive group_'s sinks
  RankGroup group_;
  int signal_ = 0;
  bool done_reported_ = false;
  GenerationView view_;
};

}  // namespace

GenerationResult RunGeneration(const GenerationPlan& plan, Rendezvous& rdzv, SignalWatcher& signals) {
  return Supervisor(plan, rdzv, signals).Run();
}

}  // namespace trm::launch
