// Several nodes: the launchers coordinate through a KvStore that the node-rank-0 launcher
// serves at --rdzv-endpoint. Keys (ID = --rdzv-id, G = generation):
//   trm-launch/config               node 0's options, checked by everyone on joining
//   trm-launch/ID/joined[/R]        join count, and a per-node-rank count to catch duplicates
//   trm-launch/ID/lostnode/R        times node R was declared lost (elastic: it may join again)
//   trm-launch/ID/current           the generation node 0 started last (for nodes joining late)
//   trm-launch/ID/gen/G/members     the node ranks taking part in G ("0,1,3")
//   trm-launch/ID/gen/G/master_port node 0's pick for the ranks' own store
//   trm-launch/ID/gen/G/failed      the first failure (JSON); set-if-absent, so the first wins
//   trm-launch/ID/gen/G/done        nodes whose ranks all exited 0
//   trm-launch/ID/gen/G/end         barrier before the verdict
//   trm-launch/ID/abort             a launcher was signalled: no restart
//   trm-launch/ID/hb/R              node R's heartbeat counter (node 0 watches them)
//   trm-launch/ID/gen/G/lost        members node 0 declared lost; barriers do not wait for them
//   trm-launch/ID/left              nodes that finished (node 0 serves until all left)
//   trm-launch/ID/finished          node 0 is done: a node still waiting to take part leaves
// Elastic (--nnodes MIN:MAX): a node is present from its join until it is declared lost; each
// generation runs on the nodes present when node 0 starts it, renumbered densely.
#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <nlohmann/json.hpp>
#include <thread>

#include "failure.h"
#include "kv_store.h"
#include "net.h"
#include "rendezvous.h"
#include "trm/common/error.h"

namespace trm::launch {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

constexpr milliseconds kPollPeriod{150};
constexpr milliseconds kHeartbeatPeriod{1000};
constexpr milliseconds kWaitStep{50};

class StoreRendezvous final : public Rendezvous {
 public:
  explicit StoreRendezvous(const LaunchOptions& o)
      : o_(o),
        prefix_("trm-launch/" + o.rdzv_id + "/"),
        endpoint_(o.rdzv_host + ":" + std::to_string(o.rdzv_port)),
        timeout_(static_cast<int64_t>(o.rdzv_timeout_s * 1000)) {
    const auto deadline = Clock::now() + timeout_;
    if (o.node_rank == 0) {
      store_ = ServeKvStore(o.rdzv_host, o.rdzv_port, timeout_);
      store_->Set("trm-launch/config", Config().dump());
    } else {
      // Node 0 may start later than us: wait for its server quietly.
      while (!CanConnect(o.rdzv_host, o.rdzv_port, 1000)) {
        if (Clock::now() >= deadline) {
          ThrowError(Code::kDeadlineExceeded, "--rdzv-endpoint " + endpoint_ + ": the node-rank-0 launcher did not "
                                              "come up within " + Seconds() + " (--rdzv-timeout-s)");
        }
        std::this_thread::sleep_for(milliseconds(100));
      }
      store_ = ConnectKvStore(o.rdzv_host, o.rdzv_port, timeout_);
    }
    CheckConfig(WaitFor("trm-launch/config", deadline, nullptr));
    // A node declared lost may join again (elastic); any other second join is a duplicate.
    const std::string me = std::to_string(o.node_rank);
    incarnation_ = store_->Add(prefix_ + "joined/" + me, 1);
    if (incarnation_ != store_->Add(prefix_ + "lostnode/" + me, 0) + 1) {
      store_->Add(prefix_ + "joined/" + me, -1);  // refused: leaves no trace (else it would look present)
      InvalidArgument("--node-rank " + std::to_string(o.node_rank) + ": another launcher already joined run '" +
                      o.rdzv_id + "' at " + endpoint_ + " as node " + std::to_string(o.node_rank));
    }
    store_->Add(prefix_ + "joined", 1);
    // Elastic runs gather their nodes per generation (StartGeneration).
    if (!o.elastic() && !WaitCount(prefix_ + "joined", o.nnodes, deadline, nullptr)) {
      ThrowError(Code::kDeadlineExceeded, "rendezvous at " + endpoint_ + ": only " +
                                              std::to_string(store_->Add(prefix_ + "joined", 0)) + " of " +
                                              std::to_string(o.nnodes) + " nodes joined within " + Seconds() +
                                              " (--rdzv-timeout-s)");
    }
    spdlog::debug("node {} joined run '{}' at {}", o.node_rank, o.rdzv_id, endpoint_);
  }

