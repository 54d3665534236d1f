#include "attempt.h"

#include <spdlog/spdlog.h>

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "agent_metrics.h"
#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/worker/phase_file.h"

namespace trm::agent {
namespace fs = std::filesystem;
using std::chrono::milliseconds;

namespace {

int64_t ReadRssBytes(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6)) * 1024;  // "   1234 kB"
  }
  return 0;
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

v1::RankPhase ToProto(worker::Phase p) {
  switch (p) {
    case worker::Phase::kStarting: return v1::PHASE_STARTING;
    case worker::Phase::kData: return v1::PHASE_DATA;
    case worker::Phase::kCompute: return v1::PHASE_COMPUTE;
    case worker::Phase::kAllReduce: return v1::PHASE_ALLREDUCE;
    case worker::Phase::kCheckpoint: return v1::PHASE_CHECKPOINT;
    case worker::Phase::kEval: return v1::PHASE_EVAL;
  }
  return v1::PHASE_UNSPECIFIED;
}

}  // namespace

std::string Attempt::PhaseFilePath(int rank) const { return agent::PhaseFilePath(attempt_dir(), rank); }

Attempt::Attempt(AttemptSetup setup, CoordinatorClient* client, std::mutex* fetch_mu, AgentMetrics* metrics,
                 Clock* clock)
    : s_(std::move(setup)), client_(client), fetch_mu_(fetch_mu), metrics_(metrics), clock_(clock), stop_(clock) {
  for (int r : s_.assignment.ranks()) hosts_rank0_ = hosts_rank0_ || r == 0;
}

Attempt::~Attempt() {
  Stop("the worker dropped the attempt");
  Join();
}

std::string Attempt::attempt_dir() const {
  return (fs::path(s_.work_dir) / "jobs" / s_.assignment.job_id() / ("attempt_" + std::to_string(s_.assignment.attempt())))
      .string();
}

void Attempt::Start() { thread_ = std::thread([this] { Run(); }); }

void Attempt::Stop(const std::string& reason, bool drain, int64_t grace_ms) {
  if (!stop_.Raise(reason, drain, grace_ms)) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (publisher_) publisher_->Wake();
}

void Attempt::Join() {
  if (thread_.joinable()) thread_.join();
}

int Attempt::running_ranks() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return 0;
  const auto views = ranks_ ? ranks_->Ranks() : std::vector<RankSupervisor::RankView>{};
  int n = 0;
  for (const auto& r : views) n += r.exited ? 0 : 1;
  // Before the ranks start (fetching) their slots are spoken for all the same.
  return views.empty() ? s_.assignment.ranks_size() : n;
}

v1::AttemptStatus Attempt::Status() {
  v1::AttemptStatus st;
  st.set_job_id(s_.assignment.job_id());
  st.set_attempt(s_.assignment.attempt());
  std::vector<RankSupervisor::RankView> views;
  int64_t step = -1;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (ranks_) views = ranks_->Ranks();
    if (publisher_) step = publisher_->last_step();
  }
  for (int i = 0; i < s_.assignment.ranks_size(); ++i) {
    auto* rs = st.add_ranks();
    rs->set_rank(s_.assignment.ranks(i));
    rs->set_step(std::max<int64_t>(step, 0));
    const RankSupervisor::RankView* r = i < static_cast<int>(views.size()) ? &views[i] : nullptr;
    if (r == nullptr) {
      rs->set_phase(finished_ ? v1::PHASE_EXITED : v1::PHASE_STARTING);
      continue;
    }
    rs->set_pid(r->pid);
    if (r->exited) {
      rs->set_phase(v1::PHASE_EXITED);
      continue;
    }
    if (const auto rec = worker::ReadPhaseFile(PhaseFilePath(r->rank))) {
      // The rank's own report: its phase, how long it has been in it (against its own wall-clock
      // stamp, so real time), its step.
      rs->set_phase(ToProto(rec->phase));
      rs->set_phase_elapsed_ms(std::max<int64_t>(0, NowUnixMs() - rec->since_unix_ms));
      rs->set_step(rec->step);
      if (rec->last_step.step >= 0) {
        v1::RankStepTime* t = rs->mutable_last_step();
        t->set_step(rec->last_step.step);
        t->set_total_s(rec->last_step.total_us() / 1e6);
        t->set_data_s(rec->last_step.data_us / 1e6);
        t->set_compute_s(rec->last_step.compute_us / 1e6);
        t->set_allreduce_s(rec->last_step.allreduce_us / 1e6);
      }
    } else {
      rs->set_phase(step >= 0 ? v1::PHASE_COMPUTE : v1::PHASE_STARTING);
    }
    const int64_t rss = ReadRssBytes(r->pid);
    rs->set_rss_bytes(rss);
    metrics_->SetRss(s_.assignment.job_id(), r->rank, static_cast<double>(rss));
  }
  return st;
}

