// The coordinator's state behind Coordinator (coordinator.h): its Impl, shared by the sources
// that implement it (coordinator.cpp; coordinator_eval.cpp: evaluation runs). Private to
// trm_coordinator.
#pragma once

#include <spdlog/spdlog.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>

#include "eval_runs.h"
#include "job_lifecycle.h"
#include "shard_plans.h"
#include "stream_limits.h"
#include "tenancy.h"
#include "weights_only.h"
#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/coordinator/coordinator.h"
#include "trm/coordinator/job_spec.h"
#include "trm/coordinator/metrics.h"
#include "trm/coordinator/scheduler.h"
#include "trm/coordinator/store.h"
#include "trm/data/dataset_shard.h"
#include "trm/rpc/transfer.h"
#include "trm/v1/state.pb.h"
#include "trm/worker/step_metrics.h"

namespace trm::coordinator {

namespace fs = std::filesystem;  // within trm::coordinator only

inline int64_t SystemNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

struct WorkerState {
  v1::WorkerRecord rec;
  int64_t last_seen_ms = 0;
  std::vector<uint32_t> free_ports;
  // Ranks still running in attempts the coordinator no longer counts as active (being stopped):
  // their slots are not free yet.
  int stale_running = 0;
  // Heard from (registered or heartbeated) by this coordinator process. A restarted coordinator
  // gives the workers it knows a full timeout before failing their jobs, but a worker that died
  // while it was down must not count as just heard.
  bool heard = true;
};

using AttemptKey = std::pair<std::string, int>;  // job id, attempt number

// Records of data directories from before owners have none: theirs is "local".
inline std::string OwnerOf(const v1::Job& j) { return j.owner().empty() ? "local" : j.owner(); }


// When an attempt last made progress (in memory: after a coordinator restart every attempt
// gets a fresh budget).
struct Progress {
  struct RankClock {
    v1::RankPhase phase = v1::PHASE_UNSPECIFIED;
    int64_t entered_ms = 0;  // coordinator clock: heartbeat time minus the reported time in phase
    int64_t step = 0;
  };
  int attempt = 0;
  int64_t step = -1;
  int64_t since_ms = 0;
  std::string phase;  // as the rank-0 worker last reported it
  std::map<int, RankClock> ranks;  // ranks that report phases and have not exited
  // Every rank's latest report (Job.ranks) and when its phase began on the coordinator's clock
  // (-1: no phase time reported).
  std::map<int, std::pair<v1::RankStatus, int64_t>> reported;
};

struct Coordinator::Impl {
  CoordinatorOptions opt;
  std::map<std::string, Progress> progress;  // job id -> its active attempt's progress
  std::map<std::string, std::string> warnings;  // job id -> Job.warning (in memory: a live condition)
  std::map<std::string, int64_t> checkpoint_intervals;  // job id -> its checkpoint_interval_steps (metrics)
  std::unique_ptr<ShardPlanner> shards;         // thread-safe on its own; used outside `mu`
  std::mutex shard_build_mu;                    // one shard build at a time, outside `mu`
  std::atomic<bool> backup_running{false};
  std::mutex weights_build_mu;                  // one weights-only build at a time, outside `mu`
  // Every event is a database write: a worker gets 2,000 a second, bursts of 20,000 (a normal
  // run sends one metrics event a step plus rate-limited logs; the agent keeps what is refused).
  RateLimit event_rate{"events", 2000, 20000};
  RateLimit anonymous_audit_rate{"audit entries", 20, 200};  // thread-safe on its own
  std::atomic<int64_t> anonymous_audit_dropped{0};
  std::mutex mu;
  std::condition_variable events_cv;  // notified on every new event
  std::unique_ptr<Store> store;
  std::map<std::string, v1::JobRecord> jobs;
  std::map<std::string, WorkerState> workers;
  std::mt19937_64 rng{std::random_device{}()};

  int64_t Now() const { return opt.now_ms ? opt.now_ms() : SystemNowMs(); }
  fs::path DatasetDir(const std::string& hash) const { return fs::path(opt.data_dir) / "datasets" / hash; }
  fs::path CheckpointDir(const std::string& job, const std::string& name) const {
    return fs::path(opt.data_dir) / "checkpoints" / job / name;
  }
  fs::path WeightsDir(const std::string& job, const std::string& name) const {
    return fs::path(opt.data_dir) / "weights" / job / name;
  }

  v1::JobRecord& Job(const std::string& id) {
    auto it = jobs.find(id);
    if (it == jobs.end()) NotFound("job '" + id + "' does not exist (trmctl list shows the jobs)");
    return it->second;
  }