  std::string master_addr() const override { return o_.rdzv_host; }

  GenerationInfo StartGeneration(int from, int restarts, const GiveUp& give_up) override {
    ResetView();
    GenerationInfo info;
    if (o_.node_rank == 0) {
      info.generation = from;
      info.restarts = restarts;
      std::vector<std::pair<int, int64_t>> members =
          o_.elastic() ? GatherMembers(from, give_up) : std::vector<std::pair<int, int64_t>>{};
      if (!o_.elastic())
        for (int r : AllNodes()) members.emplace_back(r, 1);
      for (const auto& [r, inc] : members) info.members.push_back(r);
      store_->Set(Gen(from) + "restarts", std::to_string(restarts));
      store_->Set(Gen(from) + "members", JoinMembers(members));
      info.master_port = PickFreePort();
      store_->Set(Gen(from) + "master_port", std::to_string(info.master_port));
      store_->Set(prefix_ + "current", std::to_string(from));
    } else {
      // Node 0 may first wait for MIN nodes and its last call; a node that joined late waits
      // for the generation node 0 starts to take it in (the wait starts again whenever node 0
      // moves on to another generation).
      const auto budget = o_.elastic() ? timeout_ + Millis(o_.rdzv_last_call_s) + 2 * Millis(o_.grace_period_s) : timeout_;
      auto deadline = Clock::now() + budget;
      int g = from;
      if (auto current = store_->TryGet(prefix_ + "current")) g = std::max(g, std::stoi(*current));
      in_run_ = !o_.elastic();  // a fixed run includes every node that joined
      while (true) {
        std::optional<std::string> members;
        while (!(members = store_->TryGet(Gen(g) + "members"))) {
          if (auto verdict = store_->TryGet(prefix_ + "finished")) {
            info.run_over = true;
            info.run_succeeded = *verdict == "ok";
            return info;
          }
          if (o_.elastic() && store_->Add(prefix_ + "lostnode/" + std::to_string(o_.node_rank), 0) >= incarnation_)
            ThrowError(Code::kUnavailable, "node " + std::to_string(o_.node_rank) + " was declared lost (its launcher "
                                           "was silent for --rdzv-timeout-s); start it again to rejoin the run");
          Wait(deadline, give_up, "generation " + std::to_string(g) + " to take in node " + std::to_string(o_.node_rank));
        }
        const auto listed = SplitMembers(*members);
        bool me = false;
        for (const auto& [r, inc] : listed) {
          if (r != o_.node_rank) continue;
          if (inc != incarnation_)
            ThrowError(Code::kUnavailable, "node " + std::to_string(o_.node_rank) + " joined the run again elsewhere "
                                           "(another launcher took this --node-rank after this one was declared lost)");
          me = true;
        }
        if (me) {
          for (const auto& [r, inc] : listed) info.members.push_back(r);
          break;
        }
        ++g;  // started without us: node 0 restarts the run to take us in
        deadline = Clock::now() + budget;
      }
      in_run_ = true;
      info.generation = g;
      info.restarts = static_cast<int>(std::stoll(WaitFor(Gen(g) + "restarts", Clock::now() + timeout_, give_up)));
      info.master_port = std::stoi(WaitFor(Gen(g) + "master_port", Clock::now() + timeout_, give_up));
    }
    info.group_rank = static_cast<int>(std::find(info.members.begin(), info.members.end(), o_.node_rank) -
                                       info.members.begin());
    members_ = info.members;
    generation_ = info.generation;
    return info;
  }

