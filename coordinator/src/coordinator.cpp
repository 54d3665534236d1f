#include "trm/coordinator/coordinator.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cctype>
#include <condition_variable>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <random>
#include <set>

#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/coordinator/job_spec.h"
#include "trm/coordinator/metrics.h"
#include "trm/coordinator/scheduler.h"
#include "trm/coordinator/store.h"
#include "trm/data/batch_iterator.h"
#include "trm/data/dataset_reader.h"
#include "trm/data/dataset_shard.h"
#include "trm/rpc/transfer.h"
#include "trm/v1/state.pb.h"
#include "trm/worker/train_config.h"

namespace fs = std::filesystem;

namespace trm::coordinator {
namespace {

bool Terminal(v1::JobState s) {
  return s == v1::JOB_SUCCEEDED || s == v1::JOB_FAILED || s == v1::JOB_CANCELLED;
}

std::string StateName(v1::JobState s) {
  switch (s) {
    case v1::JOB_QUEUED: return "queued";
    case v1::JOB_RUNNING: return "running";
    case v1::JOB_SUCCEEDED: return "succeeded";
    case v1::JOB_FAILED: return "failed";
    case v1::JOB_CANCELLED: return "cancelled";
    default: return "unspecified";
  }
}

int64_t SystemNowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Lower is better for losses, higher for everything else (accuracies).
bool Better(const std::string& metric, double a, double b) {
  return metric.find("loss") != std::string::npos ? a < b : a > b;
}

struct WorkerState {
  v1::WorkerRecord rec;
  int64_t last_seen_ms = 0;
  std::vector<uint32_t> free_ports;
  // Ranks still running in attempts the coordinator no longer counts as active (being stopped):
  // their slots are not free yet.
  int stale_running = 0;
};

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
  std::map<std::string, int64_t> train_rows;    // dataset hash -> rows of its train split
  std::map<std::string, std::optional<v1::ShardSpec>> shard_plans;  // "job/attempt/first rank" -> plan
  std::mutex shard_build_mu;                    // one shard build at a time, outside `mu`
  std::mutex mu;
  std::condition_variable events_cv;  // notified on every new event
  std::unique_ptr<Store> store;
  std::map<std::string, v1::JobRecord> jobs;
  std::map<std::string, WorkerState> workers;
  std::mt19937_64 rng{std::random_device{}()};

  int64_t Now() const { return opt.now_ms ? opt.now_ms() : SystemNowMs(); }
  fs::path DatasetDir(const std::string& hash) const { return fs::path(opt.data_dir) / "datasets" / hash; }

  // Training rows of a stored dataset (read from its train split's header; memoized).
  int64_t TrainRows(const std::string& hash) {
    auto it = train_rows.find(hash);
    if (it != train_rows.end()) return it->second;
    const int64_t n = data::DatasetSplit::Open(DatasetDir(hash).string(), "train").rows();
    train_rows[hash] = n;
    return n;
  }

  // The training rows the ranks of `shard` read (as the trainer's BatchIterator: shuffled,
  // last batch dropped).
  static std::vector<int64_t> RowsOf(const v1::ShardSpec& shard, int64_t rows) {
    data::BatchConfig bc;
    bc.global_batch = shard.global_batch();
    bc.seed = shard.seed();
    bc.world = shard.world_size();
    return data::RowsReadByRanks(rows, bc, std::vector<int>(shard.ranks().begin(), shard.ranks().end()),
                                 shard.batches());
  }