  // ---- sharing (tenancy.h). With private_reads another user's job reads as absent.
  bool Visible(const v1::Job& j, const Principal& who) const {
    return !opt.private_reads || who.admin() || OwnerOf(j) == who.name;
  }
  v1::JobRecord& VisibleJob(const std::string& id, const Principal& who) {
    v1::JobRecord& r = Job(id);
    if (!Visible(r.job(), who)) NotFound("job '" + id + "' does not exist (trmctl list shows the jobs)");
    return r;
  }
  void RequireOwner(const v1::Job& j, const Principal& who, const std::string& what) const {
    if (who.admin() || OwnerOf(j) == who.name) return;
    ThrowError(Code::kPermissionDenied, "job " + j.id() + " belongs to " + OwnerOf(j) + ": only " + OwnerOf(j) +
                                            " or an admin may " + what + " (" + who.name + " is neither)");
  }
  // A dataset reference: NAME (the caller's newest push), OWNER/NAME, or a content hash (or a
  // prefix of 12+ digits naming one content). The caller's own name comes first, so nobody can
  // take over a hex-looking name by pushing content whose hash starts with it. kNotFound
  // explains what exists instead. `by_hash` (may be null): resolved as a hash.
  v1::DatasetInfo ResolveDataset(const std::string& ref, const Principal& who, const std::string& field,
                                 bool* by_hash = nullptr) {
    if (ref.size() > 300) InvalidArgument(field + ": longer than 300 characters");
    if (by_hash) *by_hash = false;
    if (ref.find('/') == std::string::npos && rpc::NameOk(ref))
      if (auto d = store->FindDatasetName(who.name, ref)) return *d;
    if (MayBeHash(ref)) {
      const std::string scope = opt.private_reads && !who.admin() ? who.name : "";
      auto found = store->FindDatasetHash(ref, scope);
      std::set<std::string> contents;
      for (const auto& d : found) contents.insert(d.content_sha256());
      if (contents.size() > 1) InvalidArgument(field + " '" + ref + "': the prefix matches several datasets; give more digits");
      if (!found.empty()) {
        if (by_hash) *by_hash = true;
        return found.front();
      }
    }
    const DatasetRef r = ParseDatasetRef(ref, who.name, field);
    // An unqualified name was looked up as the caller's own above.
    const bool hidden = opt.private_reads && !who.admin() && r.owner != who.name;
    if (r.qualified && !hidden)
      if (auto d = store->FindDatasetName(r.owner, r.name)) return *d;
    std::string hint = " (trmctl dataset push DIR --name " + r.name + "; trmctl dataset list shows them)";
    if (!r.qualified && (!opt.private_reads || who.admin())) {
      for (const auto& d : store->ListDatasets()) {
        if (d.name() != r.name || d.owner() == who.name) continue;
        hint = "; names are per owner: another user's is " + d.owner() + "/" + d.name() + hint;
        break;
      }
    }
    NotFound(field + ": no dataset " + r.owner + "/" + r.name + hint);
  }
  void PruneAudit() {
    const int64_t now = Now();
    if (now - last_audit_prune_ms < 10 * 60 * 1000) return;
    last_audit_prune_ms = now;
    const int64_t n = store->PruneAudit(now - opt.audit_retention_ms);
    if (n > 0) spdlog::info("audit: pruned {} entries older than {} days", n, opt.audit_retention_ms / 86400000);
  }
  int64_t last_audit_prune_ms = 0;
  // Slots a user's active attempts hold (training: world_size ranks; evaluation: one).
  std::map<std::string, int> SlotsByOwner() const {
    std::map<std::string, int> n;
    for (const auto& [id, r] : jobs)
      if (r.attempt().active()) n[OwnerOf(r.job())] += IsEvalRun(r) ? 1 : AttemptWorldSize(r);
    return n;
  }
  int QuotaOf(const std::string& user) const {
    auto it = opt.quota_slots.find(user);
    return it == opt.quota_slots.end() ? opt.default_quota_slots : it->second;
  }

  // Appends an event to the record (persisted with the record in Mutate's transaction).
  MetricRetention Retention() const { return MetricRetention{opt.metrics_max_points, 64, opt.max_log_lines}; }
  void Emit(v1::JobRecord* rec, v1::JobEvent e) {
    e.set_seq(rec->last_seq() + 1);
    e.set_time_unix_ms(Now());
    store->AppendEvent(rec->job().id(), e, Retention());
    rec->set_last_seq(e.seq());
  }
  void EmitState(v1::JobRecord* rec, const std::string& message) {
    v1::JobEvent e;
    e.mutable_state()->set_state(rec->job().state());
    e.mutable_state()->set_attempt(rec->attempt().number());
    e.mutable_state()->set_message(message);
    rec->mutable_job()->set_message(message);
    Emit(rec, std::move(e));
    spdlog::info("job {}: {} ({})", rec->job().id(), StateName(rec->job().state()), message);
  }

  // The one way a job's record changes: `fn` edits a copy, inside one transaction with the
  // events and other rows it writes; the copy is stored, and replaces the in-memory record only
  // after the transaction committed, so a failed write leaves both as they were.
  template <typename Fn>
  void Mutate(const std::string& id, Fn&& fn) {
    Write(Job(id), std::forward<Fn>(fn));
  }
  // The same for a new job (`fn` gives the fresh record its id).
  template <typename Fn>
  void Insert(Fn&& fn) {
    Write(v1::JobRecord(), std::forward<Fn>(fn));
  }
  template <typename Fn>
  void Write(v1::JobRecord rec, Fn&& fn) {
    Store::Transaction tx(store.get());
    fn(&rec);
    store->PutJob(rec);
    tx.Commit();
    v1::JobRecord& kept = jobs[rec.job().id()];
    kept = std::move(rec);
    events_cv.notify_all();
    PublishJob(kept);
  }

  // Ends job `id`'s active attempt as failed (requeued while restarts remain).
  // An attempt being preempted that fails (a lost worker, a hang) ends as preempted: it was
  // stopping anyway, and its job is not charged a restart for it.
  void FailActiveAttempt(const std::string& id, const std::string& kind, const std::string& why) {
    Mutate(id, [&](v1::JobRecord* rec) {
      EmitState(rec, rec->attempt().preempted_by().empty() ? FailAttempt(rec, kind, why, Now())
                                                           : Preempted(rec, kind + " while stopping: " + why, Now()));
    });
  }