  void ReportFailure(const Failure& f) override {
    if (store_broken_) return;
    try {
      if (f.abort) store_->Set(prefix_ + "abort", "1");
      store_->SetIfAbsent(Gen(f.generation) + "failed", FailureToJson(f));
    } catch (const Error& e) {
      if (!view_.failure) {  // the first failure we know of is our own; no restart without a store
        view_.failure = f;
        view_.failure->abort = true;
      }
      Broken(f.generation, e);
    }
  }

  void ReportDone(int generation) override {
    done_reported_ = true;
    if (store_broken_) return;
    try {
      store_->Add(Gen(generation) + "done", 1);
    } catch (const Error& e) {
      Broken(generation, e);
    }
  }

  GenerationView Poll(int generation) override {
    const auto now = Clock::now();
    if (now - last_poll_ < kPollPeriod) return view_;
    last_poll_ = now;
    try {
      if (!view_.failure) {
        if (auto text = store_->TryGet(Gen(generation) + "failed")) view_.failure = FailureFromJson(*text);
      }
      if (done_reported_ && !view_.all_done)
        view_.all_done = store_->Add(Gen(generation) + "done", 0) >= static_cast<int64_t>(members_.size());
      if (now - last_heartbeat_ >= kHeartbeatPeriod) {
        last_heartbeat_ = now;
        store_->Add(prefix_ + "hb/" + std::to_string(o_.node_rank), 1);
        if (o_.node_rank == 0 && !view_.failure) CheckHeartbeats(generation, now);
        if (o_.node_rank == 0 && !view_.failure && o_.elastic()) CheckJoiners(generation);
      }
    } catch (const Error& e) {
      Broken(generation, e);
    }
    return view_;
  }

  GenerationEnd EndGeneration(int generation, const GiveUp& give_up) override {
    if (store_broken_) {
      ThrowError(Code::kUnavailable, "lost the rendezvous (node 0's launcher gone?): " + broken_reason_);
    }
    const std::string key = Gen(generation) + "end";
    store_->Add(key, 1);
    const int nodes = static_cast<int>(members_.size());
    // Heartbeats go on while waiting: a node whose machine died never arrives, and node 0
    // declares it lost (so the others stop waiting, and an elastic run restarts without it).
    // The bound outlasts the heartbeat timeout, so a dead node is declared lost before it ends.
    if (!WaitCount(key, nodes, Clock::now() + timeout_ + 3 * kHeartbeatPeriod, give_up, Gen(generation) + "lost",
                   generation)) {
      ThrowError(Code::kDeadlineExceeded, "rendezvous at " + endpoint_ + ": only " +
                                              std::to_string(store_->Add(key, 0)) + " of " + std::to_string(nodes) +
                                              " nodes finished generation " + std::to_string(generation) + " within " +
                                              Seconds() + " (--rdzv-timeout-s)");
    }
    GenerationEnd end;
    if (auto text = store_->TryGet(Gen(generation) + "failed")) end.failure = FailureFromJson(*text);
    end.abort = store_->TryGet(prefix_ + "abort").has_value();
    return end;
  }

  bool in_run() const override { return in_run_; }