  // What the ranks `ranks` of the job's active attempt read: a shard when that is less than the
  // whole training split (a run shorter than its data), nothing when they read every row.
  std::optional<v1::ShardSpec> ShardFor(const v1::JobRecord& rec, const std::vector<int>& ranks) {
    const auto& job = rec.job();
    if (job.dataset_hash().empty()) return std::nullopt;
    const std::string key = job.id() + "/" + std::to_string(rec.attempt().number()) + "/" +
                            std::to_string(ranks.empty() ? -1 : ranks.front());
    if (auto it = shard_plans.find(key); it != shard_plans.end()) return it->second;
    std::optional<v1::ShardSpec> plan;
    try {
      const worker::TrainConfig cfg =
          worker::TrainConfig::FromJson(nlohmann::json::parse(job.resolved_config_json()), job.spec().config_name());
      const int64_t rows = TrainRows(job.dataset_hash());
      v1::ShardSpec s;
      s.set_world_size(job.spec().world_size());
      for (int r : ranks) s.add_ranks(r);
      s.set_global_batch(cfg.global_batch_size);
      s.set_seed(static_cast<uint64_t>(cfg.seed));
      s.set_batches(worker::StepsToRun(cfg, rows) * cfg.gradient_accumulation_steps);
      if (s.batches() > 0 && RowsOf(s, rows).size() < static_cast<size_t>(rows)) plan = s;
    } catch (const std::exception& e) {
      // The whole dataset always works; the trainer reports what is wrong with the config.
      spdlog::warn("job {}: no shard plan ({}); its workers fetch the whole dataset", job.id(), e.what());
    }
    if (shard_plans.size() > 10000) shard_plans.clear();
    shard_plans[key] = plan;
    return plan;
  }
  fs::path CheckpointDir(const std::string& job, const std::string& name) const {
    return fs::path(opt.data_dir) / "checkpoints" / job / name;
  }

  v1::JobRecord& Job(const std::string& id) {
    auto it = jobs.find(id);
    if (it == jobs.end()) NotFound("job '" + id + "' does not exist (trmctl list shows the jobs)");
    return it->second;
  }

  // Appends an event to the record (persisted by SaveJob in the caller's transaction).
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