  // ---- preemption. `queued` (a training job) does not fit: plan the fewest lower-priority
  // running jobs (lowest priority first, newest first among equals) whose slots make it fit on
  // the workers it may use (`usable`: their free slots now), and tell them to save and stop.
  // An elastic job counts on its smallest size. Returns the reason the job waits, or "" when no
  // preemption can make it fit.
  std::string Preempt(const v1::JobRecord& queued, const std::vector<coordinator::FreeSlots>& usable) {
    const v1::Job& job = queued.job();
    std::map<std::string, coordinator::FreeSlots> space;
    for (const auto& f : usable) space[f.worker_id] = f;
    auto add = [&](const v1::JobRecord& r, int sign) {
      for (const auto& [worker, n] : SlotsHeld(r)) {
        auto it = space.find(worker);
        if (it == space.end()) {
          const WorkerState& w = workers.at(worker);
          if (!job.spec().data_path().empty() &&
              !WorkerMayRead(w.rec.info(), job.spec().data_path(), opt.require_data_roots))
            continue;
          it = space.emplace(worker, coordinator::FreeSlots{worker, 0, !w.free_ports.empty()}).first;
        }
        it->second.free += sign * n;
      }
    };
    auto fits = [&] {
      std::vector<coordinator::FreeSlots> v;
      for (const auto& [id, f] : space) v.push_back(f);
      return PlaceRanks(WorldSizesOf(queued).back(), v).has_value();
    };
    // Attempts already stopping for this job count as free: no second round of victims.
    std::string stopping;
    for (const auto& [id, r] : jobs)
      if (r.attempt().active() && (r.attempt().preempted_by() == job.id() || Resizing(r))) {
        add(r, +1);
        stopping += (stopping.empty() ? "" : ", ") + id;
      }
    if (!stopping.empty() && fits()) return "waiting for " + stopping + " to save a checkpoint and stop (preempted for it)";
    std::vector<const v1::JobRecord*> candidates;
    for (const auto& [id, r] : jobs)
      if (r.attempt().active() && r.attempt().preempted_by().empty() && !IsEvalRun(r) && !r.job().spec().no_preempt() &&
          r.job().spec().priority() < job.spec().priority())
        candidates.push_back(&r);
    std::stable_sort(candidates.begin(), candidates.end(), [](const v1::JobRecord* a, const v1::JobRecord* b) {
      if (a->job().spec().priority() != b->job().spec().priority())
        return a->job().spec().priority() < b->job().spec().priority();
      return a->job().started_unix_ms() > b->job().started_unix_ms();
    });
    std::vector<const v1::JobRecord*> chosen;
    for (const v1::JobRecord* c : candidates) {
      if (fits()) break;
      add(*c, +1);
      chosen.push_back(c);
    }
    if (chosen.empty() || !fits()) return "";
    // Fewest: drop any chosen one the others make unnecessary (the last chosen are kept first).
    for (size_t i = 0; i < chosen.size();) {
      add(*chosen[i], -1);
      if (fits()) {
        chosen.erase(chosen.begin() + static_cast<long>(i));
      } else {
        add(*chosen[i], +1);
        ++i;
      }
    }
    std::string names;
    for (const v1::JobRecord* c : chosen) {
      const std::string id = c->job().id();
      names += (names.empty() ? "" : ", ") + id;
      Mutate(id, [&](v1::JobRecord* rec) {
        EmitState(rec, StartPreemption(rec, job.id(), job.spec().priority(), Now() + opt.preempt_grace_ms));
      });
    }
    spdlog::info("job {} (priority {}): preempting {}", job.id(), job.spec().priority(), names);
    return "preempting " + names + (stopping.empty() ? "" : ", waiting for " + stopping);
  }

  // Attempts being preempted whose ranks have not all reported by the deadline (plus the worker's
  // own SIGKILL margin) end as preempted: their job resumes from its latest checkpoint.
  void EndOverduePreemptions() {
    const int64_t now = Now();
    std::vector<std::string> overdue;
    for (const auto& [id, r] : jobs)
      if (r.attempt().active() && !r.attempt().preempted_by().empty() &&
          now > r.attempt().preempt_deadline_unix_ms() + opt.heartbeat_timeout_ms)
        overdue.push_back(id);
    for (const auto& id : overdue)
      Mutate(id, [&](v1::JobRecord* rec) {
        EmitState(rec, Preempted(rec, "its ranks did not all report an exit within the grace period", Now()));
      });
  }

  v1::Job WithWarning(v1::Job j) const {
    j.set_owner(OwnerOf(j));
    if (j.state() == v1::JOB_QUEUED)
      if (auto it = queue_reasons.find(j.id()); it != queue_reasons.end()) j.set_queue_reason(it->second);
    if (auto it = warnings.find(j.id()); it != warnings.end() && !Terminal(j.state())) j.set_warning(it->second);
    return j;
  }

  // GetJob's view: also each running rank as last reported (not in lists: they grow with ranks).
  v1::Job WithRanks(v1::Job j) const {
    if (j.state() == v1::JOB_RUNNING)
      if (auto it = progress.find(j.id()); it != progress.end() && it->second.attempt == j.attempt())
        for (const auto& [rank, r] : it->second.reported) {
          v1::RankStatus* out = j.add_ranks();
          *out = r.first;
          if (r.second >= 0 && r.first.phase() != v1::PHASE_EXITED) out->set_phase_elapsed_ms(std::max<int64_t>(0, Now() - r.second));
        }
    return j;
  }

  // Ended jobs whose series are gone (ForgetEndedJobs): publishing them again would bring the
  // series back.
  std::set<std::string> forgotten_jobs;
  bool LongEnded(const v1::Job& j) const {
    return Terminal(j.state()) && opt.job_metrics_linger_ms >= 0 && Now() - j.finished_unix_ms() > opt.job_metrics_linger_ms;
  }
  void ForgetEndedJobs() {
    if (!opt.metrics) return;
    for (const auto& [id, r] : jobs)
      if (LongEnded(r.job()) && forgotten_jobs.insert(id).second) {
        opt.metrics->ForgetJob(id);
        checkpoint_intervals.erase(id);
      }
  }

  void PublishJob(const v1::JobRecord& rec) {
    if (!opt.metrics) return;
    const auto& j = rec.job();
    if (LongEnded(j)) {  // (a coordinator started after it ended, say)
      if (forgotten_jobs.insert(j.id()).second) opt.metrics->ForgetJob(j.id());
      return;
    }
    opt.metrics->SetJobRestarts(j.id(), j.restarts());
    if (rec.attempt().active()) opt.metrics->SetJobWorldSize(j.id(), AttemptWorldSize(rec));
    opt.metrics->SetJobPreemptions(j.id(), j.preemptions());
    if (rec.last_checkpoint_unix_ms() > 0) opt.metrics->SetJobCheckpointTime(j.id(), rec.last_checkpoint_unix_ms());
    const bool running = j.state() == v1::JOB_RUNNING;
    opt.metrics->SetJobRunning(j.id(), running);
    if (!running) opt.metrics->ClearRankPhases(j.id());
    if (IsEvalRun(rec)) return;
    auto interval = checkpoint_intervals.find(j.id());
    if (interval == checkpoint_intervals.end()) {  // the resolved config is read once per job
      int64_t steps = 0;
      try {
        const auto cfg = nlohmann::json::parse(j.resolved_config_json());
        if (cfg.contains("checkpoint_interval_steps")) steps = cfg["checkpoint_interval_steps"].get<int64_t>();
      } catch (const std::exception&) {  // no or odd config: no interval to alert on
      }
      interval = checkpoint_intervals.emplace(j.id(), steps).first;
    }
    const std::string& latest = j.latest_checkpoint();
    const int64_t step = latest.rfind("step_", 0) == 0 ? std::strtoll(latest.c_str() + 5, nullptr, 10) : 0;
    opt.metrics->SetJobCheckpointStep(j.id(), step, interval->second);
  }