  void Finish(const GiveUp& give_up, bool succeeded) override {
    if (store_broken_) return;
    if (o_.node_rank != 0) {
      try {
        store_->Add(prefix_ + "left", 1);
      } catch (const Error& e) {
        spdlog::debug("leaving the rendezvous: {}", e.what());  // node 0 may be gone already
      }
      return;
    }
    const auto limit = std::min<milliseconds>(timeout_, milliseconds(10000));
    try {
      store_->Set(prefix_ + "finished", succeeded ? "ok" : "failed");  // nodes still waiting to take part leave too
      if (!WaitCount(prefix_ + "left", static_cast<int64_t>(members_.size()) - 1, Clock::now() + limit, give_up,
                     Gen(generation_) + "lost")) {
        spdlog::warn("not every node left the rendezvous within {} ms; closing it anyway", limit.count());
      }
    } catch (const Error& e) {
      spdlog::warn("closing the rendezvous: {}", e.what());
    }
  }

 private:
  nlohmann::json Config() const {
    return {{"rdzv_id", o_.rdzv_id},         {"nnodes", o_.nnodes},
            {"min_nnodes", o_.min_nnodes},   {"nproc_per_node", o_.nproc_per_node},
            {"max_restarts", o_.max_restarts}};
  }

  void CheckConfig(const std::string& text) const {
    const auto theirs = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    const auto mine = Config();
    const std::pair<const char*, const char*> fields[] = {{"rdzv_id", "--rdzv-id"},
                                                          {"nnodes", "--nnodes"},
                                                          {"min_nnodes", "--nnodes (MIN)"},
                                                          {"nproc_per_node", "--nproc-per-node"},
                                                          {"max_restarts", "--max-restarts"}};
    for (const auto& [field, flag] : fields) {
      if (!theirs.is_object() || !theirs.contains(field) || theirs[field] != mine[field]) {
        InvalidArgument(std::string(flag) + ": this launcher has " + mine[field].dump() + ", node 0's at " +
                        endpoint_ + " has " + (theirs.is_object() && theirs.contains(field) ? theirs[field].dump() : "?") +
                        " (every node must pass the same --nnodes, --nproc-per-node, --max-restarts, --rdzv-id)");
      }
    }
  }

  // The store is gone (node 0 exited) or stuck: this run cannot be coordinated any more, which
  // is a failure of the generation that forbids a restart.
  void Broken(int generation, const Error& e) {
    store_broken_ = true;
    broken_reason_ = e.what();
    if (!view_.failure) {
      Failure f;
      f.generation = generation;
      f.node_rank = o_.node_rank;
      f.what = "lost the rendezvous (node 0's launcher gone?): " + broken_reason_;
      f.abort = true;
      view_.failure = f;
    }
  }

  std::string Gen(int generation) const { return prefix_ + "gen/" + std::to_string(generation) + "/"; }
  std::string Seconds() const { return fmt::format("{:g} s", static_cast<double>(timeout_.count()) / 1000); }

  static milliseconds Millis(double seconds) { return milliseconds(static_cast<int64_t>(seconds * 1000)); }

  void ResetView() {
    view_ = {};
    done_reported_ = false;
    last_poll_ = {};
    hb_seen_.clear();
    lost_now_.clear();
  }

  std::vector<int> AllNodes() const {
    std::vector<int> all;
    for (int r = 0; r < o_.nnodes; ++r) all.push_back(r);
    return all;
  }
  // "R@INCARNATION,...": which join of each node rank takes part (a copy superseded by a later
  // join of the same rank sees another incarnation and leaves).
  static std::string JoinMembers(const std::vector<std::pair<int, int64_t>>& members) {
    std::string s;
    for (const auto& [r, inc] : members) s += (s.empty() ? "" : ",") + std::to_string(r) + "@" + std::to_string(inc);
    return s;
  }
  static std::vector<std::pair<int, int64_t>> SplitMembers(const std::string& text) {
    std::vector<std::pair<int, int64_t>> out;
    size_t at = 0;
    while (at < text.size()) {
      const size_t comma = std::min(text.find(',', at), text.size());
      const std::string item = text.substr(at, comma - at);
      const size_t sep = item.find('@');
      out.emplace_back(std::stoi(item.substr(0, sep)), sep == std::string::npos ? 1 : std::stoll(item.substr(sep + 1)));
      at = comma + 1;
    }
    return out;
  }
  void Wait(Clock::time_point deadline, const GiveUp& give_up, const std::string& what) {
    if (give_up && give_up()) ThrowError(Code::kCancelled, "stopped while waiting for " + what);
    if (Clock::now() >= deadline)
      ThrowError(Code::kDeadlineExceeded, "rendezvous at " + endpoint_ + ": waited too long for " + what);
    std::this_thread::sleep_for(kWaitStep);
  }

