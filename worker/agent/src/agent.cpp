#include "trm/agent/agent.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "agent_metrics.h"
#include "attempt.h"
#include "trm/common/error.h"
#include "trm/common/net.h"

namespace trm::agent {
namespace fs = std::filesystem;
using std::chrono::milliseconds;

namespace {

constexpr int kFreePorts = 4;
constexpr size_t kEventsPerCall = 500;
constexpr size_t kEagerFlush = 200;  // a buffer this full is sent without waiting for the tick
constexpr int64_t kShutdownFlushMs = 3000;

}  // namespace

Agent::Agent(AgentOptions options, std::shared_ptr<CoordinatorClient> client,
             std::shared_ptr<prometheus::Registry> registry)
    : opt_(std::move(options)), client_(std::move(client)), metrics_(std::make_unique<AgentMetrics>(std::move(registry))) {
  if (!opt_.clock) opt_.clock = SystemClock();
  clock_ = opt_.clock.get();
  if (opt_.devices.empty()) opt_.devices.push_back("cpu0");
  if (opt_.heartbeat_ms > 0) interval_ms_ = opt_.heartbeat_ms;
  metrics_->SetSlots(static_cast<int>(opt_.devices.size()), 0);
}

Agent::~Agent() { Shutdown(); }

void Agent::Start() {
  std::lock_guard<std::mutex> lock(mu_);
  if (started_) return;
  started_ = true;
  heartbeat_thread_ = std::thread([this] { HeartbeatLoop(); });
  reporter_thread_ = std::thread([this] { ReporterLoop(); });
}

void Agent::Shutdown() {
  std::vector<std::shared_ptr<Attempt>> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_) return;
    shutdown_ = true;
    cv_.notify_all();
    for (auto& [k, e] : attempts_) all.push_back(e.attempt);
  }
  if (heartbeat_thread_.joinable()) heartbeat_thread_.join();
  if (reporter_thread_.joinable()) reporter_thread_.join();
  for (auto& a : all) a->Stop("the worker is shutting down");
  for (auto& a : all) a->Join();
  // Tell the coordinator what happened to the ranks if it is there; do not wait long for it.
  const int64_t until = clock_->SteadyMs() + kShutdownFlushMs;
  for (auto& a : all) {
    while (a->events().size() > 0 && clock_->SteadyMs() < until) {
      if (!FlushEvents(*a, 0)) break;
    }
  }
  spdlog::info("worker {}: shut down", opt_.worker_id);
}

std::vector<v1::AttemptStatus> Agent::Attempts() {
  std::vector<std::shared_ptr<Attempt>> all;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [k, e] : attempts_) all.push_back(e.attempt);
  }
  std::vector<v1::AttemptStatus> out;
  for (auto& a : all) out.push_back(a->Status());
  return out;
}

bool Agent::RegisterOnce() {
  v1::RegisterRequest req;
  req.set_worker_id(opt_.worker_id);
  req.set_host(opt_.host);
  req.set_slots(static_cast<int>(opt_.devices.size()));
  req.set_device_kind(opt_.device_kind);
  for (const auto& d : opt_.devices) req.add_devices(d);
  req.set_metrics_endpoint(opt_.metrics_endpoint);
  for (const auto& r : opt_.data_roots) {
    req.add_data_roots(r.given);
    req.add_data_roots(r.resolved);
  }
  try {
    const v1::RegisterResponse resp = client_->Register(req);
    std::lock_guard<std::mutex> lock(mu_);
    if (opt_.heartbeat_ms <= 0) interval_ms_ = resp.heartbeat_interval_ms() > 0 ? resp.heartbeat_interval_ms() : 1000;
    registered_ = true;
    register_failing_ = false;
    spdlog::info("worker {}: registered ({} {} slot(s)); heartbeat every {} ms", opt_.worker_id,
                 opt_.devices.size(), opt_.device_kind, interval_ms_);
    return true;
  } catch (const std::exception& e) {
    // One line per outage, not one per retry.
    if (!register_failing_) spdlog::warn("worker {}: register failed: {}; retrying", opt_.worker_id, e.what());
    register_failing_ = true;
    return false;
  }
}