  void PublishCounts() {
    if (!opt.metrics) return;
    std::map<std::string, int> by_state;
    for (auto s : {v1::JOB_QUEUED, v1::JOB_RUNNING, v1::JOB_SUCCEEDED, v1::JOB_FAILED, v1::JOB_CANCELLED})
      by_state[StateName(s)] = 0;
    for (const auto& [id, r] : jobs) by_state[StateName(r.job().state())]++;
    opt.metrics->SetJobCounts(by_state);
    int alive = 0, lost = 0, slots = 0, busy = 0;
    const auto reserved = Reserved();
    for (const auto& [id, w] : workers) {
      if (w.rec.info().alive()) {
        ++alive;
        slots += w.rec.info().slots();
        busy += w.rec.info().slots() - FreeSlotsOf(w, reserved);
      } else {
        ++lost;
      }
    }
    opt.metrics->SetWorkerCounts(alive, lost, slots, busy);
  }

  // Slots held by active attempts, by worker.
  std::map<std::string, int> Reserved() const {
    std::map<std::string, int> n;
    for (const auto& [id, r] : jobs)
      for (const auto& [worker, held] : SlotsHeld(r)) n[worker] += held;
    return n;
  }
  int FreeSlotsOf(const WorkerState& w, const std::map<std::string, int>& reserved) const {
    auto it = reserved.find(w.rec.info().id());
    return std::max(0, w.rec.info().slots() - (it == reserved.end() ? 0 : it->second) - w.stale_running);
  }

  std::vector<std::string> JobsOn(const std::string& worker_id) const {
    std::vector<std::string> out;
    for (const auto& [id, r] : jobs) {
      if (!r.attempt().active()) continue;
      for (const auto& p : r.attempt().placement())
        if (p.worker_id() == worker_id) out.push_back(id);
    }
    return out;
  }

  // Queued jobs in the order the scheduler considers them: priority (higher first), evaluation
  // runs after every training job whatever their priorities, then first come first served.
  std::vector<v1::JobRecord*> QueuedInOrder() {
    std::vector<v1::JobRecord*> queued;
    for (auto& [id, r] : jobs)
      if (r.job().state() == v1::JOB_QUEUED) queued.push_back(&r);
    std::stable_sort(queued.begin(), queued.end(), [](const v1::JobRecord* a, const v1::JobRecord* b) {
      if (IsEvalRun(*a) != IsEvalRun(*b)) return IsEvalRun(*b);
      if (a->job().spec().priority() != b->job().spec().priority())
        return a->job().spec().priority() > b->job().spec().priority();
      return QueuedSince(*a) < QueuedSince(*b);
    });
    return queued;
  }
  // When a job joined the queue: submitted, or requeued when its last attempt ended. A job that
  // stopped to resize keeps its place (from when that attempt started): it is not a newcomer.
  static int64_t QueuedSince(const v1::JobRecord& r) {
    const bool resized = !r.attempt().active() && r.attempt().preempted_by() == r.job().id();
    return std::max(r.job().created_unix_ms(), resized ? r.attempt().started_unix_ms() : r.attempt().ended_unix_ms());
  }