  // Writes `rec` inside an open transaction; the in-memory copy is replaced by the caller after
  // the commit, so a failed write leaves both as they were.
  void Commit(Store::Transaction* tx, v1::JobRecord rec) {
    store->PutJob(rec);
    tx->Commit();
    const std::string id = rec.job().id();
    jobs[id] = std::move(rec);
    events_cv.notify_all();
    PublishJob(jobs[id]);
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
        busy += w.rec.info().slots() - FreeSlots(w, reserved);
      } else {
        ++lost;
      }
    }
    opt.metrics->SetWorkerCounts(alive, lost, slots, busy);
  }

  // Slots held by active attempts, by worker.
  std::map<std::string, int> Reserved() const {
    std::map<std::string, int> n;
    for (const auto& [id, r] : jobs) {
      if (!r.attempt().active()) continue;
      for (const auto& p : r.attempt().placement()) n[p.worker_id()] += p.ranks_size();
    }
    return n;
  }
  int FreeSlots(const WorkerState& w, const std::map<std::string, int>& reserved) const {
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

  // Ends the current attempt as failed; requeues the job while restarts remain.
  void FailAttempt(v1::JobRecord* rec, const std::string& kind, const std::string& message) {
    auto* a = rec->mutable_attempt();
    a->set_active(false);
    a->set_ended_unix_ms(Now());
    auto* j = rec->mutable_job();
    j->set_failure_kind(kind);
    j->clear_placement();
    if (j->restarts() < j->spec().max_restarts()) {
      j->set_restarts(j->restarts() + 1);
      j->set_state(v1::JOB_QUEUED);
      EmitState(rec, "attempt " + std::to_string(a->number()) + " failed (" + kind + "): " + message +
                         "; restarting (" + std::to_string(j->restarts()) + "/" +
                         std::to_string(j->spec().max_restarts()) + ") from " +
                         (j->latest_checkpoint().empty() ? std::string("the start") : j->latest_checkpoint()));
    } else {
      j->set_state(v1::JOB_FAILED);
      j->set_finished_unix_ms(Now());
      EmitState(rec, "attempt " + std::to_string(a->number()) + " failed (" + kind + "): " + message);
    }
  }

  void Schedule() {
    std::vector<v1::JobRecord*> queued;
    for (auto& [id, r] : jobs)
      if (r.job().state() == v1::JOB_QUEUED) queued.push_back(&r);
    std::stable_sort(queued.begin(), queued.end(), [](const v1::JobRecord* a, const v1::JobRecord* b) {
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
      auto it = reserved.find(id);
      const int n = std::max(0, w.rec.info().slots() - (it == reserved.end() ? 0 : it->second) - w.stale_running);
      if (n > 0) free.push_back({id, n, !w.free_ports.empty()});
    }
    for (v1::JobRecord* queued_rec : queued) {
      if (free.empty()) return;
      auto placement = PlaceRanks(queued_rec->job().spec().world_size(), free);
      if (!placement) continue;  // later, smaller jobs may still fit (backfill)
      for (const auto& g : *placement) {
        for (auto& f : free)
          if (f.worker_id == g.worker_id) f.free -= static_cast<int>(g.ranks.size());
      }
      v1::JobRecord rec = *queued_rec;
      WorkerState& head = workers[placement->front().worker_id];
      const uint32_t port = head.free_ports.back();
      head.free_ports.pop_back();  // no second job this tick gets the same port
      for (auto& f : free)
        if (f.worker_id == placement->front().worker_id) f.has_ports = !head.free_ports.empty();
      v1::AttemptRecord a;
      a.set_number(rec.attempt().number() + 1);
      a.set_master_addr(head.rec.info().host());
      a.set_master_port(port);
      a.set_resume_checkpoint(rec.job().latest_checkpoint());
      a.set_active(true);
      a.set_started_unix_ms(Now());
      std::string where;
      auto* j = rec.mutable_job();
      j->clear_placement();
      for (const auto& g : *placement) {
        auto* p = a.add_placement();
        p->set_worker_id(g.worker_id);
        for (int r : g.ranks) {
          p->add_ranks(r);
          auto* rp = j->add_placement();
          rp->set_rank(r);
          rp->set_worker_id(g.worker_id);
        }
        where += (where.empty() ? "" : ", ") + g.worker_id + " (ranks " + std::to_string(g.ranks.front()) + "-" +
                 std::to_string(g.ranks.back()) + ")";
      }
      *rec.mutable_attempt() = a;
      j->set_attempt(a.number());
      j->set_state(v1::JOB_RUNNING);
      if (j->started_unix_ms() == 0) j->set_started_unix_ms(Now());
      Store::Transaction tx(store.get());
      EmitState(&rec, "attempt " + std::to_string(a.number()) + " on " + where + ", rendezvous " + a.master_addr() +
                          ":" + std::to_string(port) +
                          (a.resume_checkpoint().empty() ? "" : ", resuming from " + a.resume_checkpoint()));
      Commit(&tx, std::move(rec));
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
      for (const std::string& job_id : JobsOn(id)) {
        v1::JobRecord rec = jobs[job_id];
        Store::Transaction tx(store.get());
        FailAttempt(&rec, "lost_worker",
                    "worker " + id + " sent no heartbeat for " + std::to_string((now - w.last_seen_ms) / 1000) + " s");
        Commit(&tx, std::move(rec));
      }
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
    for (const auto& [id, why] : hung) {
      v1::JobRecord rec = jobs[id];
      Store::Transaction tx(store.get());
      FailAttempt(&rec, "hang", why);
      Commit(&tx, std::move(rec));
    }
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
    const v1::CheckpointRecord* best = nullptr;
    for (const auto& c : list) {
      auto it = c.info().metrics().find(opt.keep_best_metric);
      if (it == c.info().metrics().end()) continue;
      if (!best || Better(opt.keep_best_metric, it->second, best->info().metrics().at(opt.keep_best_metric))) best = &c;
    }
    if (best) keep.insert(best->info().name());
    keep.insert(rec.job().latest_checkpoint());
    if (rec.attempt().active()) keep.insert(rec.attempt().resume_checkpoint());
    for (const auto& c : list) {
      if (keep.count(c.info().name())) continue;
      store->DeleteCheckpoint(job_id, c.info().name());
      doomed.push_back(CheckpointDir(job_id, c.info().name()));
    }
    return doomed;
  }
};

Coordinator::Coordinator(CoordinatorOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->opt = std::move(options);
  auto& opt = impl_->opt;
  std::error_code ec;
  for (const char* sub : {"datasets", "checkpoints", "tmp"}) {
    fs::create_directories(fs::path(opt.data_dir) / sub, ec);
    if (ec) IoError(opt.data_dir + "/" + sub + ": cannot create: " + ec.message());
  }
  fs::remove_all(fs::path(opt.data_dir) / "tmp", ec);  // partial uploads of a previous run
  fs::create_directories(fs::path(opt.data_dir) / "tmp", ec);
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
  for (const auto& [id, r] : impl_->jobs) impl_->PublishJob(r);
}

Coordinator::~Coordinator() = default;

std::string Coordinator::SubmitJob(const v1::JobSpec& spec_in) {
  v1::JobSpec spec = spec_in;
  std::string data_ref, hash;
  if (!spec.dataset().empty() && !spec.data_path().empty())
    InvalidArgument("spec: give dataset or data_path, not both");
  std::unique_lock<std::mutex> lock(impl_->mu);
  if (!spec.dataset().empty()) {
    rpc::CheckName(spec.dataset(), "spec.dataset");
    auto d = impl_->store->FindDataset(spec.dataset());
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
  const std::string config = ResolveJobConfig(spec, impl_->opt.config_dir, data_ref);
  int total_slots = 0;
  for (const auto& [id, w] : impl_->workers)
    if (w.rec.info().alive()) total_slots += w.rec.info().slots();
  if (spec.world_size() > total_slots)
    ThrowError(Code::kFailedPrecondition,
               "spec.world_size: " + std::to_string(spec.world_size()) + " ranks, but the live workers have " +
                   std::to_string(total_slots) + " slots in all (trmctl workers)");
  v1::JobRecord rec;
  Store::Transaction tx(impl_->store.get());
  char id[32];
  std::snprintf(id, sizeof(id), "job-%06lld", static_cast<long long>(impl_->store->NextJobNumber()));
  auto* j = rec.mutable_job();
  j->set_id(id);
  if (spec.name().empty()) spec.set_name(spec.config_name().empty() ? std::string(id) : spec.config_name());
  *j->mutable_spec() = spec;
  j->set_state(v1::JOB_QUEUED);
  j->set_created_unix_ms(impl_->Now());
  j->set_resolved_config_json(config);
  j->set_dataset_hash(hash);
  impl_->EmitState(&rec, "submitted: " + std::to_string(spec.world_size()) + " ranks");
  impl_->Commit(&tx, std::move(rec));
  impl_->Schedule();
  impl_->PublishCounts();
  return id;
}

v1::Job Coordinator::GetJob(const std::string& job_id) {
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->WithWarning(impl_->Job(job_id).job());
}

std::vector<v1::Job> Coordinator::ListJobs(const std::vector<v1::JobState>& states, int limit) {
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
  std::lock_guard<std::mutex> l(impl_->mu);
  v1::JobRecord rec = impl_->Job(job_id);
  if (Terminal(rec.job().state())) return rec.job();
  rec.mutable_attempt()->set_active(false);
  rec.mutable_attempt()->set_ended_unix_ms(impl_->Now());
  rec.mutable_job()->set_state(v1::JOB_CANCELLED);
  rec.mutable_job()->set_finished_unix_ms(impl_->Now());
  rec.mutable_job()->clear_placement();
  Store::Transaction tx(impl_->store.get());
  impl_->EmitState(&rec, "cancelled by the user");
  impl_->Commit(&tx, rec);
  impl_->PublishCounts();
  return rec.job();
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
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->Job(job_id);
  return impl_->store->ReadMetrics(job_id, from_step, limit);
}

std::vector<v1::CheckpointInfo> Coordinator::ListCheckpoints(const std::string& job_id) {
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->Job(job_id);
  std::vector<v1::CheckpointInfo> out;
  for (const auto& c : impl_->store->ListCheckpoints(job_id)) out.push_back(c.info());
  return out;
}

FileSet Coordinator::ResolveCheckpoint(const std::string& job_id, const std::string& selector_in) {
  std::lock_guard<std::mutex> l(impl_->mu);
  const v1::JobRecord& rec = impl_->Job(job_id);
  const std::string selector = selector_in.empty() ? "latest" : selector_in;
  auto list = impl_->store->ListCheckpoints(job_id);
  if (list.empty()) NotFound("job " + job_id + " has no checkpoint yet");
  const v1::CheckpointRecord* pick = nullptr;
  if (selector == "latest") {
    for (const auto& c : list)
      if (c.info().name() == rec.job().latest_checkpoint()) pick = &c;
    if (!pick) pick = &list.back();
  } else if (selector.rfind("best:", 0) == 0) {
    const std::string metric = selector.substr(5);
    for (const auto& c : list) {
      auto it = c.info().metrics().find(metric);
      if (it == c.info().metrics().end()) continue;
      if (!pick || Better(metric, it->second, pick->info().metrics().at(metric))) pick = &c;
    }
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
  return FileSet{impl_->CheckpointDir(job_id, pick->info().name()).string(), pick->manifest()};
}

std::vector<v1::WorkerInfo> Coordinator::ListWorkers() {
  std::lock_guard<std::mutex> l(impl_->mu);
  std::vector<v1::WorkerInfo> out;
  const auto reserved = impl_->Reserved();
  for (const auto& [id, w] : impl_->workers) {
    v1::WorkerInfo info = w.rec.info();
    info.set_free_slots(info.alive() ? impl_->FreeSlots(w, reserved) : 0);
    info.set_last_heartbeat_unix_ms(w.last_seen_ms);
    for (const auto& j : impl_->JobsOn(id)) info.add_jobs(j);
    out.push_back(std::move(info));
  }
  return out;
}

std::string Coordinator::NewUploadDir(const std::string& kind) {
  std::lock_guard<std::mutex> l(impl_->mu);
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(impl_->rng()));
  return (fs::path(impl_->opt.data_dir) / "tmp" / (kind + "-" + buf)).string();
}

uint64_t Coordinator::max_dataset_bytes() const { return impl_->opt.max_dataset_bytes; }
uint64_t Coordinator::max_checkpoint_bytes() const { return impl_->opt.max_checkpoint_bytes; }

v1::DatasetInfo Coordinator::CommitDataset(rpc::FileReceiver* received) {
  const v1::Manifest& m = received->manifest();
  rpc::CheckName(m.name(), "manifest.name (the dataset name)");
  const std::string hash = rpc::ContentHash(m);
  if (!m.content_sha256().empty() && m.content_sha256() != hash)
    InvalidArgument("manifest.content_sha256 does not match its files");
  const fs::path dir = impl_->DatasetDir(hash);
  received->Commit(dir.string());  // keeps an existing copy of the same content
  v1::Manifest stored = m;
  stored.set_content_sha256(hash);
  WriteFileAtomic(dir.string() + ".manifest", stored.SerializeAsString());
  v1::DatasetInfo info;
  info.set_name(m.name());
  info.set_content_sha256(hash);
  info.set_size_bytes(m.total_bytes());
  info.set_files(m.files_size());
  info.set_created_unix_ms(impl_->Now());
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->store->PutDataset(info);
  spdlog::info("dataset {} pushed: {} ({} bytes)", m.name(), hash.substr(0, 12), m.total_bytes());
  return info;
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
  int64_t rows = 0;
  {
    std::lock_guard<std::mutex> l(impl_->mu);
    rows = impl_->TrainRows(hash);
  }
  const std::vector<int64_t> picked = Impl::RowsOf(shard, rows);
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
    v1::JobRecord rec = impl_->jobs[job_id];
    Store::Transaction tx(impl_->store.get());
    impl_->FailAttempt(&rec, "lost_worker", "worker " + req.worker_id() + " restarted");
    impl_->Commit(&tx, std::move(rec));
  }
  impl_->PublishCounts();
  v1::RegisterResponse resp;
  resp.set_heartbeat_interval_ms(impl_->opt.heartbeat_interval_ms);
  return resp;
}

v1::HeartbeatResponse Coordinator::Heartbeat(const v1::HeartbeatRequest& req) {
  std::lock_guard<std::mutex> l(impl_->mu);
  v1::HeartbeatResponse resp;
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
  std::set<std::pair<std::string, int>> listed;
  w.stale_running = 0;
  for (const auto& a : req.attempts()) {
    listed.insert({a.job_id(), a.attempt()});
    auto jit = impl_->jobs.find(a.job_id());
    const bool current = jit != impl_->jobs.end() && jit->second.attempt().active() &&
                         jit->second.attempt().number() == a.attempt();
    if (!current) {
      for (const auto& r : a.ranks()) w.stale_running += r.phase() != v1::PHASE_EXITED;
      v1::StopOrder* s = resp.add_stop();
      s->set_job_id(a.job_id());
      s->set_attempt(a.attempt());
      s->set_reason(jit == impl_->jobs.end() ? "unknown job" : "attempt " + std::to_string(a.attempt()) + " is over");
      continue;
    }
    v1::JobRecord& rec = jit->second;
    Progress& p = impl_->ProgressOf(a.job_id(), a.attempt());
    for (const auto& r : a.ranks()) {
      if (r.rank() == 0) p.phase = v1::RankPhase_Name(r.phase());
      if (r.phase() == v1::PHASE_EXITED || !r.has_phase_elapsed_ms()) {
        p.ranks.erase(r.rank());
      } else {
        p.ranks[r.rank()] = Progress::RankClock{r.phase(), impl_->Now() - r.phase_elapsed_ms(), r.step()};
      }
    }
    auto& acked = rec.attempt().acked_workers();
    if (std::find(acked.begin(), acked.end(), req.worker_id()) == acked.end()) {
      v1::JobRecord copy = rec;
      copy.mutable_attempt()->add_acked_workers(req.worker_id());
      Store::Transaction tx(impl_->store.get());
      impl_->Commit(&tx, std::move(copy));
    }
  }
  // Assignments not yet taken up are sent again until the worker lists them.
  for (const auto& [id, rec] : impl_->jobs) {
    const auto& a = rec.attempt();
    if (!a.active() || listed.count({id, a.number()})) continue;
    if (std::find(a.acked_workers().begin(), a.acked_workers().end(), req.worker_id()) != a.acked_workers().end())
      continue;
    for (const auto& p : a.placement()) {
      if (p.worker_id() != req.worker_id()) continue;
      v1::Assignment* s = resp.add_start();
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
      if (auto shard = impl_->ShardFor(rec, std::vector<int>(p.ranks().begin(), p.ranks().end())))
        *s->mutable_shard() = *shard;
    }
  }
  return resp;
}

v1::ReportEventsResponse Coordinator::ReportEvents(const v1::ReportEventsRequest& req) {
  std::lock_guard<std::mutex> l(impl_->mu);
  v1::ReportEventsResponse resp;
  auto jit = impl_->jobs.find(req.job_id());
  if (jit == impl_->jobs.end() || !jit->second.attempt().active() ||
      jit->second.attempt().number() != req.attempt()) {
    resp.set_stop(true);  // a stale attempt: whatever it says is no longer news
    return resp;
  }
  v1::JobRecord rec = jit->second;
  Store::Transaction tx(impl_->store.get());
  auto* j = rec.mutable_job();
  bool ended = false;
  for (const auto& ev : req.events()) {
    if (ended) break;
    v1::JobEvent e;
    if (ev.has_metrics()) {
      const auto& m = ev.metrics();
      impl_->store->AppendMetrics(j->id(), m);
      if (!m.eval()) {
        Progress& p = impl_->progress[j->id()];
        if (p.attempt != rec.attempt().number() || m.step() > p.step) {
          const bool same = p.attempt == rec.attempt().number();
          p = Progress{rec.attempt().number(), m.step(), impl_->Now(), p.phase,
                       same ? std::move(p.ranks) : std::map<int, Progress::RankClock>{}};
        }
        j->set_step(m.step());
        if (m.total_steps() > 0) j->set_total_steps(m.total_steps());
        auto get = [&](const char* k) {
          auto it = m.values().find(k);
          return it == m.values().end() ? 0.0 : it->second;
        };
        j->set_loss(get("lm_loss"));
        j->set_tokens_per_s(get("tokens_per_s"));
        if (impl_->opt.metrics)
          impl_->opt.metrics->SetJobProgress(j->id(), j->step(), j->total_steps(), j->loss(), j->tokens_per_s(),
                                             get("act_steps"));
      }
      *e.mutable_metrics() = m;
      impl_->Emit(&rec, std::move(e));
    } else if (ev.has_log()) {
      *e.mutable_log() = ev.log();
      if (e.log().text().size() > 4096) e.mutable_log()->mutable_text()->resize(4096);
      impl_->Emit(&rec, std::move(e));
    } else if (ev.has_exit()) {
      const auto& x = ev.exit();
      (*rec.mutable_attempt()->mutable_exits())[x.rank()] = x;
      if (x.exit_code() != 0) {
        const std::string how = x.signal() ? "killed by signal " + std::to_string(x.signal())
                                           : "exited with code " + std::to_string(x.exit_code());
        std::string tail = x.message();
        if (tail.size() > 2000) tail = "..." + tail.substr(tail.size() - 2000);
        impl_->FailAttempt(&rec, x.failure_kind().empty() ? (x.signal() ? "signal" : "exit_code") : x.failure_kind(),
                           "rank " + std::to_string(x.rank()) + " on " + req.worker_id() + " " + how +
                               (tail.empty() ? "" : ": " + tail));
        resp.set_stop(true);
        ended = true;
      } else if (rec.attempt().exits_size() == j->spec().world_size()) {
        rec.mutable_attempt()->set_active(false);
        rec.mutable_attempt()->set_ended_unix_ms(impl_->Now());
        j->set_state(v1::JOB_SUCCEEDED);
        j->set_finished_unix_ms(impl_->Now());
        j->clear_placement();
        impl_->EmitState(&rec, "finished at step " + std::to_string(j->step()) +
                                   (j->latest_checkpoint().empty() ? "" : ", checkpoint " + j->latest_checkpoint()));
        ended = true;
      }
    }
  }
  impl_->Commit(&tx, std::move(rec));
  if (ended) impl_->PublishCounts();
  return resp;
}

void Coordinator::CheckCheckpointUpload(const v1::CheckpointUploadHeader& h) {
  rpc::CheckName(h.info().name(), "info.name");
  if (h.info().name() != "step_" + std::to_string(h.info().step()))
    InvalidArgument("info.name '" + h.info().name() + "': expected step_" + std::to_string(h.info().step()));
  std::lock_guard<std::mutex> l(impl_->mu);
  const v1::JobRecord& rec = impl_->Job(h.job_id());
  if (h.attempt() != rec.attempt().number())
    ThrowError(Code::kFailedPrecondition, "job " + h.job_id() + ": attempt " + std::to_string(h.attempt()) +
                                              " is not the current attempt " + std::to_string(rec.attempt().number()));
}

v1::CheckpointInfo Coordinator::CommitCheckpoint(const v1::CheckpointUploadHeader& h, rpc::FileReceiver* received) {
  CheckCheckpointUpload(h);
  const fs::path dir = impl_->CheckpointDir(h.job_id(), h.info().name());
  received->Commit(dir.string(), /*replace=*/true);
  v1::CheckpointRecord c;
  *c.mutable_info() = h.info();
  *c.mutable_manifest() = received->manifest();
  c.mutable_manifest()->set_content_sha256(rpc::ContentHash(received->manifest()));
  c.mutable_info()->set_size_bytes(received->manifest().total_bytes());
  c.mutable_info()->set_content_sha256(c.manifest().content_sha256());
  c.mutable_info()->set_created_unix_ms(impl_->Now());
  std::lock_guard<std::mutex> l(impl_->mu);
  v1::JobRecord rec = impl_->Job(h.job_id());
  Store::Transaction tx(impl_->store.get());
  impl_->store->PutCheckpoint(h.job_id(), c);
  auto list = impl_->store->ListCheckpoints(h.job_id());
  rec.mutable_job()->set_latest_checkpoint(list.back().info().name());
  rec.set_last_checkpoint_unix_ms(impl_->Now());
  v1::JobEvent e;
  *e.mutable_checkpoint() = c.info();
  impl_->Emit(&rec, std::move(e));
  const auto doomed = impl_->Retain(h.job_id(), rec);
  impl_->Commit(&tx, rec);
  for (const auto& d : doomed) {
    std::error_code ec;
    fs::remove_all(d, ec);
  }
  impl_->warnings.erase(h.job_id());
  spdlog::info("job {}: checkpoint {} committed ({} bytes)", h.job_id(), c.info().name(), c.info().size_bytes());
  return c.info();
}

void Coordinator::CheckpointUploadFailed(const v1::CheckpointUploadHeader& h, const Error& error) {
  if (error.code() != Code::kResourceExhausted) return;
  std::lock_guard<std::mutex> l(impl_->mu);
  if (!impl_->jobs.count(h.job_id())) return;
  const std::string warning = "checkpoint " + h.info().name() +
                              " cannot be stored (the worker keeps it and retries): " + error.what();
  if (impl_->warnings[h.job_id()] != warning) spdlog::error("job {}: {}", h.job_id(), warning);
  impl_->warnings[h.job_id()] = warning;
}

void Coordinator::Tick() {
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->LoseWorkers();
  impl_->DetectHangs();
  impl_->Schedule();
  impl_->PublishCounts();
}

}  // namespace trm::coordinator