void Agent::HeartbeatLoop() {
  bool outage = false;
  while (true) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (shutdown_) return;
    }
    if (!registered_) {
      RegisterOnce();
    } else {
      try {
        HeartbeatOnce();
        if (outage) spdlog::info("worker {}: coordinator reachable again", opt_.worker_id);
        outage = false;
      } catch (const std::exception& e) {
        // Ranks keep running and events stay buffered: a coordinator restart loses nothing.
        if (!outage) spdlog::warn("worker {}: heartbeat failed: {}; retrying", opt_.worker_id, e.what());
        outage = true;
      }
    }
    Reap();
    UpdateSlotGauges();
    std::unique_lock<std::mutex> lock(mu_);
    clock_->WaitFor(lock, cv_, milliseconds(interval_ms_), [&] { return shutdown_; });
  }
}

void Agent::HeartbeatOnce() {
  v1::HeartbeatRequest req;
  req.set_worker_id(opt_.worker_id);
  std::vector<std::pair<std::string, int>> finished_now;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& [k, e] : attempts_) {
      if (e.attempt->finished()) finished_now.push_back(k);
    }
  }
  for (const auto& st : Attempts()) *req.add_attempts() = st;
  for (int i = 0; i < kFreePorts; ++i) {
    try {
      req.add_free_ports(static_cast<uint32_t>(PickFreePort()));
    } catch (const Error& e) {
      spdlog::warn("no free port to offer: {}", e.what());
      break;
    }
  }
  const v1::HeartbeatResponse resp = client_->Heartbeat(req);
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& k : finished_now) {
      if (auto it = attempts_.find(k); it != attempts_.end()) it->second.heartbeat_seen_finished = true;
    }
  }
  if (resp.reregister()) {
    spdlog::warn("worker {}: the coordinator does not know this worker; registering again", opt_.worker_id);
    registered_ = false;
    if (RegisterOnce()) {
      // The assignments of this answer were meant for the unregistered us; the coordinator
      // re-sends what still holds.
    }
    return;
  }
  for (const auto& s : resp.stop()) HandleStop(s);
  for (const auto& a : resp.start()) HandleAssignment(a);
}

std::vector<std::string> Agent::AllocateSlots(size_t n) {
  // Caller holds mu_. Devices in use by running attempts are skipped; an over-subscribing
  // assignment (the coordinator's mistake) shares devices rather than failing.
  std::vector<int> busy(opt_.devices.size(), 0);
  for (auto& [k, e] : attempts_) {
    if (e.attempt->running_ranks() == 0) continue;
    for (const auto& d : e.attempt->slot_devices()) {
      auto it = std::find(opt_.devices.begin(), opt_.devices.end(), d);
      if (it != opt_.devices.end()) busy[it - opt_.devices.begin()] = 1;
    }
  }
  std::vector<std::string> out;
  for (size_t i = 0; i < opt_.devices.size() && out.size() < n; ++i) {
    if (!busy[i]) out.push_back(opt_.devices[i]);
  }
  for (size_t i = 0; out.size() < n; ++i) out.push_back(opt_.devices[i % opt_.devices.size()]);
  return out;
}

void Agent::HandleAssignment(const v1::Assignment& a) {
  const auto key = std::make_pair(a.job_id(), a.attempt());
  std::shared_ptr<Attempt> attempt;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shutdown_ || seen_.count(key)) return;  // re-sent until our heartbeat shows it
    seen_.insert(key);
    AttemptSetup s;
    s.assignment = a;
    s.worker_id = opt_.worker_id;
    s.work_dir = opt_.work_dir;
    s.train_binary = opt_.train_binary;
    s.eval_binary = opt_.eval_binary;
    s.device_kind = opt_.device_kind;
    s.slot_devices = AllocateSlots(static_cast<size_t>(a.ranks_size()));
    s.grace_ms = opt_.grace_ms;
    s.data_roots = opt_.data_roots;
    s.retry.max_backoff = milliseconds(opt_.upload_retry_max_ms);
    s.retry.deadline = milliseconds(opt_.retry_deadline_ms);
    try {
      rpc::CheckName(a.job_id(), "assignment job_id");
      const fs::path dir = fs::path(opt_.work_dir) / "jobs" / a.job_id() / ("attempt_" + std::to_string(a.attempt()));
      // Never run an attempt twice: one that ran under an earlier worker process is reported lost.
      s.already_ran = fs::exists(dir);
    } catch (const Error&) {
      // Prepare() reports the bad name as a setup failure.
    }
    attempt = std::make_shared<Attempt>(std::move(s), client_.get(), &fetch_mu_, metrics_.get(), clock_);
    attempts_[key] = Entry{attempt};
  }
  std::string ranks;
  for (int r : a.ranks()) ranks += (ranks.empty() ? "" : ",") + std::to_string(r);
  spdlog::info("worker {}: assignment {}/attempt_{}: ranks [{}] of {}, master {}:{}", opt_.worker_id, a.job_id(),
               a.attempt(), ranks, a.world_size(), a.master_addr(), a.master_port());
  attempt->Start();  // fetches on its own thread, off the heartbeat
}