  // One scheduling pass. Every queued job it does not start gets a reason (queue_reasons, shown
  // as Job.queue_reason and by trmctl queue). Smaller jobs may start past one that does not fit
  // (backfill) — unless that one has waited longer than max_wait_ms: it then keeps the slots
  // that free up, and the jobs behind it wait, until it fits (no starvation).
  void Schedule() {
    queue_reasons.clear();
    const std::vector<v1::JobRecord*> queued = QueuedInOrder();
    if (queued.empty()) return;
    // Free slots once per pass (not per job: thousands of queued jobs and workers must stay
    // cheap), updated as jobs are placed.
    const auto reserved = Reserved();
    std::vector<coordinator::FreeSlots> free;
    int live = 0;
    bool confined = opt.require_data_roots;  // may a data path limit where a job runs?
    for (const auto& [id, w] : workers) {
      if (!w.rec.info().alive()) continue;
      ++live;
      confined = confined || w.rec.info().data_roots_size() > 0;
      const int n = FreeSlotsOf(w, reserved);
      if (n > 0) free.push_back({id, n, !w.free_ports.empty()});
    }
    auto free_text = [&](int want, const std::string& where) {
      int n = 0, on = 0;
      for (const auto& f : free) {
        n += f.free;
        on += f.free > 0;
      }
      return "needs " + std::to_string(want) + " slot" + (want == 1 ? "" : "s") + where + "; " + std::to_string(n) +
             " free on " + std::to_string(on) + " of " + std::to_string(live) + " live worker" + (live == 1 ? "" : "s");
    };
    bool training_waits = false;
    // An elastic job stopping to grow counts on the slots free now: until it is placed again,
    // only jobs of a higher priority may take them (evaluation runs wait too).
    const v1::JobRecord* resizing = nullptr;
    for (const auto& [id, r] : jobs)
      if (Resizing(r)) resizing = &r;
    if (resizing) training_waits = true;
    std::string reserving;  // a starving job that keeps the slots as they free up
    std::map<std::string, int> held = SlotsByOwner();
    const int64_t now = Now();
    for (v1::JobRecord* queued_rec : queued) {
      const v1::Job& job = queued_rec->job();
      const std::string id = job.id(), owner = OwnerOf(job);
      // An elastic job runs on the largest of its sizes that fits (its quota included).
      std::vector<int> sizes = IsEvalRun(*queued_rec) ? std::vector<int>{1} : WorldSizesOf(*queued_rec);
      const int quota = QuotaOf(owner), want = sizes.back();
      if (quota > 0)
        sizes.erase(std::remove_if(sizes.begin(), sizes.end(), [&](int n) { return held[owner] + n > quota; }),
                    sizes.end());
      if (sizes.empty()) {
        // Over quota: waits without holding anything back from other users' jobs.
        queue_reasons[id] = "over " + owner + "'s quota: " + owner + " holds " + std::to_string(held[owner]) + " of " +
                            std::to_string(quota) + " slots (--quota-slots); this job needs " + std::to_string(want);
        continue;
      }
      if (IsEvalRun(*queued_rec)) {
        // A queued training job that did not fit keeps every free slot: an evaluation run never
        // takes a slot a training job could use first.
        if (training_waits) {
          queue_reasons[id] = "evaluation runs start after every waiting training job";
          continue;
        }
        if (!free.empty()) PlaceEval(queued_rec, &free);
        if (jobs.at(id).attempt().active()) held[owner] += 1;
        else if (jobs.at(id).job().state() == v1::JOB_QUEUED) queue_reasons[id] = free_text(1, "");
        continue;
      }
      if (resizing && job.spec().priority() <= resizing->job().spec().priority()) {
        queue_reasons[id] = "waiting while " + resizing->job().id() + " stops to resize onto the free slots";
        continue;
      }
      // A job whose attempt ended waits until each worker of that attempt has been heard from
      // since, or is lost: when a worker's machine dies, its peers' ranks fail at once, before
      // its heartbeats stop counting, and a retry placed on it would fail too (an elastic job
      // would also shrink for nothing when the failure was elsewhere).
      if (const std::string unheard = UnheardSinceItsAttempt(*queued_rec); !unheard.empty()) {
        training_waits = true;
        // The slots its attempt had stay its meanwhile (nobody behind it backfills into them);
        // after a resize, every free slot (it stopped to grow onto them).
        const bool resized = queued_rec->attempt().preempted_by() == id;
        for (auto& f : free)
          for (const auto& p : queued_rec->attempt().placement())
            if (resized || f.worker_id == p.worker_id()) f.free = 0;
        queue_reasons[id] = "waiting for " + unheard + " to report after attempt " +
                            std::to_string(queued_rec->attempt().number()) +
                            " ended (a worker that died is lost after --heartbeat-timeout-s)";
        continue;
      }
      // A data_path job goes only to workers whose --data-root holds the path.
      std::vector<coordinator::FreeSlots> usable;
      for (const auto& f : free)
        if (job.spec().data_path().empty() ||
            WorkerMayRead(workers[f.worker_id].rec.info(), job.spec().data_path(), opt.require_data_roots))
          usable.push_back(f);
      std::optional<std::vector<RankGroup>> placement;
      for (int n : sizes)
        if (!usable.empty() && (placement = PlaceRanks(n, usable))) break;
      if (!placement) {
        training_waits = true;
        queue_reasons[id] = free_text(want, job.spec().data_path().empty() || !confined ? "" : " that may read " + job.spec().data_path());
        // The free slots of the workers it may use stay its while it waits for the jobs it
        // preempts to stop, or once it has waited past max_wait_ms (and could fit on them at
        // all): nobody behind it takes them, so it starts as soon as enough have freed.
        auto keep_its_slots = [&] {
          for (auto& f : free)
            for (const auto& u : usable)
              if (f.worker_id == u.worker_id) f.free = 0;
        };
        if (const std::string why = Preempt(*queued_rec, usable); !why.empty()) {
          queue_reasons[id] = why;
          keep_its_slots();
          continue;
        }
        if (opt.max_wait_ms > 0 && now - QueuedSince(*queued_rec) > opt.max_wait_ms && CouldEverFit(*queued_rec)) {
          reserving = id;
          keep_its_slots();
          queue_reasons[id] += "; waited longer than --max-wait-s: keeps the slots that free up";
        } else if (!reserving.empty()) {
          queue_reasons[id] += " (behind " + reserving +
                               ", which has waited longer than --max-wait-s and keeps the slots that free up on its workers)";
        }
        continue;  // later, smaller jobs may still fit (backfill)
      }
      for (const auto& g : *placement) {
        held[owner] += static_cast<int>(g.ranks.size());
        for (auto& f : free)
          if (f.worker_id == g.worker_id) f.free -= static_cast<int>(g.ranks.size());
      }
      WorkerState& head = workers[placement->front().worker_id];
      const uint32_t port = head.free_ports.back();
      head.free_ports.pop_back();  // no second job this tick gets the same port
      for (auto& f : free)
        if (f.worker_id == placement->front().worker_id) f.has_ports = !head.free_ports.empty();
      Mutate(id, [&](v1::JobRecord* rec) { EmitState(rec, Place(rec, *placement, head.rec.info().host(), port, Now())); });
    }
  }
  std::map<std::string, std::string> queue_reasons;  // queued job -> why it waits (the latest pass)

  // The live workers of the job's ended attempt not heard from since it ended ("" when none).
  std::string UnheardSinceItsAttempt(const v1::JobRecord& rec) const {
    std::string out;
    if (rec.attempt().active() || rec.attempt().ended_unix_ms() == 0) return out;
    for (const auto& p : rec.attempt().placement()) {
      auto it = workers.find(p.worker_id());
      if (it == workers.end() || !it->second.rec.info().alive() ||
          (it->second.heard && it->second.last_seen_ms >= rec.attempt().ended_unix_ms()))
        continue;
      out += (out.empty() ? "" : ", ") + p.worker_id();
    }
    return out;
  }

  // Whether the job fits (on its smallest size) on the live workers it may use were they all idle
  // (a reservation must not hold slots for a job that can no longer start, say after a worker
  // was lost).
  bool CouldEverFit(const v1::JobRecord& rec) const {
    const v1::Job& job = rec.job();
    std::vector<coordinator::FreeSlots> all;
    for (const auto& [id, w] : workers)
      if (w.rec.info().alive() &&
          (job.spec().data_path().empty() || WorkerMayRead(w.rec.info(), job.spec().data_path(), opt.require_data_roots)))
        all.push_back({id, w.rec.info().slots(), true});
    return PlaceRanks(WorldSizesOf(rec).back(), all).has_value();
  }