void Attempt::Run() {
  const std::string name = s_.assignment.job_id() + "/attempt_" + std::to_string(s_.assignment.attempt());
  if (s_.already_ran) {
    FailAll("lost_worker", "the worker restarted while this attempt ran on it; its ranks are gone");
  } else {
    try {
      Prepare();
      std::function<void(v1::WorkerEvent)> on_rank0_success;
      RankLaunch l = Launch(&on_rank0_success);
      std::unique_ptr<CheckpointPublisher> publisher;
      if (hosts_rank0_ && !s_.assignment.has_eval()) {
        publisher = std::make_unique<CheckpointPublisher>(
            PublisherSetup{s_.assignment, s_.worker_id, attempt_dir() + "/run", s_.retry}, client_, metrics_, events_,
            &stop_, clock_);
        on_rank0_success = [p = publisher.get()](v1::WorkerEvent e) { p->OnRankZeroSuccess(std::move(e)); };
      }
      auto ranks = std::make_unique<RankSupervisor>(std::move(l), &stop_, &events_, std::move(on_rank0_success));
      {
        std::lock_guard<std::mutex> lock(mu_);
        ranks_ = std::move(ranks);
        publisher_ = std::move(publisher);
      }
      ranks_->Spawn();
    } catch (const std::exception& e) {
      spdlog::error("{}: cannot start: {}", name, e.what());
      const auto* err = dynamic_cast<const Error*>(&e);
      FailAll(err && err->code() == Code::kPermissionDenied ? "bad_input" : "setup", e.what());
    }
  }
  if (ranks_ && ranks_->started()) {
    if (publisher_) publisher_->Start();
    ranks_->Run();
    if (publisher_) {
      publisher_->OnRanksDone();
      publisher_->Join();
    }
    for (auto& e : ranks_->TakeHeldExits()) events_.Add(std::move(e));  // a preemption's, after the uploads
  }
  finished_ = true;
  spdlog::info("{}: finished", name);
}

RankLaunch Attempt::Launch(std::function<void(v1::WorkerEvent)>* on_rank0_success) {
  RankLaunch l{s_.assignment, attempt_dir(), s_.train_binary, s_.device_kind, s_.slot_devices,
               dataset_dir_, checkpoint_dir_, s_.grace_ms};
  if (!s_.assignment.has_eval()) return l;
  // An evaluation run: trm-eval instead of trm-train; its clean exit carries its result.
  l.command = EvalCommand(eval_);
  l.on_stdout = [this](const std::string& line) { eval_output_.OnStdout(line); };
  *on_rank0_success = [this](v1::WorkerEvent exit) {
    for (auto& e : EvalExitEvents(eval_output_.last(), std::move(exit))) events_.Add(std::move(e));
  };
  return l;
}

void Attempt::FailAll(const std::string& kind, const std::string& message) {
  for (int r : s_.assignment.ranks()) {
    v1::WorkerEvent e;
    auto* x = e.mutable_exit();
    x->set_rank(r);
    x->set_exit_code(-1);
    x->set_failure_kind(kind);
    x->set_message(message);
    events_.Add(std::move(e));
  }
}

void Attempt::Fetch(const std::string& what, const std::function<void()>& fetch) {
  // The coordinator may be restarting: transient failures are retried (retry.h) until the
  // attempt stops.
  RetryCall(
      what, s_.retry, *clock_, [&](milliseconds d) { return stop_.WaitFor(d); },
      [&] {
        std::lock_guard<std::mutex> lock(*fetch_mu_);
        fetch();
      });
}

