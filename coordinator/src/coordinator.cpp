#include "trm/coordinator/coordinator.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <set>

#include "eval_runs.h"
#include "job_lifecycle.h"
#include "shard_plans.h"
#include "stream_limits.h"
#include "weights_only.h"
#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/coordinator/job_spec.h"
#include "trm/coordinator/metrics.h"
#include "trm/coordinator/scheduler.h"
#include "trm/coordinator/store.h"
#include "trm/data/dataset_shard.h"
#include "trm/rpc/transfer.h"
#include "trm/v1/state.pb.h"
#include "trm/worker/step_metrics.h"

namespace fs = std::filesystem;

namespace trm::coordinator {
namespace {

int64_t SystemNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

void CheckJobId(const std::string& id) {
  if (id.empty()) InvalidArgument("job_id is required");
  rpc::CheckName(id, "job_id");
}

struct WorkerState {
  v1::WorkerRecord rec;
  int64_t last_seen_ms = 0;
  std::vector<uint32_t> free_ports;
  // Ranks still running in attempts the coordinator no longer counts as active (being stopped):
  // their slots are not free yet.
  int stale_running = 0;
};

using AttemptKey = std::pair<std::string, int>;  // job id, attempt number

}  // namespace

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
};

struct Coordinator::Impl {
  CoordinatorOptions opt;
  std::map<std::string, Progress> progress;  // job id -> its active attempt's progress
  std::map<std::string, std::string> warnings;  // job id -> Job.warning (in memory: a live condition)
  std::unique_ptr<ShardPlanner> shards;         // thread-safe on its own; used outside `mu`
  std::mutex shard_build_mu;                    // one shard build at a time, outside `mu`
  std::mutex weights_build_mu;                  // one weights-only build at a time, outside `mu`
  // Every event is a database write: a worker gets 2,000 a second, bursts of 20,000 (a normal
  // run sends one metrics event a step plus rate-limited logs; the agent keeps what is refused).
  RateLimit event_rate{"events", 2000, 20000};
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