  // Grows one elastic job running below its largest size onto slots that are free now, when no
  // training job waits and its attempt has run elastic_grow_after_ms: its ranks save and stop
  // (like a preemption, charged to nothing), and the next placement uses the largest size that
  // fits. Only workers heard from since the attempt started count (not one that is dying).
  void GrowElastic() {
    if (opt.elastic_grow_after_ms <= 0) return;
    for (const auto& [id, r] : jobs)
      if ((r.job().state() == v1::JOB_QUEUED && !IsEvalRun(r)) || Resizing(r)) return;
    const auto reserved = Reserved();
    const std::map<std::string, int> held = SlotsByOwner();
    const int64_t now = Now();
    for (const auto& [id, r] : jobs) {
      if (!r.attempt().active() || IsEvalRun(r) || !r.attempt().preempted_by().empty() ||
          now - r.attempt().started_unix_ms() < opt.elastic_grow_after_ms)
        continue;
      const std::vector<int> sizes = WorldSizesOf(r);
      const int current = AttemptWorldSize(r), quota = QuotaOf(OwnerOf(r.job()));
      if (current >= sizes.front()) continue;
      const auto mine = SlotsHeld(r);
      std::vector<coordinator::FreeSlots> space;
      for (const auto& [wid, w] : workers) {
        if (!w.rec.info().alive() || !w.heard || w.last_seen_ms < r.attempt().started_unix_ms()) continue;
        if (!r.job().spec().data_path().empty() &&
            !WorkerMayRead(w.rec.info(), r.job().spec().data_path(), opt.require_data_roots))
          continue;
        auto it = mine.find(wid);
        const int n = FreeSlotsOf(w, reserved) + (it == mine.end() ? 0 : it->second);
        if (n > 0) space.push_back({wid, n, !w.free_ports.empty()});
      }
      for (int n : sizes) {
        if (n <= current) break;
        if (quota > 0 && held.at(OwnerOf(r.job())) - current + n > quota) continue;
        if (!PlaceRanks(n, space)) continue;
        const std::string job_id = id;
        Mutate(job_id, [&](v1::JobRecord* rec) { EmitState(rec, StartResize(rec, n, Now() + opt.preempt_grace_ms)); });
        return;  // one at a time: the next pass sees the slots it takes
      }
    }
  }

  void LoseWorkers() {
    const int64_t now = Now();
    for (auto& [id, w] : workers) {
      if (!w.rec.info().alive() || now - w.last_seen_ms <= opt.heartbeat_timeout_ms) continue;
      w.rec.mutable_info()->set_alive(false);
      w.free_ports.clear();
      w.stale_running = 0;
      store->PutWorker(w.rec);
      spdlog::warn("worker {} lost: no heartbeat for {} ms", id, now - w.last_seen_ms);
      for (const std::string& job_id : JobsOn(id))
        FailActiveAttempt(job_id, "lost_worker",
                          "worker " + id + " sent no heartbeat for " + std::to_string((now - w.last_seen_ms) / 1000) +
                              " s");
    }
  }

  int64_t PhaseBudgetMs(v1::RankPhase phase) const {
    std::string name = v1::RankPhase_Name(phase);  // PHASE_ALLREDUCE -> allreduce
    name = name.substr(name.find('_') + 1);
    std::transform(name.begin(), name.end(), name.begin(), [](unsigned char c) { return std::tolower(c); });
    if (auto it = opt.phase_budget_ms.find(name); it != opt.phase_budget_ms.end()) return it->second;
    if (phase == v1::PHASE_STARTING) return opt.start_timeout_ms;
    if (phase == v1::PHASE_CHECKPOINT || phase == v1::PHASE_EVAL) return std::max<int64_t>(opt.hang_timeout_ms, 30 * 60 * 1000);
    return opt.hang_timeout_ms;
  }

  Progress& ProgressOf(const std::string& job_id, int attempt) {
    Progress& p = progress[job_id];
    if (p.attempt != attempt) p = Progress{attempt, -1, Now(), "", {}};
    return p;
  }

  // Why the job's active attempt counts as hung, or "" while it makes progress.
  std::string HangReason(const Progress& p, int64_t now) const {
    for (const auto& [rank, rc] : p.ranks) {
      const int64_t in_phase = now - rc.entered_ms, budget = PhaseBudgetMs(rc.phase);
      if (in_phase > budget)
        return fmt::format("rank {} in {} for {:.1f} s at step {} (budget {:.0f} s)", rank, v1::RankPhase_Name(rc.phase),
                           in_phase / 1000.0, rc.step, budget / 1000.0);
    }
    if (!p.ranks.empty()) return "";
    const int64_t budget = p.step < 0 ? opt.start_timeout_ms : opt.hang_timeout_ms;
    if (now - p.since_ms <= budget) return "";
    return (p.step < 0 ? std::string("no first step") : "no step after step " + std::to_string(p.step)) + " for " +
           std::to_string((now - p.since_ms) / 1000) + " s" + (p.phase.empty() ? "" : " (rank 0 phase " + p.phase + ")");
  }

  void DetectHangs() {
    const int64_t now = Now();
    std::vector<std::pair<std::string, std::string>> hung;
    for (const auto& [id, r] : jobs) {
      if (!r.attempt().active()) continue;
      const std::string why = HangReason(ProgressOf(id, r.attempt().number()), now);
      if (!why.empty()) hung.emplace_back(id, why);
    }
    for (const auto& [id, why] : hung) FailActiveAttempt(id, "hang", why);
  }

  // Drops the rows of checkpoints retention lets go; returns their directories, which the caller
  // deletes only after the transaction commits (a failed commit must not lose files).
  std::vector<fs::path> Retain(const std::string& job_id, const v1::JobRecord& rec) {
    std::vector<fs::path> doomed;
    auto list = store->ListCheckpoints(job_id);
    if (static_cast<int>(list.size()) <= opt.keep_last_checkpoints) return doomed;
    std::set<std::string> keep;
    for (size_t i = list.size() - std::min<size_t>(list.size(), static_cast<size_t>(std::max(1, opt.keep_last_checkpoints)));
         i < list.size(); ++i)
      keep.insert(list[i].info().name());
    if (const v1::CheckpointRecord* best = BestCheckpoint(list, opt.keep_best_metric)) keep.insert(best->info().name());
    keep.insert(rec.job().latest_checkpoint());
    if (rec.attempt().active()) keep.insert(rec.attempt().resume_checkpoint());
    // A running evaluation run is reading its checkpoint; a queued one fails when it is gone.
    for (const auto& [id, r] : jobs)
      if (IsEvalRun(r) && r.attempt().active() && r.job().spec().eval().source_job() == job_id)
        keep.insert(r.job().spec().eval().checkpoint());
    for (const auto& c : list) {
      if (keep.count(c.info().name())) continue;
      store->DeleteCheckpoint(job_id, c.info().name());
      doomed.push_back(CheckpointDir(job_id, c.info().name()));
      doomed.push_back(WeightsDir(job_id, c.info().name()));
      if (opt.metrics) opt.metrics->DropCheckpointEvals(job_id, c.info().name());
    }
    return doomed;
  }

