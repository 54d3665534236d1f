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

#include "coordinator_impl.h"
#include "eval_runs.h"
#include "tenancy.h"
#include "job_lifecycle.h"
#include "shard_plans.h"
#include "stream_limits.h"
#include "weights_only.h"
#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/common/path_confine.h"
#include "trm/coordinator/backup.h"
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

void CheckJobId(const std::string& id) {
  if (id.empty()) InvalidArgument("job_id is required");
  rpc::CheckName(id, "job_id");
}

}  // namespace

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
      if (!m.eval()) {
        Progress& p = progress[j->id()];
        if (p.attempt != rec.attempt().number() || m.step() > p.step) {
          if (p.attempt != rec.attempt().number()) p = Progress{};  // the clocks are the attempt's
          p.attempt = rec.attempt().number();
          p.step = m.step();
          p.since_ms = Now();
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
      store->AppendMetrics(j->id(), m, rec.last_seq(), Retention());
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

Coordinator::Coordinator(CoordinatorOptions options) : impl_(std::make_unique<Impl>()) {
  impl_->opt = std::move(options);
  auto& opt = impl_->opt;
  std::error_code ec;
  for (const char* sub : {"datasets", "checkpoints", "tmp"}) {
    fs::create_directories(fs::path(opt.data_dir) / sub, ec);
    if (ec) FileError(opt.data_dir + "/" + sub + ": cannot create", ec);
  }
  fs::remove_all(fs::path(opt.data_dir) / "tmp", ec);  // partial uploads and backups of a previous run
  RemoveBackupStages(opt.data_dir);
  fs::create_directories(fs::path(opt.data_dir) / "tmp", ec);
  impl_->shards = std::make_unique<ShardPlanner>(opt.data_dir);
  if (opt.metrics) opt.metrics->WatchDisk(opt.data_dir);
  impl_->store = std::make_unique<Store>((fs::path(opt.data_dir) / "coordinator.db").string());
  for (auto& rec : impl_->store->ListJobs()) impl_->jobs[rec.job().id()] = std::move(rec);
  const int64_t now = impl_->Now();
  for (auto& w : impl_->store->ListWorkers()) {
    WorkerState s;
    s.rec = std::move(w);
    // Workers reconnect by themselves; give them a full timeout before their jobs are failed.
    s.last_seen_ms = now;
    s.heard = false;  // not yet by this process: not trusted with a retry or a resize
    impl_->workers[s.rec.info().id()] = std::move(s);
  }
  impl_->VoidRestoredAttempts();
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

std::string Coordinator::SubmitJob(const v1::JobSpec& spec_in, const Principal& who) {
  if (spec_in.has_eval()) {
    std::lock_guard<std::mutex> l(impl_->mu);
    const std::string id = impl_->InsertEvalRun(impl_->ResolveEvalSpec(spec_in, who), who.name);
    impl_->Schedule();
    impl_->PublishCounts();
    return id;
  }
  v1::JobSpec spec = spec_in;
  if (spec.no_preempt() && !who.admin())
    ThrowError(Code::kPermissionDenied, "spec.no_preempt: admins only (" + who.name + " is not one)");
  std::string data_ref, hash, eval_hash, dataset_ref;
  if (!spec.dataset().empty() && !spec.data_path().empty())
    InvalidArgument("spec: give dataset or data_path, not both");
  if (!spec.dataset().empty()) {
    v1::DatasetInfo d;
    {
      std::lock_guard<std::mutex> l(impl_->mu);
      bool by_hash = false;
      d = impl_->ResolveDataset(spec.dataset(), who, "spec.dataset", &by_hash);
      if (!by_hash) dataset_ref = d.owner() + "/" + d.name();
    }
    hash = d.content_sha256();
    data_ref = "dataset:" + hash;
  } else if (!spec.data_path().empty()) {
    spec.set_data_path(NormalAbsolutePath(spec.data_path(), "spec.data_path"));
    data_ref = spec.data_path();
  } else {
    InvalidArgument("spec: dataset (a pushed dataset's name or hash) or data_path is required");
  }
  if (spec.world_size() == 0) spec.set_world_size(1);
  // Reads the named config's files: outside the lock (a stored dataset is never removed).
  std::vector<int> sizes;
  const std::string config = ResolveJobConfig(spec, impl_->opt.config_dir, data_ref, &sizes);
  // It can start on its smallest size: that is what the checks below hold it to.
  const int smallest = sizes.back();
  const std::string wanted = smallest == spec.world_size() ? "spec.world_size: " + std::to_string(smallest) + " ranks"
                                                           : "spec.min_world_size: " + std::to_string(smallest) + " ranks";
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (!spec.eval_dataset().empty()) {
    const auto [info, manifest] = impl_->StoredDataset(spec.eval_dataset(), "spec.eval_dataset", who);
    if (!HasSplit(manifest, "test"))
      InvalidArgument("spec.eval_dataset: dataset '" + spec.eval_dataset() + "' has no test split (no files under test/)");
    eval_hash = info.content_sha256();
  }
  int total_slots = 0, readable_slots = 0;
  std::string roots;  // for the refusal: who may read what
  for (const auto& [id, w] : impl_->workers) {
    if (!w.rec.info().alive()) continue;
    total_slots += w.rec.info().slots();
    if (spec.data_path().empty()) continue;
    if (WorkerMayRead(w.rec.info(), spec.data_path(), impl_->opt.require_data_roots))
      readable_slots += w.rec.info().slots();
    std::string mine;
    for (int i = 0; i < w.rec.info().data_roots_size(); i += 2) mine += (mine.empty() ? "" : " ") + w.rec.info().data_roots(i);
    roots += (roots.empty() ? "" : "; ") + id + ": " + (mine.empty() ? "no --data-root" : mine);
  }
  if (smallest > total_slots)
    ThrowError(Code::kFailedPrecondition,
               wanted + ", but the live workers have " + std::to_string(total_slots) + " slots in all (trmctl workers)");
  if (const int quota = impl_->QuotaOf(who.name); quota > 0 && smallest > quota)
    ThrowError(Code::kFailedPrecondition, wanted + ", but " + who.name + "'s quota is " + std::to_string(quota) +
                                              " slots (--quota-slots): the job could never start");
  if (!spec.data_path().empty() && smallest > readable_slots)
    ThrowError(Code::kFailedPrecondition,
               "spec.data_path " + spec.data_path() + ": " + std::to_string(readable_slots) + " live worker slot(s) may read it, " +
                   std::to_string(smallest) + " needed; a data path must lie inside a worker's --data-root" +
                   (impl_->opt.require_data_roots ? " (this coordinator runs with auth: workers without one take none)" : "") +
                   " [" + roots + "]; or push the data with trmctl dataset push");
  std::string id;
  impl_->Insert([&](v1::JobRecord* rec) {
    id = impl_->NewJobId();
    impl_->EmitState(rec, Submit(rec, id, spec, config, hash, impl_->Now()));
    rec->mutable_job()->set_kind("train");
    for (int n : sizes) rec->mutable_job()->add_world_sizes(n);
    rec->mutable_job()->set_eval_dataset_hash(eval_hash);
    rec->mutable_job()->set_owner(who.name);
    rec->mutable_job()->set_dataset_ref(dataset_ref);
  });
  impl_->Schedule();
  impl_->PublishCounts();
  return id;
}

v1::Job Coordinator::GetJob(const std::string& job_id, const Principal& who) {
  CheckJobId(job_id);
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->WithRanks(impl_->WithWarning(impl_->VisibleJob(job_id, who).job()));
}

std::vector<v1::Job> Coordinator::ListJobs(const std::vector<v1::JobState>& states, int limit, const Principal& who,
                                           const std::string& owner) {
  if (limit < 0 || limit > 10000) InvalidArgument("limit: expected 0 to 10000");
  if (!owner.empty()) rpc::CheckName(owner, "owner");
  std::lock_guard<std::mutex> l(impl_->mu);
  if (limit <= 0) limit = 100;
  std::vector<v1::Job> out;
  // Newest first: what a user looks for.
  for (auto it = impl_->jobs.rbegin(); it != impl_->jobs.rend() && static_cast<int>(out.size()) < limit; ++it) {
    const auto& j = it->second.job();
    if (!impl_->Visible(j, who) || (!owner.empty() && OwnerOf(j) != owner)) continue;
    if (states.empty() || std::find(states.begin(), states.end(), j.state()) != states.end())
      out.push_back(impl_->WithWarning(j));
  }
  return out;
}

v1::Job Coordinator::CancelJob(const std::string& job_id, const Principal& who) {
  CheckJobId(job_id);
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->RequireOwner(impl_->VisibleJob(job_id, who).job(), who, "cancel it");
  if (Terminal(impl_->Job(job_id).job().state())) return impl_->WithWarning(impl_->Job(job_id).job());
  impl_->Mutate(job_id, [&](v1::JobRecord* rec) { impl_->EmitState(rec, Cancel(rec, impl_->Now())); });
  impl_->PublishCounts();
  return impl_->WithWarning(impl_->Job(job_id).job());
}

std::vector<v1::JobEvent> Coordinator::ReadEvents(const std::string& job_id, uint64_t after_seq, bool include_logs,
                                                  int limit, const Principal& who) {
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->VisibleJob(job_id, who);
  return impl_->store->ReadEvents(job_id, after_seq, include_logs, limit);
}

bool Coordinator::WaitForEvents(const std::string& job_id, uint64_t after_seq, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> l(impl_->mu);
  auto more = [&] { return impl_->Job(job_id).last_seq() > after_seq; };
  impl_->events_cv.wait_for(l, timeout, more);
  return more() || !Terminal(impl_->Job(job_id).job().state());
}

std::vector<v1::JobEvent> Coordinator::StateEvents(const std::string& job_id, const Principal& who) {
  CheckJobId(job_id);
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->VisibleJob(job_id, who);
  return impl_->store->ReadStateEvents(job_id);
}

std::vector<v1::JobEvent> Coordinator::TailLogs(const std::string& job_id, int lines, const Principal& who) {
  CheckJobId(job_id);
  if (lines < 1 || lines > 5000) InvalidArgument("lines: expected 1 to 5000");
  std::lock_guard<std::mutex> l(impl_->mu);
  impl_->VisibleJob(job_id, who);
  return impl_->store->LastLogs(job_id, lines);
}

std::vector<v1::StepMetrics> Coordinator::GetMetrics(const std::string& job_id, int64_t from_step, int limit,
                                                     const Principal& who, uint64_t* last_seq) {
  CheckJobId(job_id);
  if (limit < 0) InvalidArgument("limit: must not be negative");
  std::lock_guard<std::mutex> l(impl_->mu);
  const v1::JobRecord& rec = impl_->VisibleJob(job_id, who);
  if (last_seq) *last_seq = rec.last_seq();
  return impl_->store->ReadMetrics(job_id, from_step, limit);
}

std::vector<v1::CheckpointInfo> Coordinator::ListCheckpoints(const std::string& job_id, const Principal& who) {
  CheckJobId(job_id);
  std::lock_guard<std::mutex> l(impl_->mu);
  const std::string owner = OwnerOf(impl_->VisibleJob(job_id, who).job());
  std::vector<v1::CheckpointInfo> out;
  for (const auto& c : impl_->store->ListCheckpoints(job_id)) {
    out.push_back(c.info());
    out.back().set_owner(owner);
  }
  return out;
}

FileSet Coordinator::ResolveCheckpoint(const std::string& job_id, const std::string& selector, bool weights_only,
                                       const Principal& who) {
  CheckJobId(job_id);
  if (selector.size() > 256) InvalidArgument("selector: longer than 256 characters");
  v1::CheckpointRecord pick;
  {
    std::lock_guard<std::mutex> l(impl_->mu);
    impl_->VisibleJob(job_id, who);
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

v1::GetQueueResponse Coordinator::GetQueue(const Principal& who) {
  std::lock_guard<std::mutex> l(impl_->mu);
  v1::GetQueueResponse out;
  const auto reserved = impl_->Reserved();
  for (const auto& [id, w] : impl_->workers) {
    if (!w.rec.info().alive()) continue;
    out.set_live_workers(out.live_workers() + 1);
    out.set_free_slots(out.free_slots() + impl_->FreeSlotsOf(w, reserved));
  }
  int position = 0;
  for (const v1::JobRecord* r : impl_->QueuedInOrder()) {
    ++position;
    const v1::Job& j = r->job();
    if (!impl_->Visible(j, who)) continue;
    v1::QueueEntry* e = out.add_entries();
    e->set_position(position);
    e->set_job_id(j.id());
    e->set_owner(OwnerOf(j));
    e->set_name(j.spec().name());
    e->set_kind(IsEvalRun(*r) ? "eval" : "train");
    e->set_priority(j.spec().priority());
    e->set_slots(IsEvalRun(*r) ? 1 : WorldSizesOf(*r).front());
    e->set_min_slots(IsEvalRun(*r) ? 1 : WorldSizesOf(*r).back());
    e->set_waiting_since_unix_ms(Impl::QueuedSince(*r));
    if (auto it = impl_->queue_reasons.find(j.id()); it != impl_->queue_reasons.end()) e->set_reason(it->second);
  }
  return out;
}

std::vector<v1::WorkerInfo> Coordinator::ListWorkers(const Principal& who) {
  std::lock_guard<std::mutex> l(impl_->mu);
  std::vector<v1::WorkerInfo> out;
  const auto reserved = impl_->Reserved();
  for (const auto& [id, w] : impl_->workers) {
    v1::WorkerInfo info = w.rec.info();
    info.set_free_slots(info.alive() ? impl_->FreeSlotsOf(w, reserved) : 0);
    info.set_last_heartbeat_unix_ms(w.last_seen_ms);
    for (const auto& j : impl_->JobsOn(id))
      if (impl_->Visible(impl_->jobs.at(j).job(), who)) info.add_jobs(j);
    out.push_back(std::move(info));
  }
  return out;
}

v1::DatasetInfo Coordinator::PushDataset(const std::function<bool(v1::TransferMessage*)>& read, const Principal& who) {
  v1::TransferMessage msg;
  if (!read(&msg) || !msg.has_manifest()) InvalidArgument("PushDataset: the first message must be the manifest");
  // Checked before any data is accepted: a push into someone else's namespace is refused whole.
  const DatasetRef ref = ParseDatasetRef(msg.manifest().name(), who.name, "manifest.name (the dataset name)");
  if (ref.owner != who.name && !who.admin())
    ThrowError(Code::kPermissionDenied, "dataset name " + msg.manifest().name() + " belongs to " + ref.owner +
                                            ": only " + ref.owner + " or an admin may push a version of it; push it as " +
                                            ref.name + " (yours, " + who.name + "/" + ref.name + ")");
  rpc::FileReceiver receiver(impl_->NewUploadDir("dataset"), impl_->opt.max_dataset_bytes);
  receiver.OnManifest(msg.manifest());
  while (read(&msg)) receiver.OnMessage(msg);
  return impl_->CommitDataset(&receiver, ref.owner, ref.name);
}

std::vector<v1::DatasetInfo> Coordinator::ListDatasets(const Principal& who) {
  std::lock_guard<std::mutex> l(impl_->mu);
  std::vector<v1::DatasetInfo> out;
  for (auto& d : impl_->store->ListDatasets())
    if (!impl_->opt.private_reads || who.admin() || d.owner() == who.name) out.push_back(std::move(d));
  return out;
}

void Coordinator::RecordAudit(v1::AuditEntry entry) {
  if (entry.principal().empty()) {
    // Anyone who reaches the port can be refused: such entries are rate-limited, so a flood of
    // bad credentials cannot fill the disk (refused ones are counted in the log instead).
    try {
      impl_->anonymous_audit_rate.Take("unauthenticated calls", 1);
    } catch (const Error&) {
      if (++impl_->anonymous_audit_dropped % 1000 == 1)
        spdlog::warn("audit: unauthenticated refusals over 20 a second are not recorded ({} so far)",
                     impl_->anonymous_audit_dropped);
      return;
    }
  }
  std::lock_guard<std::mutex> l(impl_->mu);
  entry.set_time_unix_ms(impl_->Now());
  try {
    impl_->store->AppendAudit(entry);
  } catch (const Error& e) {
    // The call itself has happened (or was refused); a full disk must not turn it into an error.
    spdlog::error("audit: cannot record {} by {} on {}: {}", entry.method(), entry.principal(), entry.target(), e.what());
  }
}

std::vector<v1::AuditEntry> Coordinator::ListAudit(int64_t since_unix_ms, const std::string& user, int limit,
                                                   const Principal& who) {
  if (!who.admin()) ThrowError(Code::kPermissionDenied, "ListAudit: admins only; " + who.name + " is not one");
  if (limit < 0 || limit > 100000) InvalidArgument("limit: expected 0 to 100000");
  if (!user.empty()) rpc::CheckName(user, "user");
  std::lock_guard<std::mutex> l(impl_->mu);
  return impl_->store->ListAudit(since_unix_ms, user, limit == 0 ? 1000 : limit);
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
  if (req.data_roots_size() > 64 || req.data_roots_size() % 2) InvalidArgument("data_roots: expected given/resolved pairs");
  std::vector<std::string> roots;
  for (const auto& r : req.data_roots()) roots.push_back(NormalAbsolutePath(r, "data_roots"));
  std::lock_guard<std::mutex> l(impl_->mu);
  WorkerState& w = impl_->workers[req.worker_id()];
  auto* info = w.rec.mutable_info();
  const bool known = !info->id().empty();
  info->set_id(req.worker_id());
  info->set_host(req.host());
  info->set_slots(req.slots());
  info->set_device_kind(req.device_kind());
  info->mutable_devices()->CopyFrom(req.devices());
  info->clear_data_roots();
  for (const auto& r : roots) info->add_data_roots(r);
  info->set_alive(true);
  w.rec.set_metrics_endpoint(req.metrics_endpoint());
  w.last_seen_ms = impl_->Now();
  w.heard = true;
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
    w.heard = true;
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
  impl_->EndOverduePreemptions();
  impl_->Schedule();
  impl_->GrowElastic();
  impl_->PublishCounts();
  impl_->ForgetEndedJobs();
  impl_->PruneAudit();
}

}  // namespace trm::coordinator