void Agent::HandleStop(const v1::StopOrder& s) {
  std::shared_ptr<Attempt> a;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = attempts_.find({s.job_id(), s.attempt()});
    if (it == attempts_.end()) return;
    a = it->second.attempt;
  }
  a->Stop("the coordinator stopped the attempt" + (s.reason().empty() ? std::string() : ": " + s.reason()),
          s.preempt(), s.preempt() ? s.grace_ms() : -1);
}

void Agent::Reap() {
  std::vector<std::shared_ptr<Attempt>> gone;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto it = attempts_.begin(); it != attempts_.end();) {
      Attempt& a = *it->second.attempt;
      // Kept until a heartbeat showed it finished and its events are delivered, so the
      // coordinator neither re-sends it nor misses an exit.
      if (a.finished() && it->second.heartbeat_seen_finished && a.events().size() == 0) {
        gone.push_back(it->second.attempt);
        it = attempts_.erase(it);
      } else {
        ++it;
      }
    }
  }
  for (auto& a : gone) {
    a->Join();
    for (int r : a->assignment().ranks()) metrics_->Remove(a->assignment().job_id(), r);
    metrics_->Remove(a->assignment().job_id(), 0);
  }
}

void Agent::UpdateSlotGauges() {
  int busy = 0;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto& [k, e] : attempts_) busy += e.attempt->running_ranks();
  metrics_->SetSlots(static_cast<int>(opt_.devices.size()), busy);
}

bool Agent::FlushEvents(Attempt& a, int64_t) {
  std::vector<v1::WorkerEvent> batch = a.events().Take(kEventsPerCall);
  if (batch.empty()) return true;
  v1::ReportEventsRequest req;
  req.set_worker_id(opt_.worker_id);
  req.set_job_id(a.assignment().job_id());
  req.set_attempt(a.assignment().attempt());
  for (auto& e : batch) *req.add_events() = e;
  try {
    const v1::ReportEventsResponse resp = client_->ReportEvents(req);
    if (resp.stop()) a.Stop("the coordinator says the attempt is over");
    return true;
  } catch (const std::exception& e) {
    a.events().PutBack(std::move(batch));
    spdlog::debug("ReportEvents failed ({} event(s) kept): {}", req.events_size(), e.what());
    return false;
  }
}

void Agent::ReporterLoop() {
  milliseconds backoff{0};
  while (true) {
    std::vector<std::shared_ptr<Attempt>> all;
    {
      std::unique_lock<std::mutex> lock(mu_);
      const auto wait = milliseconds(opt_.report_interval_ms) + backoff;
      // Wakes early for a full buffer (polled at a fine grain: producers do not notify).
      const int64_t until = clock_->SteadyMs() + wait.count();
      for (int64_t now = clock_->SteadyMs(); !shutdown_ && now < until; now = clock_->SteadyMs()) {
        bool full = false;
        for (auto& [k, e] : attempts_) full = full || e.attempt->events().size() >= kEagerFlush;
        if (full && backoff.count() == 0) break;
        clock_->WaitFor(lock, cv_, std::min(milliseconds(50), milliseconds(until - now)), [&] { return shutdown_; });
      }
      if (shutdown_) return;
      for (auto& [k, e] : attempts_) all.push_back(e.attempt);
    }
    bool ok = true;
    for (auto& a : all) {
      if (!registered_) break;  // a coordinator that forgot us would refuse the events
      ok = FlushEvents(*a, 0) && ok;
    }
    backoff = ok ? milliseconds(0) : std::min(backoff * 2 + milliseconds(250), milliseconds(5000));
  }
}

}  // namespace trm::agent