  // The attempts a heartbeat lists: those that are over are told to stop (their running ranks
  // hold slots until they do), current ones update their ranks' phase clocks and count as taken
  // up by the worker. Returns the attempts listed.
  std::set<AttemptKey> TakeAttempts(WorkerState* w, const v1::HeartbeatRequest& req, v1::HeartbeatResponse* resp) {
    std::set<AttemptKey> listed;
    w->stale_running = 0;
    for (const auto& a : req.attempts()) {
      listed.insert({a.job_id(), a.attempt()});
      auto jit = jobs.find(a.job_id());
      const bool current = jit != jobs.end() && jit->second.attempt().active() &&
                           jit->second.attempt().number() == a.attempt();
      if (!current) {
        for (const auto& r : a.ranks()) w->stale_running += r.phase() != v1::PHASE_EXITED;
        v1::StopOrder* s = resp->add_stop();
        s->set_job_id(a.job_id());
        s->set_attempt(a.attempt());
        s->set_reason(jit == jobs.end() ? "unknown job" : "attempt " + std::to_string(a.attempt()) + " is over");
        continue;
      }
      if (const std::string& by = jit->second.attempt().preempted_by(); !by.empty()) {
        // Repeated on every heartbeat until the ranks are gone (a worker acts on the first).
        v1::StopOrder* s = resp->add_stop();
        s->set_job_id(a.job_id());
        s->set_attempt(a.attempt());
        s->set_reason(by == a.job_id() ? "resizing onto more ranks" : "preempted by " + by);
        s->set_preempt(true);
        s->set_grace_ms(std::max<int64_t>(0, jit->second.attempt().preempt_deadline_unix_ms() - Now()));
      }
      Progress& p = ProgressOf(a.job_id(), a.attempt());
      for (const auto& r : a.ranks()) {
        p.reported[r.rank()] = {r, r.has_phase_elapsed_ms() ? Now() - r.phase_elapsed_ms() : -1};
        if (opt.metrics) {
          std::string phase = v1::RankPhase_Name(r.phase());  // PHASE_ALLREDUCE -> allreduce
          phase = phase.substr(phase.find('_') + 1);
          std::transform(phase.begin(), phase.end(), phase.begin(), [](unsigned char c) { return std::tolower(c); });
          const bool timed = r.phase() != v1::PHASE_EXITED && r.has_phase_elapsed_ms();
          opt.metrics->SetRankPhase(a.job_id(), r.rank(), timed ? phase : "", Now() - r.phase_elapsed_ms());
        }
        if (r.rank() == 0) p.phase = v1::RankPhase_Name(r.phase());
        if (r.phase() == v1::PHASE_EXITED || !r.has_phase_elapsed_ms()) {
          p.ranks.erase(r.rank());
        } else {
          p.ranks[r.rank()] = Progress::RankClock{r.phase(), Now() - r.phase_elapsed_ms(), r.step()};
        }
      }
      const auto& acked = jit->second.attempt().acked_workers();
      if (std::find(acked.begin(), acked.end(), req.worker_id()) == acked.end())
        Mutate(a.job_id(), [&](v1::JobRecord* rec) { rec->mutable_attempt()->add_acked_workers(req.worker_id()); });
    }
    return listed;
  }

  // Assignments not yet taken up are sent again until the worker lists them. Their shards are
  // planned by the caller outside the lock (shard_plans.h): `shards` gets the index in
  // resp->start() of each assignment that may read one and what its plan depends on.
  void Assign(const std::string& worker_id, const std::set<AttemptKey>& listed, v1::HeartbeatResponse* resp,
              std::vector<std::pair<int, ShardRequest>>* shards) const {
    for (const auto& [id, rec] : jobs) {
      const auto& a = rec.attempt();
      if (!a.active() || listed.count({id, a.number()})) continue;
      if (std::find(a.acked_workers().begin(), a.acked_workers().end(), worker_id) != a.acked_workers().end())
        continue;
      for (const auto& p : a.placement()) {
        if (p.worker_id() != worker_id) continue;
        if (IsEvalRun(rec)) {
          *resp->add_start() = EvalRunAssignment(rec);
          continue;
        }
        v1::Assignment* s = resp->add_start();
        s->set_job_id(id);
        s->set_attempt(a.number());
        s->set_world_size(AttemptWorldSize(rec));
        s->mutable_ranks()->CopyFrom(p.ranks());
        s->set_master_addr(a.master_addr());
        s->set_master_port(a.master_port());
        s->set_config_json(rec.job().resolved_config_json());
        s->set_dataset_hash(rec.job().dataset_hash());
        if (rec.job().dataset_hash().empty()) s->set_data_path(rec.job().spec().data_path());
        s->set_resume_checkpoint(a.resume_checkpoint());
        if (!rec.job().dataset_hash().empty())
          shards->emplace_back(resp->start_size() - 1,
                               ShardRequestFor(rec, std::vector<int>(p.ranks().begin(), p.ranks().end())));
      }
    }
  }

  bool ApplyEvents(v1::JobRecord* record, const v1::ReportEventsRequest& req, v1::ReportEventsResponse* resp);