  // Elastic: the nodes present (joined, not declared lost since) and the incarnation of each
  // (its latest join), node 0 first.
  std::vector<std::pair<int, int64_t>> Present() {
    std::vector<std::pair<int, int64_t>> present;
    for (int r = 0; r < o_.nnodes; ++r) {
      const std::string k = std::to_string(r);
      const int64_t joins = store_->Add(prefix_ + "joined/" + k, 0);
      if (joins > store_->Add(prefix_ + "lostnode/" + k, 0)) present.emplace_back(r, joins);
    }
    return present;
  }

  // Node 0, elastic: who runs generation g. The first waits for MAX nodes, or for MIN and then
  // --rdzv-last-call-s more; a restart takes the nodes present (at least MIN).
  std::vector<std::pair<int, int64_t>> GatherMembers(int g, const GiveUp& give_up) {
    const auto deadline = Clock::now() + timeout_;
    std::optional<Clock::time_point> enough_since;
    while (true) {
      const auto present = Present();
      const int n = static_cast<int>(present.size());
      if (n >= o_.nnodes) return present;
      if (n >= o_.min_nnodes) {
        if (g > 0) return present;
        if (!enough_since) enough_since = Clock::now();
        if (Clock::now() - *enough_since >= Millis(o_.rdzv_last_call_s)) return present;
      }
      if (give_up && give_up()) ThrowError(Code::kCancelled, "stopped while gathering the nodes");
      if (Clock::now() >= deadline) {
        if (n >= o_.min_nnodes) return present;  // the last call outlasts the timeout: go with MIN
        ThrowError(Code::kDeadlineExceeded, "rendezvous at " + endpoint_ + ": only " + std::to_string(n) + " of " +
                                                std::to_string(o_.min_nnodes) + ".." + std::to_string(o_.nnodes) +
                                                " nodes present within " + Seconds() + " (--rdzv-timeout-s)");
      }
      std::this_thread::sleep_for(kWaitStep);
    }
  }

  // Node 0, elastic, below MAX: a node that joined (or came back) during the generation ends it,
  // so that the next one runs with it (not a restart of --max-restarts).
  void CheckJoiners(int generation) {
    // Not once this node's ranks are done: the generation is finishing, not worth rerunning.
    if (static_cast<int>(members_.size()) >= o_.nnodes || done_reported_) return;
    for (const auto& [r, inc] : Present()) {
      if (std::find(members_.begin(), members_.end(), r) != members_.end()) continue;
      Failure f;
      f.generation = generation;
      f.node_rank = r;
      f.what = "node " + std::to_string(r) + " joined the run (" + std::to_string(members_.size()) + " of " +
               std::to_string(o_.min_nnodes) + ".." + std::to_string(o_.nnodes) + " nodes were running)";
      f.resize = true;
      ReportFailure(f);
      return;
    }
  }