  // Appends an event to the record (persisted with the record in Mutate's transaction).
  void Emit(v1::JobRecord* rec, v1::JobEvent e) {
    e.set_seq(rec->last_seq() + 1);
    e.set_time_unix_ms(Now());
    store->AppendEvent(rec->job().id(), e);
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
  void FailActiveAttempt(const std::string& id, const std::string& kind, const std::string& why) {
    Mutate(id, [&](v1::JobRecord* rec) { EmitState(rec, FailAttempt(rec, kind, why, Now())); });
  }

  v1::Job WithWarning(v1::Job j) const {
    if (auto it = warnings.find(j.id()); it != warnings.end() && !Terminal(j.state())) j.set_warning(it->second);
    return j;
  }

  void PublishJob(const v1::JobRecord& rec) {
    if (!opt.metrics) return;
    const auto& j = rec.job();
    opt.metrics->SetJobRestarts(j.id(), j.restarts());
    if (rec.last_checkpoint_unix_ms() > 0) opt.metrics->SetJobCheckpointTime(j.id(), rec.last_checkpoint_unix_ms());
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

  void Schedule() {
    std::vector<v1::JobRecord*> queued;
    for (auto& [id, r] : jobs)
      if (r.job().state() == v1::JOB_QUEUED) queued.push_back(&r);
    // Evaluation runs after every training job, whatever their priorities.
    std::stable_sort(queued.begin(), queued.end(), [](const v1::JobRecord* a, const v1::JobRecord* b) {
      if (IsEvalRun(*a) != IsEvalRun(*b)) return IsEvalRun(*b);
      if (a->job().spec().priority() != b->job().spec().priority())
        return a->job().spec().priority() > b->job().spec().priority();
      return a->job().created_unix_ms() < b->job().created_unix_ms();
    });
    if (queued.empty()) return;
    // Free slots once per pass (not per job: thousands of queued jobs and workers must stay
    // cheap), updated as jobs are placed.
    const auto reserved = Reserved();
    std::vector<coordinator::FreeSlots> free;
    for (const auto& [id, w] : workers) {
      if (!w.rec.info().alive()) continue;
      const int n = FreeSlotsOf(w, reserved);
      if (n > 0) free.push_back({id, n, !w.free_ports.empty()});
    }
    bool training_waits = false;
    for (v1::JobRecord* queued_rec : queued) {
      if (free.empty()) return;
      if (IsEvalRun(*queued_rec)) {
        // A queued training job that did not fit keeps every free slot: an evaluation run never
        // takes a slot a training job could use first.
        if (training_waits) return;
        PlaceEval(queued_rec, &free);
        continue;
      }
      auto placement = PlaceRanks(queued_rec->job().spec().world_size(), free);
      if (!placement) {
        training_waits = true;
        continue;  // later, smaller jobs may still fit (backfill)
      }
      for (const auto& g : *placement) {
        for (auto& f : free)
          if (f.worker_id == g.worker_id) f.free -= static_cast<int>(g.ranks.size());
      }
      WorkerState& head = workers[placement->front().worker_id];
      const uint32_t port = head.free_ports.back();
      head.free_ports.pop_back();  // no second job this tick gets the same port
      for (auto& f : free)
        if (f.worker_id == placement->front().worker_id) f.has_ports = !head.free_ports.empty();
      Mutate(queued_rec->job().id(), [&](v1::JobRecord* rec) {
        EmitState(rec, Place(rec, *placement, head.rec.info().host(), port, Now()));
      });
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
      Progress& p = ProgressOf(a.job_id(), a.attempt());
      for (const auto& r : a.ranks()) {
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
        s->set_world_size(rec.job().spec().world_size());
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
  std::pair<v1::DatasetInfo, v1::Manifest> StoredDataset(const std::string& ref, const std::string& field);
  v1::JobSpec ResolveEvalSpec(v1::JobSpec spec);
  std::string InsertEvalRun(const v1::JobSpec& spec);
  void SubmitAutoEval(const v1::Job& job, const std::string& checkpoint);
  void PlaceEval(v1::JobRecord* queued, std::vector<coordinator::FreeSlots>* free);
  void RecordEvalResult(const v1::JobRecord& run, const v1::EvalResult& reported);
  void PublishEvals(const std::string& job_id, const v1::CheckpointInfo& info) {
    if (!opt.metrics) return;
    for (const auto& r : info.evals())
      for (const auto& [metric, value] : r.metrics())
        opt.metrics->SetCheckpointEval(job_id, info.name(), r.dataset(), metric, value);
  }
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

  v1::DatasetInfo CommitDataset(rpc::FileReceiver* received) {
    const v1::Manifest& m = received->manifest();
    rpc::CheckName(m.name(), "manifest.name (the dataset name)");
    const std::string hash = rpc::ContentHash(m);
    if (!m.content_sha256().empty() && m.content_sha256() != hash)
      InvalidArgument("manifest.content_sha256 does not match its files");
    const fs::path dir = DatasetDir(hash);
    received->Commit(dir.string());  // keeps an existing copy of the same content
    v1::Manifest stored = m;
    stored.set_content_sha256(hash);
    WriteFileAtomic(dir.string() + ".manifest", stored.SerializeAsString());
    v1::DatasetInfo info;
    info.set_name(m.name());
    info.set_content_sha256(hash);
    info.set_size_bytes(m.total_bytes());
    info.set_files(m.files_size());
    info.set_created_unix_ms(Now());
    std::lock_guard<std::mutex> l(mu);
    store->PutDataset(info);
    spdlog::info("dataset {} pushed: {} ({} bytes)", m.name(), hash.substr(0, 12), m.total_bytes());
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

// Applies the events of the job's current attempt to its record (in Mutate's transaction).
// Returns whether the attempt ended; events after that are no longer news.
bool Coordinator::Impl::ApplyEvents(v1::JobRecord* record, const v1::ReportEventsRequest& req,
                                    v1::ReportEventsResponse* resp) {
  v1::JobRecord& rec = *record;
  auto* j = rec.mutable_job();
  for (const auto& ev : req.events()) {
    v1::JobEvent e;
    if (ev.has_metrics()) {
      const auto& m = ev.metrics();
      store->AppendMetrics(j->id(), m);
      if (!m.eval()) {
        Progress& p = progress[j->id()];
        if (p.attempt != rec.attempt().number() || m.step() > p.step) {
          const bool same = p.attempt == rec.attempt().number();
          p = Progress{rec.attempt().number(), m.step(), Now(), p.phase,
                       same ? std::move(p.ranks) : std::map<int, Progress::RankClock>{}};
        }
        j->set_step(m.step());
        if (m.total_steps() > 0) j->set_total_steps(m.total_steps());
        const worker::StepMetrics sm = worker::StepMetrics::FromValues(m.values());
        j->set_loss(sm.lm_loss);
        j->set_tokens_per_s(sm.tokens_per_s);
        if (opt.metrics)
          opt.metrics->SetJobProgress(j->id(), j->step(), j->total_steps(), j->loss(), j->tokens_per_s(),
                                      sm.act_steps);
      }
      *e.mutable_metrics() = m;
      Emit(&rec, std::move(e));
    } else if (ev.has_log()) {
      *e.mutable_log() = ev.log();
      if (e.log().text().size() > 4096) e.mutable_log()->mutable_text()->resize(4096);
      Emit(&rec, std::move(e));
    } else if (ev.has_eval_result()) {
      if (IsEvalRun(rec)) RecordEvalResult(rec, ev.eval_result());
    } else if (ev.has_exit()) {
      if (auto message = RankExited(&rec, ev.exit(), req.worker_id(), Now())) {
        if (IsEvalRun(rec) && j->state() == v1::JOB_SUCCEEDED)
          *message = "evaluated " + j->spec().eval().source_job() + "/" + j->spec().eval().checkpoint();
        EmitState(&rec, *message);
        resp->set_stop(j->state() != v1::JOB_SUCCEEDED);  // a failed rank: the others are stopped
        return true;
      }
    }
  }
  return false;
}

// The checkpoint `selector` picks (latest | best:<metric or eval key> | step:N | step_N).
v1::CheckpointRecord Coordinator::Impl::PickCheckpoint(const std::string& job_id, const std::string& selector) {
  const v1::JobRecord& rec = Job(job_id);
  auto list = store->ListCheckpoints(job_id);
  if (list.empty()) NotFound("job " + job_id + " has no checkpoint yet");
  const v1::CheckpointRecord* pick = nullptr;
  if (selector == "all") {
    InvalidArgument("selector 'all': names several checkpoints; trmctl eval takes it, a download takes one");
  } else if (selector == "latest") {
    for (const auto& c : list)
      if (c.info().name() == rec.job().latest_checkpoint()) pick = &c;
    if (!pick) pick = &list.back();
  } else if (selector.rfind("best:", 0) == 0) {
    const std::string metric = selector.substr(5);
    pick = BestCheckpoint(list, metric);
    if (!pick) NotFound("selector '" + selector + "': no checkpoint of " + job_id + " has the metric '" + metric + "'");
  } else {
    std::string name = selector;
    if (selector.rfind("step:", 0) == 0) name = "step_" + selector.substr(5);
    rpc::CheckName(name, "selector");
    for (const auto& c : list)
      if (c.info().name() == name) pick = &c;
    if (!pick)
      NotFound("selector '" + selector + "': job " + job_id +
               " has no such checkpoint (use latest, best:<metric>, step:N; trmctl checkpoints " + job_id + ")");
  }
  return *pick;
}

std::pair<v1::DatasetInfo, v1::Manifest> Coordinator::Impl::StoredDataset(const std::string& ref,
                                                                         const std::string& field) {
  const auto d = store->FindDataset(ref);
  if (!d) NotFound(field + ": no dataset named or hashed '" + ref + "' (trmctl dataset push DIR)");
  const std::string path = DatasetDir(d->content_sha256()).string() + ".manifest";
  v1::Manifest m;
  if (!m.ParseFromString(ReadFile(path))) DataLoss(path + ": corrupt");
  return {*d, m};
}

// Checks an evaluation run's submission and pins what it names: the checkpoint its selector
// picks now, the dataset's (or prompts') content hash.
v1::JobSpec Coordinator::Impl::ResolveEvalSpec(v1::JobSpec spec) {
  CheckEvalSpec(spec.eval());
  auto* e = spec.mutable_eval();
  if (IsEvalRun(Job(e->source_job())))
    InvalidArgument("eval.source_job: " + e->source_job() + " is an evaluation run, not a training job");
  const v1::CheckpointRecord ckpt = PickCheckpoint(e->source_job(), e->checkpoint().empty() ? "latest" : e->checkpoint());
  if (!e->dataset().empty()) {
    const auto [info, manifest] = StoredDataset(e->dataset(), "eval.dataset");
    const std::string split = e->split().empty() ? "test" : e->split();
    if (!HasSplit(manifest, split))
      InvalidArgument("eval.split: dataset '" + e->dataset() + "' has no split '" + split + "' (no files under " +
                      split + "/)");
    e->set_dataset_hash(info.content_sha256());
  } else {
    const auto [info, manifest] = StoredDataset(e->prompts(), "eval.prompts");
    PromptsFile(manifest);
    e->set_prompts_hash(info.content_sha256());
  }
  return EvalRunSpec(std::move(spec), ckpt.info().name());
}

std::string Coordinator::Impl::InsertEvalRun(const v1::JobSpec& spec) {
  const auto& e = spec.eval();
  std::string id;
  Insert([&](v1::JobRecord* rec) {
    id = NewJobId();
    Submit(rec, id, spec, "", e.prompts().empty() ? e.dataset_hash() : e.prompts_hash(), Now());
    rec->mutable_job()->set_kind("eval");
    EmitState(rec, "submitted: evaluation of " + e.source_job() + "/" + e.checkpoint() + " on " + spec.dataset() +
                       " (" + e.split() + ")");
  });
  return id;
}

// A training job with spec.eval_dataset uploaded `checkpoint`: its evaluation run is queued
// (the upload does not wait for it). A checkpoint uploaded again is evaluated once.
void Coordinator::Impl::SubmitAutoEval(const v1::Job& job, const std::string& checkpoint) {
  for (const auto& [id, r] : jobs) {
    const auto& e = r.job().spec().eval();
    if (IsEvalRun(r) && e.source_job() == job.id() && e.checkpoint() == checkpoint &&
        e.dataset_hash() == job.eval_dataset_hash())
      return;
  }
  v1::JobSpec spec;
  auto* e = spec.mutable_eval();
  e->set_source_job(job.id());
  e->set_dataset(job.spec().eval_dataset());
  e->set_dataset_hash(job.eval_dataset_hash());
  e->set_split("test");
  try {
    const std::string id = InsertEvalRun(EvalRunSpec(std::move(spec), checkpoint));
    spdlog::info("job {}: checkpoint {} queued for evaluation as {}", job.id(), checkpoint, id);
  } catch (const Error& err) {
    // The checkpoint is stored either way; a lost evaluation must not fail the upload.
    spdlog::error("job {}: cannot queue the evaluation of {}: {}", job.id(), checkpoint, err.what());
  }
}

// Starts a queued evaluation run on one free slot, or fails it when its checkpoint is gone.
void Coordinator::Impl::PlaceEval(v1::JobRecord* queued, std::vector<coordinator::FreeSlots>* free) {
  const std::string id = queued->job().id();
  const auto& e = queued->job().spec().eval();
  if (!FindCheckpoint(e.source_job(), e.checkpoint())) {
    const std::string why = "checkpoint " + e.source_job() + "/" + e.checkpoint() +
                            " was deleted (retention) before the run started";
    Mutate(id, [&](v1::JobRecord* rec) { EmitState(rec, Abandon(rec, "checkpoint_deleted", why, Now())); });
    return;
  }
  const auto worker = PlaceEvalRun(*free);
  if (!worker) return;
  for (auto& f : *free)
    if (f.worker_id == *worker) --f.free;
  const std::string host = workers[*worker].rec.info().host();
  Mutate(id, [&](v1::JobRecord* rec) { EmitState(rec, Place(rec, {RankGroup{*worker, {0}}}, host, 0, Now())); });
}

// An evaluation run's result goes on its checkpoint's record (in the run's Mutate transaction).
void Coordinator::Impl::RecordEvalResult(const v1::JobRecord& run, const v1::EvalResult& reported) {
  const auto& e = run.job().spec().eval();
  auto c = FindCheckpoint(e.source_job(), e.checkpoint());
  if (!c) {
    spdlog::warn("job {}: checkpoint {}/{} is gone; its evaluation result is dropped", run.job().id(), e.source_job(),
                 e.checkpoint());
    return;
  }
  const v1::EvalResult r = EvalResultOf(run, reported, Now());
  AddEvalResult(c->mutable_info(), r);
  store->PutCheckpoint(e.source_job(), *c);
  PublishEvals(e.source_job(), c->info());
  std::string text;
  for (const auto& [k, v] : r.metrics()) text += (text.empty() ? "" : " ") + k + "=" + fmt::format("{:.6g}", v);
  spdlog::info("job {}: checkpoint {} on {} ({}): {}", e.source_job(), e.checkpoint(), r.dataset(), r.split(), text);
}

Coordinator::Coordinator(CoordinatorOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->opt = std::move(options);
  auto& opt = impl_->opt;
  std::error_code ec;
  for (const char* sub : {"datasets", "checkpoints", "tmp"}) {
    fs::create_directories(fs::path(opt.data_dir) / sub, ec);
    if (ec) FileError(opt.data_dir + "/" + sub + ": cannot create", ec);
  }
  fs::remove_all(fs::path(opt.data_dir) / "tmp", ec);  // partial uploads of a previous run
  fs::create_directories(fs::path(opt.data_dir) / "tmp", ec);
  impl_->shards = std::make_unique<ShardPlanner>(opt.data_dir);
  impl_->store = std::make_unique<Store>((fs::path(opt.data_dir) / "coordinator.db").string());
  for (auto& rec : impl_->store->ListJobs()) impl_->jobs[rec.job().id()] = std::move(rec);
  const int64_t now = impl_->Now();
  for (auto& w : impl_->store->ListWorkers()) {
    WorkerState s;
    s.rec = std::move(w);
    // Workers reconnect by themselves; give them a full timeout before their jobs are failed.
    s.last_seen_ms = now;
    impl_->workers[s.rec.info().id()] = std::move(s);
  }
  int running = 0;
  for (const auto& [id, r] : impl_->jobs) running += r.attempt().active();
  spdlog::info("coordinator state {}: {} jobs ({} running), {} known workers", opt.data_dir, impl_->jobs.size(),
               running, impl_->workers.size());
  impl_->PublishCounts();
  for (const auto& [id, r] : impl_->jobs) {
    impl_->PublishJob(r);
    for (const auto& c : impl_->store->ListCheckpoints(id)) impl_->PublishEvals(id, c.info());
  }
}

Coordinator::~Coordinator() = default;

std::string Coordinator::SubmitJob(const v1::JobSpec& spec_in) {
  if (spec_in.has_eval()) {
    std::lock_guard<std::mutex> l(impl_->mu);
    const std::string id = impl_->InsertEvalRun(impl_->ResolveEvalSpec(spec_in));
    impl_->Schedule();
    impl_->PublishCounts();
    return id;
  }
  v1::JobSpec spec = spec_in;
  std::string data_ref, hash, eval_hash;
  if (!spec.dataset().empty() && !spec.data_path().empty())
    InvalidArgument("spec: give dataset or data_path, not both");
  if (!spec.dataset().empty()) {
    rpc::CheckName(spec.dataset(), "spec.dataset");
    std::optional<v1::DatasetInfo> d;
    {
      std::lock_guard<std::mutex> l(impl_->mu);
      d = impl_->store->FindDataset(spec.dataset());
    }
    if (!d) NotFound("spec.dataset: no dataset named or hashed '" + spec.dataset() + "' (trmctl dataset push DIR)");
    hash = d->content_sha256();
    data_ref = "dataset:" + hash;
  } else if (!spec.data_path().empty()) {
    if (spec.data_path().size() > 4096 || spec.data_path().find('\0') != std::string::npos)
      InvalidArgument("spec.data_path: not a usable path");
    data_ref = spec.data_path();
  } else {
    InvalidArgument("spec: dataset (a pushed dataset's name or hash) or data_path is required");
  }
  if (spec.world_size() == 0) spec.set_world_size(1);
  // Reads the named config's files: outside the lock (a stored dataset is never removed).
  const std::string config = ResolveJobConfig(spec, impl_->opt.config_dir, data_ref);
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!spec.eval_dataset().empty()) {
    rpc::CheckName(spec.eval_dataset(), "spec.eval_dataset");
    const auto [info, manifest] = impl_->StoredDataset(spec.eval_dataset(), "spec.eval_dataset");
    if (!HasSplit(manifest, "test"))
      InvalidArgument("spec.eval_dataset: dataset '" + spec.eval_dataset() + "' has no test split (no files under test/)");
    eval_hash = info.content_sha256();
  }
  int total_slots = 0;
  for (const auto& [id, w] : impl_->workers)
    if (w.rec.info().alive()) total_slots += w.rec.info().slots();
  if (spec.world_size() > total_slots)
    ThrowError(Code::kFailedPrecondition,
               "spec.world_size: " + std::to_string(spec.world_size()) + " ranks, but the live workers have " +
                   std::to_string(total_slots) + " slots in all (trmctl workers)");
  std::string id;
  impl_->Insert([&](v1::JobRecord* rec) {
    id = impl_->NewJobId();
    impl_->EmitState(rec, Submit(rec, id, spec, config, hash, impl_->Now()));
    rec->mutable_job()->set_kind("train");
    rec->mutable_job()->set_eval_dataset_hash(eval_hash);
  });
  impl_->Schedule();
  impl_->PublishCounts();
  return id;
}

v1::Job Coordinator::GetJob(const std::string& job_id) {
  CheckJobId(job_id);
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->WithWarning(impl_->Job(job_id).job());
}

std::vector<v1::Job> Coordinator::ListJobs(const std::vector<v1::JobState>& states, int limit) {
  if (limit < 0 || limit > 10000) InvalidArgument("limit: expected 0 to 10000");
  std::lock_guard<std::mutex> l(impl_->mu);
  if (limit <= 0) limit = 100;
  std::vector<v1::Job> out;
  // Newest first: what a user looks for.
  for (auto it = impl_->jobs.rbegin(); it != impl_->jobs.rend() && static_cast<int>(out.size()) < limit; ++it) {
    const auto& j = it->second.job();
    if (states.empty() || std::find(states.begin(), states.end(), j.state()) != states.end())
      out.push_back(impl_->WithWarning(j));
  }
  return out;
}

v1::Job Coordinator::CancelJob(const std::string& job_id) {
  CheckJobId(job_id);
  std::lock_guard<std::mutex> l(impl_->mu);
  if (Terminal(impl_->Job(job_id).job().state())) return impl_->Job(job_id).job();
  impl_->Mutate(job_id, [&](v1::JobRecord* rec) { impl_->EmitState(rec, Cancel(rec, impl_->Now())); });
  impl_->PublishCounts();
  return impl_->Job(job_id).job();
}

std::vector<v1::JobEvent> Coordinator::ReadEvents(const std::string& job_id, uint64_t after_seq, bool include_logs,
                                                  int limit) {
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->Job(job_id);
  return impl_->store->ReadEvents(job_id, after_seq, include_logs, limit);
}

bool Coordinator::WaitForEvents(const std::string& job_id, uint64_t after_seq, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(impl_->mu);
  auto more = [&] { return impl_->Job(job_id).last_seq() > after_seq; };
  impl_->events_cv.wait_for(l, timeout, more);
  return more() || !Terminal(impl_->Job(job_id).job().state());
}

std::vector<v1::StepMetrics> Coordinator::GetMetrics(const std::string& job_id, int64_t from_step, int limit) {
  CheckJobId(job_id);
  if (limit < 0) InvalidArgument("limit: must not be negative");
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->Job(job_id);
  return impl_->store->ReadMetrics(job_id, from_step, limit);
}

std::vector<v1::CheckpointInfo> Coordinator::ListCheckpoints(const std::string& job_id) {
  CheckJobId(job_id);
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->Job(job_id);
  std::vector<v1::CheckpointInfo> out;
  for (const auto& c : impl_->store->ListCheckpoints(job_id)) out.push_back(c.info());
  return out;
}

FileSet Coordinator::ResolveCheckpoint(const std::string& job_id, const std::string& selector, bool weights_only) {
  CheckJobId(job_id);
  if (selector.size() > 256) InvalidArgument("selector: longer than 256 characters");
  v1::CheckpointRecord pick;
  {
    std::lock_guard<std::mutex> l(impl_->mu);
    pick = impl_->PickCheckpoint(job_id, selector.empty() ? "latest" : selector);
  }
  const std::string name = pick.info().name();
  const FileSet full{impl_->CheckpointDir(job_id, name).string(), pick.manifest()};
  if (!weights_only) return full;
  // Built from the stored files outside the state lock; retention may delete the checkpoint
  // meanwhile, which shows as a missing file here (kNotFound).
  std::lock_guard<std::mutex> build(impl_->weights_build_mu);
  return WeightsOnlyFiles(full, pick.info().step(), impl_->WeightsDir(job_id, name).string());
}

FileSet Coordinator::CheckpointFiles(const std::string& job_id, const std::string& name, bool weights_only) {
  CheckJobId(job_id);
  rpc::CheckName(name, "name");
  return ResolveCheckpoint(job_id, name, weights_only);
}

std::vector<v1::WorkerInfo> Coordinator::ListWorkers() {
  std::lock_guard<std::mutex> l(impl_->mu);
  std::vector<v1::WorkerInfo> out;
  const auto reserved = impl_->Reserved();
  for (const auto& [id, w] : impl_->workers) {
    v1::WorkerInfo info = w.rec.info();
    info.set_free_slots(info.alive() ? impl_->FreeSlotsOf(w, reserved) : 0);
    info.set_last_heartbeat_unix_ms(w.last_seen_ms);
    for (const auto& j : impl_->JobsOn(id)) info.add_jobs(j);
    out.push_back(std::move(info));
  }
  return out;
}

v1::DatasetInfo Coordinator::PushDataset(const std::function<bool(v1::TransferMessage*)>& read) {
  v1::TransferMessage msg;
  if (!read(&msg) || !msg.has_manifest()) InvalidArgument("PushDataset: the first message must be the manifest");
  rpc::CheckName(msg.manifest().name(), "manifest.name (the dataset name)");
  rpc::FileReceiver receiver(impl_->NewUploadDir("dataset"), impl_->opt.max_dataset_bytes);
  receiver.OnManifest(msg.manifest());
  while (read(&msg)) receiver.OnMessage(msg);
  return impl_->CommitDataset(&receiver);
}

std::vector<v1::DatasetInfo> Coordinator::ListDatasets() {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->store->ListDatasets();
}

FileSet Coordinator::DatasetFiles(const std::string& hash) {
  if (hash.size() != 64 || hash.find_first_not_of("0123456789abcdef") != std::string::npos)
    InvalidArgument("content_sha256 '" + hash + "': expected 64 lower-case hex digits");
  const fs::path dir = impl_->DatasetDir(hash);
  v1::Manifest m;
  try {
    if (!m.ParseFromString(ReadFile(dir.string() + ".manifest"))) DataLoss(dir.string() + ".manifest: corrupt");
  } catch (const Error& e) {
    if (e.code() == Code::kNotFound) NotFound("dataset " + hash + " is not stored here");
    throw;
  }
  return FileSet{dir.string(), m};
}

FileSet Coordinator::DatasetShardFiles(const std::string& hash, const v1::ShardSpec& shard) {
  const FileSet whole = DatasetFiles(hash);  // validates the hash, NotFound for unknown ones
  if (shard.world_size() < 1 || shard.world_size() > 4096) InvalidArgument("shard.world_size: expected 1 to 4096");
  if (shard.ranks_size() < 1 || shard.ranks_size() > shard.world_size())
    InvalidArgument("shard.ranks: expected 1 to world_size ranks");
  if (shard.global_batch() < 1 || shard.global_batch() > (int64_t{1} << 22))
    InvalidArgument("shard.global_batch: expected 1 to 4194304");
  if (shard.batches() < 1 || shard.batches() > (int64_t{1} << 40)) InvalidArgument("shard.batches: out of range");
  const std::string name = hash + "-" + rpc::ShardKey(shard);
  const fs::path dir = fs::path(impl_->opt.data_dir) / "shards" / name;
  std::lock_guard<std::mutex> build(impl_->shard_build_mu);
  v1::Manifest m;
  try {
    if (m.ParseFromString(ReadFile(dir.string() + ".manifest"))) return FileSet{dir.string(), m};
  } catch (const Error& e) {
    if (e.code() != Code::kNotFound) throw;
  }
  const int64_t rows = impl_->shards->TrainRows(hash);
  const std::vector<int64_t> picked = ShardPlanner::RowsOf(shard, rows);
  if (picked.size() == static_cast<size_t>(rows)) return whole;
  std::error_code ec;
  fs::remove_all(dir, ec);  // a build cut short before its manifest was written
  fs::create_directories(dir.parent_path(), ec);
  data::WriteDatasetShard(whole.dir, "train", picked, dir.string());
  m = rpc::BuildManifest(dir.string(), name);
  m.set_content_sha256(rpc::ContentHash(m));
  WriteFileAtomic(dir.string() + ".manifest", m.SerializeAsString());
  spdlog::info("dataset {}: shard {} built: {} of {} training rows ({} bytes)", hash.substr(0, 12), name.substr(65),
               picked.size(), rows, m.total_bytes());
  return FileSet{dir.string(), m};
}

v1::RegisterResponse Coordinator::Register(const v1::RegisterRequest& req) {
  rpc::CheckName(req.worker_id(), "worker_id");
  if (req.slots() < 1 || req.slots() > 1024) InvalidArgument("slots: expected 1 to 1024");
  if (req.host().empty() || req.host().size() > 255) InvalidArgument("host: expected an address other workers reach");
  std::lock_guard<std::mutex> l(impl_->mu);
  WorkerState& w = impl_->workers[req.worker_id()];
  auto* info = w.rec.mutable_info();
  const bool known = !info->id().empty();
  info->set_id(req.worker_id());
  info->set_host(req.host());
  info->set_slots(req.slots());
  info->set_device_kind(req.device_kind());
  info->mutable_devices()->CopyFrom(req.devices());
  info->set_alive(true);
  w.rec.set_metrics_endpoint(req.metrics_endpoint());
  w.last_seen_ms = impl_->Now();
  impl_->store->PutWorker(w.rec);
  spdlog::info("worker {} {}: {} {} slot(s) at {}", req.worker_id(), known ? "re-registered" : "registered",
               req.slots(), req.device_kind(), req.host());
  // A worker registers when its process starts: ranks it ran before are gone with the old
  // process, so attempts that placed ranks there cannot finish.
  for (const std::string& job_id : impl_->JobsOn(req.worker_id())) {
    const auto& acked = impl_->jobs[job_id].attempt().acked_workers();
    if (std::find(acked.begin(), acked.end(), req.worker_id()) == acked.end()) continue;  // not started there yet
    impl_->FailActiveAttempt(job_id, "lost_worker", "worker " + req.worker_id() + " restarted");
  }
  impl_->PublishCounts();
  v1::RegisterResponse resp;
  resp.set_heartbeat_interval_ms(impl_->opt.heartbeat_interval_ms);
  return resp;
}

v1::HeartbeatResponse Coordinator::Heartbeat(const v1::HeartbeatRequest& req) {
  v1::HeartbeatResponse resp;
  std::vector<std::pair<int, ShardRequest>> shards;
  {
    std::lock_guard<std::mutex> l(impl_->mu);
    auto wit = impl_->workers.find(req.worker_id());
    if (wit == impl_->workers.end()) {
      resp.set_reregister(true);
      return resp;
    }
    WorkerState& w = wit->second;
    w.last_seen_ms = impl_->Now();
    w.free_ports.assign(req.free_ports().begin(), req.free_ports().end());
    if (!w.rec.info().alive()) {
      // It was declared lost (its attempts failed already); it comes back empty-handed.
      w.rec.mutable_info()->set_alive(true);
      impl_->store->PutWorker(w.rec);
      spdlog::info("worker {} is back", req.worker_id());
    }
    const std::set<AttemptKey> listed = impl_->TakeAttempts(&w, req, &resp);
    impl_->Assign(req.worker_id(), listed, &resp, &shards);
  }
  // Planning reads the job's config and the dataset's header: not under the lock.
  for (const auto& [index, request] : shards)
    if (auto shard = impl_->shards->Plan(request)) *resp.mutable_start(index)->mutable_shard() = *shard;
  return resp;
}

v1::ReportEventsResponse Coordinator::ReportEvents(const v1::ReportEventsRequest& req) {
  if (req.events_size() > 10000) InvalidArgument("events: more than 10000 in one report");
  impl_->event_rate.Take("worker " + req.worker_id(), req.events_size());
  std::lock_guard<std::mutex> l(impl_->mu);
  v1::ReportEventsResponse resp;
  auto jit = impl_->jobs.find(req.job_id());
  if (jit == impl_->jobs.end() || !jit->second.attempt().active() ||
      jit->second.attempt().number() != req.attempt()) {
    resp.set_stop(true);  // a stale attempt: whatever it says is no longer news
    return resp;
  }
  bool ended = false;
  impl_->Mutate(req.job_id(), [&](v1::JobRecord* rec) { ended = impl_->ApplyEvents(rec, req, &resp); });
  if (ended) impl_->PublishCounts();
  return resp;
}

v1::CheckpointInfo Coordinator::UploadCheckpoint(const std::function<bool(v1::CheckpointUpload*)>& read) {
  v1::CheckpointUpload msg;
  if (!read(&msg) || !msg.has_header()) InvalidArgument("UploadCheckpoint: the first message must be the header");
  const v1::CheckpointUploadHeader header = msg.header();
  impl_->CheckUpload(header);
  try {
    rpc::FileReceiver receiver(impl_->NewUploadDir("checkpoint"), impl_->opt.max_checkpoint_bytes);
    receiver.OnManifest(header.manifest());
    while (read(&msg)) {
      if (!msg.has_chunk()) InvalidArgument("UploadCheckpoint: only chunks may follow the header");
      receiver.OnChunk(msg.chunk());
    }
    return impl_->CommitCheckpoint(header, &receiver);
  } catch (const Error& e) {
    impl_->UploadFailed(header, e);
    throw;
  }
}

void Coordinator::Tick() {
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->LoseWorkers();
  impl_->DetectHangs();
  impl_->Schedule();
  impl_->PublishCounts();
}

}  // namespace trm::coordinator