  // ---- checkpoints and evaluation runs (eval_runs.h); all under `mu`.
  std::optional<v1::CheckpointRecord> FindCheckpoint(const std::string& job_id, const std::string& name) {
    for (auto& c : store->ListCheckpoints(job_id))
      if (c.info().name() == name) return c;
    return std::nullopt;
  }
  v1::CheckpointRecord PickCheckpoint(const std::string& job_id, const std::string& selector);
  std::pair<v1::DatasetInfo, v1::Manifest> StoredDataset(const std::string& ref, const std::string& field,
                                                         const Principal& who);
  v1::JobSpec ResolveEvalSpec(v1::JobSpec spec, const Principal& who);
  std::string InsertEvalRun(const v1::JobSpec& spec, const std::string& owner);
  void SubmitAutoEval(const v1::Job& job, const std::string& checkpoint);
  void PlaceEval(v1::JobRecord* queued, std::vector<coordinator::FreeSlots>* free);
  void RecordEvalResult(const v1::JobRecord& run, const v1::EvalResult& reported);
  void PublishEvals(const std::string& job_id, const v1::CheckpointInfo& info) {
    if (!opt.metrics) return;
    for (const auto& r : info.evals())
      for (const auto& [metric, value] : r.metrics())
        opt.metrics->SetCheckpointEval(job_id, info.name(), r.dataset(), metric, value);
  }
  // After a restore (backup.cpp): the snapshot's running attempts end as void, their jobs queued.
  void VoidRestoredAttempts();

  std::string NewJobId() {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "job-%06lld", static_cast<long long>(store->NextJobNumber()));
    return buf;
  }

  // ---- uploads: into a fresh directory under tmp/, verified and moved into place on commit.
  std::string NewUploadDir(const std::string& kind) {
    std::lock_guard<std::mutex> l(mu);
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(rng()));
    return (fs::path(opt.data_dir) / "tmp" / (kind + "-" + buf)).string();
  }

  v1::DatasetInfo CommitDataset(rpc::FileReceiver* received, const std::string& owner, const std::string& name) {
    const v1::Manifest& m = received->manifest();
    const std::string hash = rpc::ContentHash(m);
    if (!m.content_sha256().empty() && m.content_sha256() != hash)
      InvalidArgument("manifest.content_sha256 does not match its files");
    const fs::path dir = DatasetDir(hash);
    received->Commit(dir.string());  // keeps an existing copy of the same content
    v1::Manifest stored = m;
    stored.set_content_sha256(hash);
    WriteFileAtomic(dir.string() + ".manifest", stored.SerializeAsString());
    v1::DatasetInfo info;
    info.set_owner(owner);
    info.set_name(name);
    info.set_content_sha256(hash);
    info.set_size_bytes(m.total_bytes());
    info.set_files(m.files_size());
    info.set_created_unix_ms(Now());
    std::lock_guard<std::mutex> l(mu);
    Store::Transaction tx(store.get());
    store->PutDataset(info);
    tx.Commit();
    spdlog::info("dataset {}/{} pushed: {} ({} bytes)", owner, name, hash.substr(0, 12), m.total_bytes());
    return info;
  }

  // A checkpoint upload must name the job's current attempt and a step_<step> checkpoint;
  // checked before its data is accepted and again when it commits.
  void CheckUpload(const v1::CheckpointUploadHeader& h) {
    rpc::CheckName(h.info().name(), "info.name");
    if (h.info().name() != "step_" + std::to_string(h.info().step()))
      InvalidArgument("info.name '" + h.info().name() + "': expected step_" + std::to_string(h.info().step()));
    std::lock_guard<std::mutex> l(mu);
    const v1::JobRecord& rec = Job(h.job_id());
    if (h.attempt() != rec.attempt().number())
      ThrowError(Code::kFailedPrecondition, "job " + h.job_id() + ": attempt " + std::to_string(h.attempt()) +
                                                " is not the current attempt " + std::to_string(rec.attempt().number()));
  }

  v1::CheckpointInfo CommitCheckpoint(const v1::CheckpointUploadHeader& h, rpc::FileReceiver* received) {
    CheckUpload(h);
    const fs::path dir = CheckpointDir(h.job_id(), h.info().name());
    received->Commit(dir.string(), /*replace=*/true);
    v1::CheckpointRecord c;
    *c.mutable_info() = h.info();
    *c.mutable_manifest() = received->manifest();
    c.mutable_manifest()->set_content_sha256(rpc::ContentHash(received->manifest()));
    c.mutable_info()->set_size_bytes(received->manifest().total_bytes());
    c.mutable_info()->set_content_sha256(c.manifest().content_sha256());
    c.mutable_info()->set_created_unix_ms(Now());
    std::lock_guard<std::mutex> l(mu);
    std::vector<fs::path> doomed;
    // The same checkpoint uploaded again (a resumed attempt) keeps its evaluation results.
    if (auto old = FindCheckpoint(h.job_id(), c.info().name()); old && old->info().content_sha256() == c.info().content_sha256())
      *c.mutable_info()->mutable_evals() = old->info().evals();
    Mutate(h.job_id(), [&](v1::JobRecord* rec) {
      store->PutCheckpoint(h.job_id(), c);
      auto list = store->ListCheckpoints(h.job_id());
      rec->mutable_job()->set_latest_checkpoint(list.back().info().name());
      rec->set_last_checkpoint_unix_ms(Now());
      v1::JobEvent e;
      *e.mutable_checkpoint() = c.info();
      Emit(rec, std::move(e));
      doomed = Retain(h.job_id(), *rec);
    });
    for (const auto& d : doomed) RemoveWeightsOnly(d.string());  // a checkpoint or its weights-only form
    warnings.erase(h.job_id());
    spdlog::info("job {}: checkpoint {} committed ({} bytes)", h.job_id(), c.info().name(), c.info().size_bytes());
    const auto& job = jobs.at(h.job_id()).job();
    if (!job.eval_dataset_hash().empty()) SubmitAutoEval(job, c.info().name());
    return c.info();
  }

  // An upload that failed while receiving or committing: a full disk (kResourceExhausted)
  // becomes the job's warning until an upload succeeds; the worker keeps the checkpoint and
  // retries.
  void UploadFailed(const v1::CheckpointUploadHeader& h, const Error& error) {
    if (error.code() != Code::kResourceExhausted) return;
    std::lock_guard<std::mutex> l(mu);
    if (!jobs.count(h.job_id())) return;
    const std::string warning = "checkpoint " + h.info().name() +
                                " cannot be stored (the worker keeps it and retries): " + error.what();
    if (warnings[h.job_id()] != warning) spdlog::error("job {}: {}", h.job_id(), warning);
    warnings[h.job_id()] = warning;
  }
};

}  // namespace trm::coordinator