  // Node 0 only: a member whose launcher stopped beating for the rdzv timeout is lost. Elastic:
  // the run restarts on the rest while at least MIN are left (and restarts remain).
  void CheckHeartbeats(int generation, Clock::time_point now) {
    for (int r : members_) {
      if (r == 0 || lost_now_.count(r)) continue;
      const int64_t beat = store_->Add(prefix_ + "hb/" + std::to_string(r), 0);
      auto& seen = hb_seen_[r];
      if (seen.second == Clock::time_point{} || beat != seen.first) {
        seen = {beat, now};
      } else if (now - seen.second > timeout_) {
        lost_now_.insert(r);
        const int64_t lost = store_->Add(Gen(generation) + "lost", 1);
        const int64_t left = static_cast<int64_t>(members_.size()) - lost;
        Failure f;
        f.generation = generation;
        f.node_rank = r;
        f.what = "the launcher of node " + std::to_string(r) + " stopped answering for " + Seconds() +
                 " (--rdzv-timeout-s)";
        // No restart without that node, unless the run is elastic and enough are left.
        f.abort = !o_.elastic() || left < o_.min_nnodes;
        if (o_.elastic()) {
          store_->Add(prefix_ + "lostnode/" + std::to_string(r), 1);  // it may join again
          f.what += f.abort ? "; fewer than " + std::to_string(o_.min_nnodes) + " nodes left"
                            : "; the run goes on with " + std::to_string(left) + " node" + (left == 1 ? "" : "s");
        }
        spdlog::warn("{}", f.what);  // the first failure of the generation may be another (its peers' ranks)
        ReportFailure(f);
        return;
      }
    }
  }

  // Bounded polls (see c10d_store.cpp for why not the store's own wait).
  std::string WaitFor(const std::string& key, Clock::time_point deadline, const GiveUp& give_up) {
    while (true) {
      if (auto v = store_->TryGet(key)) return *v;
      if (give_up && give_up()) ThrowError(Code::kCancelled, "stopped while waiting for " + key);
      if (Clock::now() >= deadline) {
        ThrowError(Code::kDeadlineExceeded, "rendezvous at " + endpoint_ + ": no " + key + " within " + Seconds() +
                                                " (--rdzv-timeout-s)");
      }
      std::this_thread::sleep_for(kWaitStep);
    }
  }

  // Nodes counted under `lost_key` (declared lost) are not waited for: they would only run the
  // clock out.
  // With `beat_generation` >= 0 this node keeps beating (node 0: and watching the others).
  bool WaitCount(const std::string& key, int64_t target, Clock::time_point deadline, const GiveUp& give_up,
                 const std::string& lost_key = "", int beat_generation = -1) {
    while (store_->Add(key, 0) < target - (lost_key.empty() ? 0 : store_->Add(lost_key, 0))) {
      if (beat_generation >= 0 && Clock::now() - last_heartbeat_ >= kHeartbeatPeriod) {
        last_heartbeat_ = Clock::now();
        store_->Add(prefix_ + "hb/" + std::to_string(o_.node_rank), 1);
        if (o_.node_rank == 0) CheckHeartbeats(beat_generation, last_heartbeat_);
      }
      if (give_up && give_up()) ThrowError(Code::kCancelled, "stopped while waiting for " + key);
      if (Clock::now() >= deadline) return false;
      std::this_thread::sleep_for(kWaitStep);
    }
    return true;
  }

  const LaunchOptions o_;
  const std::string prefix_;
  const std::string endpoint_;
  const milliseconds timeout_;
  std::unique_ptr<KvStore> store_;
  GenerationView view_;
  bool done_reported_ = false;
  bool store_broken_ = false;
  std::string broken_reason_;
  Clock::time_point last_poll_{};
  Clock::time_point last_heartbeat_{};
  std::map<int, std::pair<int64_t, Clock::time_point>> hb_seen_;
  int64_t incarnation_ = 0;   // this launcher's join of its node rank (1 first, 2 after a rejoin, ...)
  bool in_run_ = true;        // the generation being waited for or run includes this node
  std::set<int> lost_now_;    // members declared lost in the generation started last
  std::vector<int> members_;  // of the generation started last
  int generation_ = 0;        // the generation started last
};

}  // namespace

std::unique_ptr<Rendezvous> JoinStoreRendezvous(const LaunchOptions& options) {
  return std::make_unique<StoreRendezvous>(options);
}

}  // namespace trm::launch