void Attempt::PrepareEval() {
  const v1::Assignment& a = s_.assignment;
  const v1::EvalAssignment& e = a.eval();
  if (s_.eval_binary.empty() || ::access(s_.eval_binary.c_str(), X_OK) != 0)
    NotFound("--eval-binary: '" + s_.eval_binary + "' is not an executable file; this worker cannot run evaluations");
  rpc::CheckName(e.source_job(), "assignment eval.source_job");
  rpc::CheckName(e.checkpoint(), "assignment eval.checkpoint");
  const fs::path cache = fs::path(s_.work_dir) / "cache";
  // A whole copy (a resume checkpoint fetched earlier) serves as well as the weights-only one.
  const fs::path whole = cache / "checkpoints" / e.source_job() / e.checkpoint();
  eval_.checkpoint_dir = fs::exists(whole) ? whole.string() : whole.string() + ".weights";
  Fetch("checkpoint " + e.source_job() + "/" + e.checkpoint() + " (weights only)", [&] {
    if (fs::exists(eval_.checkpoint_dir)) return;
    const v1::Manifest m = client_->FetchCheckpoint(e.source_job(), e.checkpoint(), eval_.checkpoint_dir, true);
    spdlog::info("{}: fetched {}/{} weights only ({} bytes)", a.job_id(), e.source_job(), e.checkpoint(),
                 m.total_bytes());
  });
  const std::string hash = e.prompts_hash().empty() ? a.dataset_hash() : e.prompts_hash();
  rpc::CheckName(hash, "assignment dataset_hash");
  const std::string dataset = (cache / "datasets" / hash).string();
  Fetch("dataset " + hash.substr(0, 12), [&] {
    if (!fs::exists(dataset)) client_->FetchDataset(hash, v1::ShardSpec(), dataset);
  });
  eval_.eval_binary = s_.eval_binary;
  eval_.device_kind = s_.device_kind;
  eval_.split = e.split().empty() ? "test" : e.split();
  if (e.prompts_hash().empty()) {
    eval_.dataset_dir = dataset;
  } else {
    eval_.prompts_file = FindPromptsFile(dataset);
    eval_.output_file = attempt_dir() + "/completions.jsonl";
  }
}

void Attempt::Prepare() {
  const v1::Assignment& a = s_.assignment;
  rpc::CheckName(a.job_id(), "assignment job_id");
  if (a.ranks_size() == 0) InvalidArgument("assignment of " + a.job_id() + " has no ranks");
  const fs::path dir = attempt_dir();
  std::error_code ec;
  fs::create_directories(dir / "config", ec);
  if (ec) FileError(dir.string() + ": cannot create", ec);
  if (a.has_eval()) return PrepareEval();

  if (!a.dataset_hash().empty()) {
    rpc::CheckName(a.dataset_hash(), "assignment dataset_hash");
    // A shard (the rows these ranks read in a run shorter than the data) has its own cache entry.
    const bool shard = a.shard().world_size() > 0;  // an absent shard reads as world_size 0
    const std::string key = a.dataset_hash() + (shard ? "-shard-" + rpc::ShardKey(a.shard()) : "");
    dataset_dir_ = (fs::path(s_.work_dir) / "cache" / "datasets" / key).string();
    Fetch("dataset " + key, [&] {
      if (fs::exists(dataset_dir_)) return;
      const v1::Manifest m = client_->FetchDataset(a.dataset_hash(), a.shard(), dataset_dir_);
      spdlog::info("{}: fetched dataset {} ({} bytes{})", a.job_id(), key.substr(0, 12), m.total_bytes(),
                   shard ? ", the rows of ranks of this worker only" : "");
    });
  } else {
    // What is opened, symlinks followed, must lie inside a --data-root: the coordinator checked
    // only the words of the path.
    dataset_dir_ = ResolveWithinRoots(a.data_path(), s_.data_roots);
    CheckTreeWithinRoots(dataset_dir_, s_.data_roots);  // and nothing below it links out
  }
  if (!a.resume_checkpoint().empty()) {
    rpc::CheckName(a.resume_checkpoint(), "assignment resume_checkpoint");
    checkpoint_dir_ = (fs::path(s_.work_dir) / "cache" / "checkpoints" / a.job_id() / a.resume_checkpoint()).string();
    Fetch("checkpoint " + a.job_id() + "/" + a.resume_checkpoint(), [&] {
      if (!fs::exists(checkpoint_dir_)) client_->FetchCheckpoint(a.job_id(), a.resume_checkpoint(), checkpoint_dir_, false);
    });
  }
  // JSON is YAML: trm-train composes it like any config file.
  try {
    if (!nlohmann::json::parse(a.config_json()).is_object()) InvalidArgument("not an object");
  } catch (const std::exception& e) {
    InvalidArgument("assignment config_json of " + a.job_id() + ": " + e.what());
  }
  WriteFileAtomic((dir / "config" / "job.yaml").string(), a.config_json() + "\n");
}

}  // namespace trm::agent
