// Several nodes: the launchers coordinate through a KvStore that the node-rank-0 launcher
// serves at --rdzv-endpoint. Keys (ID = --rdzv-id, G = generation):
//   trm-launch/config               node 0's options, checked by everyone on joining
//   trm-launch/ID/joined[/R]        join count, and a per-node-rank count to catch duplicates
//   trm-launch/ID/gen/G/master_port node 0's pick for the ranks' own store
//   trm-launch/ID/gen/G/failed      the first failure (JSON); set-if-absent, so the first wins
//   trm-launch/ID/gen/G/done        nodes whose ranks all exited 0
//   trm-launch/ID/gen/G/end         barrier before the verdict
//   trm-launch/ID/abort             a launcher was signalled: no restart
//   trm-launch/ID/hb/R              node R's heartbeat counter (node 0 watches them)
//   trm-launch/ID/lost              nodes node 0 declared lost; barriers do not wait for them
//   trm-launch/ID/left              nodes that finished (node 0 serves until all left)
#include <spdlog/fmt/fmt.h>
#include <spdlog/spdlog.h>

#include <chrono>
#include <map>
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
    if (store_->Add(prefix_ + "joined/" + std::to_string(o.node_rank), 1) != 1) {
      InvalidArgument("--node-rank " + std::to_string(o.node_rank) + ": another launcher already joined run '" +
                      o.rdzv_id + "' at " + endpoint_ + " as node " + std::to_string(o.node_rank));
    }
    store_->Add(prefix_ + "joined", 1);
    if (!WaitCount(prefix_ + "joined", o.nnodes, deadline, nullptr)) {
      ThrowError(Code::kDeadlineExceeded, "rendezvous at " + endpoint_ + ": only " +
                                              std::to_string(store_->Add(prefix_ + "joined", 0)) + " of " +
                                              std::to_string(o.nnodes) + " nodes joined within " + Seconds() +
                                              " (--rdzv-timeout-s)");
    }
    spdlog::debug("node {} joined run '{}' at {}", o.node_rank, o.rdzv_id, endpoint_);
  }

  std::string master_addr() const override { return o_.rdzv_host; }

  int MasterPort(int generation, const GiveUp& give_up) override {
    const std::string key = Gen(generation) + "master_port";
    StartGeneration();
    if (o_.node_rank == 0) {
      const int port = PickFreePort();
      store_->Set(key, std::to_string(port));
      return port;
    }
    return std::stoi(WaitFor(key, Clock::now() + timeout_, give_up));
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
      if (done_reported_ && !view_.all_done) view_.all_done = store_->Add(Gen(generation) + "done", 0) >= o_.nnodes;
      if (now - last_heartbeat_ >= kHeartbeatPeriod) {
        last_heartbeat_ = now;
        store_->Add(prefix_ + "hb/" + std::to_string(o_.node_rank), 1);
        if (o_.node_rank == 0 && !view_.failure) CheckHeartbeats(generation, now);
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
    if (!WaitCount(key, o_.nnodes, Clock::now() + timeout_, give_up, /*minus_lost=*/true)) {
      ThrowError(Code::kDeadlineExceeded, "rendezvous at " + endpoint_ + ": only " +
                                              std::to_string(store_->Add(key, 0)) + " of " + std::to_string(o_.nnodes) +
                                              " nodes finished generation " + std::to_string(generation) + " within " +
                                              Seconds() + " (--rdzv-timeout-s)");
    }
    GenerationEnd end;
    if (auto text = store_->TryGet(Gen(generation) + "failed")) end.failure = FailureFromJson(*text);
    end.abort = store_->TryGet(prefix_ + "abort").has_value();
    return end;
  }

  void Finish(const GiveUp& give_up) override {
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
      if (!WaitCount(prefix_ + "left", o_.nnodes - 1, Clock::now() + limit, give_up, /*minus_lost=*/true)) {
        spdlog::warn("not every node left the rendezvous within {} ms; closing it anyway", limit.count());
      }
    } catch (const Error& e) {
      spdlog::warn("closing the rendezvous: {}", e.what());
    }
  }

 private:
  nlohmann::json Config() const {
    return {{"rdzv_id", o_.rdzv_id}, {"nnodes", o_.nnodes}, {"nproc_per_node", o_.nproc_per_node},
            {"max_restarts", o_.max_restarts}};
  }

  void CheckConfig(const std::string& text) const {
    const auto theirs = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
    const auto mine = Config();
    const std::pair<const char*, const char*> fields[] = {{"rdzv_id", "--rdzv-id"},
                                                          {"nnodes", "--nnodes"},
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

  void StartGeneration() {
    view_ = {};
    done_reported_ = false;
    last_poll_ = {};
    hb_seen_.clear();
  }

  // Node 0 only: a node whose launcher stopped beating for the rdzv timeout is lost.
  void CheckHeartbeats(int generation, Clock::time_point now) {
    for (int r = 1; r < o_.nnodes; ++r) {
      const int64_t beat = store_->Add(prefix_ + "hb/" + std::to_string(r), 0);
      auto& seen = hb_seen_[r];
      if (seen.second == Clock::time_point{} || beat != seen.first) {
        seen = {beat, now};
      } else if (now - seen.second > timeout_) {
        Failure f;
        f.generation = generation;
        f.node_rank = r;
        f.what = "the launcher of node " + std::to_string(r) + " stopped answering for " + Seconds() +
                 " (--rdzv-timeout-s)";
        f.abort = true;  // no restart without that node
        store_->Add(prefix_ + "lost", 1);
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

  // With minus_lost, nodes declared lost are not waited for (they would only run the clock out).
  bool WaitCount(const std::string& key, int64_t target, Clock::time_point deadline, const GiveUp& give_up,
                 bool minus_lost = false) {
    while (store_->Add(key, 0) < target - (minus_lost ? store_->Add(prefix_ + "lost", 0) : 0)) {
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
};

}  // namespace

std::unique_ptr<Rendezvous> JoinStoreRendezvous(const LaunchOptions& options) {
  return std::make_unique<StoreRendezvous>(options);
}

}  // namespace trm::launch
