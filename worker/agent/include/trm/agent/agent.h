// The worker agent (trm-worker): registers with the coordinator, heartbeats what it runs,
// starts one trm-train per assigned rank, forwards logs / metrics / checkpoints / exits, and
// stops ranks when told. Coordinator outages are survived: ranks keep running, events are
// buffered (bounded) and delivered once the coordinator answers again.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "trm/common/path_confine.h"
#include "trm/agent/clock.h"
#include "trm/agent/coordinator_client.h"

namespace prometheus {
class Registry;
}

namespace trm::agent {

class Attempt;
class AgentMetrics;

struct AgentOptions {
  std::string worker_id;
  std::string host = "127.0.0.1";
  std::string device_kind = "cpu";   // cpu | cuda
  std::vector<std::string> devices;  // one per slot: "cpu0".. or GPU indices
  std::string work_dir = "trm-worker";
  std::string train_binary;          // absolute path of trm-train
  std::string eval_binary;           // absolute path of trm-eval (evaluation runs)
  int64_t heartbeat_ms = 0;          // 0: the coordinator's interval
  std::string metrics_endpoint;      // told to the coordinator
  int64_t grace_ms = 5000;           // SIGTERM -> SIGKILL
  int64_t report_interval_ms = 500;  // ReportEvents cadence
  int64_t upload_retry_max_ms = 10000;      // the longest backoff of a retried fetch or upload
  int64_t retry_deadline_ms = 30 * 60 * 1000;  // a fetch or upload is given up after this
  std::shared_ptr<Clock> clock;               // every time-driven wait; null: SystemClock()
  // --data-root: a job's data_path must resolve inside one of these (checked before the
  // ranks start); empty: any path (the coordinator sends none under auth).
  std::vector<DataRoot> data_roots;
};

class Agent {
 public:
  // `registry` may be null (no Prometheus).
  Agent(AgentOptions options, std::shared_ptr<CoordinatorClient> client,
        std::shared_ptr<prometheus::Registry> registry = nullptr);
  ~Agent();  // Shutdown()
  Agent(const Agent&) = delete;
  Agent& operator=(const Agent&) = delete;

  // Starts the heartbeat and reporter threads.
  void Start();
  // Stops every attempt (SIGTERM, SIGKILL after the grace period, reaped), flushes what events
  // it can within a few seconds, joins. Idempotent.
  void Shutdown();

  // For tests and metrics: attempts known (running or with undelivered events).
  std::vector<v1::AttemptStatus> Attempts();
  bool registered() const { return registered_; }

 private:
  void HeartbeatLoop();
  void ReporterLoop();
  bool RegisterOnce();
  void HeartbeatOnce();
  void HandleAssignment(const v1::Assignment& a);
  void HandleStop(const v1::StopOrder& s);
  void Reap();  // drops finished attempts whose events are delivered
  void UpdateSlotGauges();
  bool FlushEvents(Attempt& a, int64_t deadline_budget_ms);
  std::vector<std::string> AllocateSlots(size_t n);

  AgentOptions opt_;
  Clock* clock_;  // opt_.clock's
  std::shared_ptr<CoordinatorClient> client_;
  std::unique_ptr<AgentMetrics> metrics_;
  std::mutex fetch_mu_;  // one download at a time: same content is fetched once

  std::mutex mu_;
  std::condition_variable cv_;
  bool shutdown_ = false;
  std::atomic<bool> registered_{false};
  bool register_failing_ = false;  // heartbeat thread only
  int64_t interval_ms_ = 1000;
  struct Entry {
    std::shared_ptr<Attempt> attempt;
    bool heartbeat_seen_finished = false;  // a heartbeat reported it finished
  };
  std::map<std::pair<std::string, int>, Entry> attempts_;
  std::set<std::pair<std::string, int>> seen_;
  std::thread heartbeat_thread_, reporter_thread_;
  bool started_ = false;
};

}  // namespace trm::agent
