#include "attempt.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "agent_metrics.h"
#include "metrics_tailer.h"
#include "trm/common/error.h"
#include "trm/common/exit_codes.h"
#include "trm/common/file_util.h"
#include "trm/common/rank_group.h"
#include "trm/common/unique_fd.h"
#include "trm/worker/phase_file.h"

extern char** environ;

namespace trm::agent {
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;

namespace {

constexpr milliseconds kPublishTick{500};
constexpr size_t kTailLines = 20;  // of a failing rank's output, in its exit report

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

std::string Attempt::PhaseFilePath(int rank) const { return attempt_dir() + "/rank_" + std::to_string(rank) + ".phase"; }

struct Attempt::Rank {
  int rank = 0;        // global
  int local_rank = 0;
  UniqueFd log;        // supervisor thread only (RankGroup's sink)
  // Read by Status() under mu_:
  pid_t pid = 0;
  bool exited = false;
};

Attempt::Attempt(AttemptSetup setup, CoordinatorClient* client, std::mutex* fetch_mu, AgentMetrics* metrics)
    : s_(std::move(setup)), client_(client), fetch_mu_(fetch_mu), metrics_(metrics) {
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

void Attempt::Start() { supervisor_ = std::thread([this] { Supervise(); }); }

void Attempt::Stop(const std::string& reason) {
  std::lock_guard<std::mutex> lock(mu_);
  if (stop_) return;
  stop_ = true;
  stop_reason_ = reason;
  cv_.notify_all();
}

void Attempt::Join() {
  if (supervisor_.joinable()) supervisor_.join();
}

int Attempt::running_ranks() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return 0;
  int n = 0;
  for (const auto& r : ranks_) n += r->exited ? 0 : 1;
  // Before the ranks start (fetching) their slots are spoken for all the same.
  return ranks_.empty() ? s_.assignment.ranks_size() : n;
}

v1::AttemptStatus Attempt::Status() {
  v1::AttemptStatus st;
  st.set_job_id(s_.assignment.job_id());
  st.set_attempt(s_.assignment.attempt());
  std::lock_guard<std::mutex> lock(mu_);
  const int64_t step = last_step_.load();
  for (int i = 0; i < s_.assignment.ranks_size(); ++i) {
    auto* rs = st.add_ranks();
    rs->set_rank(s_.assignment.ranks(i));
    rs->set_step(std::max<int64_t>(step, 0));
    const Rank* r = i < static_cast<int>(ranks_.size()) ? ranks_[i].get() : nullptr;
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
      // The rank's own report: its phase, how long it has been in it, its step.
      rs->set_phase(ToProto(rec->phase));
      rs->set_phase_elapsed_ms(std::max<int64_t>(0, NowUnixMs() - rec->since_unix_ms));
      rs->set_step(rec->step);
    } else {
      rs->set_phase(step >= 0 ? v1::PHASE_COMPUTE : v1::PHASE_STARTING);
    }
    const int64_t rss = ReadRssBytes(r->pid);
    rs->set_rss_bytes(rss);
    metrics_->SetRss(s_.assignment.job_id(), r->rank, static_cast<double>(rss));
  }
  return st;
}

// ---------------------------------------------------------------------------- supervisor

void Attempt::Supervise() {
  const std::string name = s_.assignment.job_id() + "/attempt_" + std::to_string(s_.assignment.attempt());
  if (s_.already_ran) {
    FailAll("lost_worker", "the worker restarted while this attempt ran on it; its ranks are gone");
  } else {
    try {
      Prepare();
      SpawnRanks();
    } catch (const std::exception& e) {
      spdlog::error("{}: cannot start: {}", name, e.what());
      FailAll("setup", e.what());
    }
  }
  if (!ranks_.empty()) {
    if (hosts_rank0_) publisher_ = std::thread([this] { Publish(); });
    Loop();
    DrainAndReap();
    {
      std::lock_guard<std::mutex> lock(mu_);
      ranks_done_ = true;
      cv_.notify_all();
    }
    if (publisher_.joinable()) publisher_.join();
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    finished_ = true;
  }
  spdlog::info("{}: finished", name);
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

bool Attempt::WaitStop(milliseconds d) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, d, [&] { return stop_; });
}

std::string Attempt::FetchWithRetry(const std::string& what, const std::function<void()>& fetch) {
  // The coordinator may be restarting: transient failures are retried until the attempt stops.
  milliseconds backoff{500};
  while (true) {
    try {
      std::lock_guard<std::mutex> lock(*fetch_mu_);
      fetch();
      return {};
    } catch (const Error& e) {
      if (e.code() != Code::kUnavailable && e.code() != Code::kDeadlineExceeded) throw;
      spdlog::warn("{}: {}; retrying in {} ms", what, e.what(), backoff.count());
    }
    if (WaitStop(backoff)) ThrowError(Code::kCancelled, what + ": stopped while fetching");
    backoff = std::min(backoff * 2, milliseconds(s_.upload_retry_max_ms));
  }
}

void Attempt::Prepare() {
  const v1::Assignment& a = s_.assignment;
  rpc::CheckName(a.job_id(), "assignment job_id");
  if (a.ranks_size() == 0) InvalidArgument("assignment of " + a.job_id() + " has no ranks");
  const fs::path dir = attempt_dir();
  std::error_code ec;
  fs::create_directories(dir / "config", ec);
  if (ec) IoError(dir.string() + ": cannot create: " + ec.message());

  if (!a.dataset_hash().empty()) {
    rpc::CheckName(a.dataset_hash(), "assignment dataset_hash");
    // A shard (the rows these ranks read in a run shorter than the data) has its own cache entry.
    const bool shard = a.shard().world_size() > 0;  // an absent shard reads as world_size 0
    const std::string key = a.dataset_hash() + (shard ? "-shard-" + rpc::ShardKey(a.shard()) : "");
    dataset_dir_ = (fs::path(s_.work_dir) / "cache" / "datasets" / key).string();
    FetchWithRetry("dataset " + key, [&] {
      if (fs::exists(dataset_dir_)) return;
      const v1::Manifest m = client_->FetchDataset(a.dataset_hash(), a.shard(), dataset_dir_);
      spdlog::info("{}: fetched dataset {} ({} bytes{})", a.job_id(), key.substr(0, 12), m.total_bytes(),
                   shard ? ", the rows of ranks of this worker only" : "");
    });
  } else {
    dataset_dir_ = a.data_path();
  }
  if (!a.resume_checkpoint().empty()) {
    rpc::CheckName(a.resume_checkpoint(), "assignment resume_checkpoint");
    checkpoint_dir_ = (fs::path(s_.work_dir) / "cache" / "checkpoints" / a.job_id() / a.resume_checkpoint()).string();
    FetchWithRetry("checkpoint " + a.job_id() + "/" + a.resume_checkpoint(), [&] {
      if (!fs::exists(checkpoint_dir_)) client_->FetchCheckpoint(a.job_id(), a.resume_checkpoint(), checkpoint_dir_);
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

void Attempt::SpawnRanks() {
  const v1::Assignment& a = s_.assignment;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) ThrowError(Code::kCancelled, "stopped before the ranks started: " + stop_reason_);
  }
  const std::string dir = attempt_dir();
  RankGroupOptions group_options;
  group_options.output.tail_lines = kTailLines;
  group_ = std::make_unique<RankGroup>(group_options);
  std::vector<std::string> argv{s_.train_binary, "--config-dir", dir + "/config", "--config-name", "job", "--no-progress"};
  if (!dataset_dir_.empty()) argv.push_back("data_paths=[" + dataset_dir_ + "]");
  argv.push_back("run_dir=" + dir + "/run");
  if (!checkpoint_dir_.empty()) argv.push_back("load_checkpoint=" + checkpoint_dir_);

  const std::vector<std::string> ours{"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                                      "MASTER_ADDR", "MASTER_PORT", "TRM_RESTART_COUNT", "CUDA_VISIBLE_DEVICES",
                                      "TRM_PHASE_FILE"};
  std::vector<std::string> base;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    if (std::find(ours.begin(), ours.end(), key) == ours.end()) base.push_back(kv);
  }
  try {
    for (int i = 0; i < a.ranks_size(); ++i) {
      SpawnSpec spec;
      spec.path = s_.train_binary;
      spec.argv = argv;
      spec.env = base;
      auto set = [&](const std::string& k, const std::string& v) { spec.env.push_back(k + "=" + v); };
      set("RANK", std::to_string(a.ranks(i)));
      set("LOCAL_RANK", std::to_string(i));
      set("WORLD_SIZE", std::to_string(a.world_size()));
      set("LOCAL_WORLD_SIZE", std::to_string(a.ranks_size()));
      set("GROUP_RANK", "0");
      set("MASTER_ADDR", a.master_addr());
      set("MASTER_PORT", std::to_string(a.master_port()));
      set("TRM_RESTART_COUNT", "0");
      set("TRM_PHASE_FILE", PhaseFilePath(a.ranks(i)));
      if (s_.device_kind == "cuda" && i < static_cast<int>(s_.slot_devices.size()))
        set("CUDA_VISIBLE_DEVICES", s_.slot_devices[i]);

      auto r = std::make_unique<Rank>();
      r->rank = a.ranks(i);
      r->local_rank = i;
      const std::string log_path = dir + "/rank_" + std::to_string(r->rank) + ".log";
      r->log.reset(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
      if (!r->log.valid()) IoError(log_path + ": cannot create: " + std::strerror(errno));
      Rank* rp = r.get();
      const size_t index = group_->Spawn(spec, "rank " + std::to_string(r->rank),
                                         [this, rp](OutputStream, const std::string& line) { EmitLine(*rp, line); });
      r->pid = group_->pid(index);
      spdlog::info("{}/attempt_{}: started rank {} (pid {})", a.job_id(), a.attempt(), r->rank, r->pid);
      std::lock_guard<std::mutex> lock(mu_);
      ranks_.push_back(std::move(r));
    }
  } catch (const Error& e) {
    if (ranks_.empty()) throw;
    // Some ranks run: report the rest, stop those, and let the loop reap them.
    for (int i = static_cast<int>(ranks_.size()); i < a.ranks_size(); ++i) {
      v1::WorkerEvent ev;
      ev.mutable_exit()->set_rank(a.ranks(i));
      ev.mutable_exit()->set_exit_code(-1);
      ev.mutable_exit()->set_failure_kind("setup");
      ev.mutable_exit()->set_message(e.what());
      events_.Add(std::move(ev));
    }
    Stop(std::string("a rank could not start: ") + e.what());
  }
}

void Attempt::Loop() {
  while (!group_->done()) {
    for (size_t i : group_->Wait()) OnExit(i);
    if (group_->done()) return;
    bool stop;
    std::string reason;
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop = stop_;
      reason = stop_reason_;
    }
    if (stop && !group_->stopping()) {
      spdlog::warn("{}/attempt_{}: stopping its ranks: {}", s_.assignment.job_id(), s_.assignment.attempt(), reason);
      group_->Stop(milliseconds(s_.grace_ms));  // SIGKILL after the grace period
    }
  }
}

void Attempt::EmitLine(Rank& r, const std::string& line) {
  if (r.log.valid()) {
    const std::string data = line + "\n";
    if (::write(r.log.get(), data.data(), data.size()) < 0) {
      spdlog::warn("rank {}: cannot write its log: {}; the rest of it is lost", r.rank, std::strerror(errno));
      r.log.reset();
    }
  }
  events_.AddLog(r.rank, line);
}

void Attempt::OnExit(size_t index) {
  Rank& r = *ranks_[index];
  const ProcessExit& pe = group_->exit(index);  // its last words are delivered already
  v1::WorkerEvent e;
  auto* x = e.mutable_exit();
  x->set_rank(r.rank);
  std::string what = pe.what;
  std::string reason;
  bool stopping = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    r.exited = true;
    stopping = stop_;
    if (stop_) reason = stop_reason_;
  }
  std::string diagnosis;
  const bool ok = pe.ok();
  if (pe.exit_code >= 0) {
    x->set_exit_code(pe.exit_code);
    // trm-train says what went wrong through its exit code (exit_codes.h).
    if (!ok) x->set_failure_kind(FailureKindOfExitCode(pe.exit_code));
  } else {
    x->set_exit_code(-1);
    x->set_signal(pe.signal);
    x->set_failure_kind("signal");
    // A SIGKILL we did not send while the OOM kill count rose: the kernel's OOM killer.
    if (pe.oom_killed && !stopping) {
      x->set_failure_kind("oom");
      what += " (the kernel's OOM killer: its kill count went from " + std::to_string(pe.oom_kills_before) + " to " +
              std::to_string(pe.oom_kills_after) + " while the rank ran)";
      diagnosis = "out of memory: " + what + "\n";
    }
  }
  if (!ok) {
    std::string tail = diagnosis + (reason.empty() ? "" : "stopped by the worker: " + reason + "\n");
    for (const auto& l : group_->Tail(index)) tail += l + "\n";
    x->set_message(tail);
  }
  spdlog::log(ok ? spdlog::level::info : spdlog::level::warn, "{}/attempt_{}: rank {} (pid {}) {}",
              s_.assignment.job_id(), s_.assignment.attempt(), r.rank, r.pid, what);
  if (ok && r.rank == 0 && hosts_rank0_) {
    // The job succeeds when every rank exited 0, so its final checkpoint must be uploaded
    // before rank 0's exit is reported: the publisher reports it.
    std::lock_guard<std::mutex> lock(mu_);
    final_exit_ = std::move(e);
    cv_.notify_all();
    return;
  }
  events_.Add(std::move(e));
}

void Attempt::DrainAndReap() {
  group_->Drain();
  for (auto& r : ranks_) r->log.reset();
}

// ---------------------------------------------------------------------------- publisher

void Attempt::Publish() {
  tailer_ = std::make_unique<MetricsTailer>(attempt_dir() + "/run/metrics.jsonl");
  while (true) {
    bool stop, done;
    std::optional<v1::WorkerEvent> final_exit;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait_for(lock, kPublishTick, [&] { return stop_ || final_exit_ || ranks_done_; });
      stop = stop_;
      done = ranks_done_;
      final_exit.swap(final_exit_);
    }
    DrainMetrics();
    if (stop) {
      // The attempt is over for the coordinator: no more uploads; a clean exit is still news.
      if (final_exit) events_.Add(std::move(*final_exit));
      return;
    }
    const bool last = final_exit.has_value() || done;
    if (!UploadNew(last)) {  // stopped while retrying
      if (final_exit) events_.Add(std::move(*final_exit));
      return;
    }
    if (final_exit) {
      DrainMetrics();
      events_.Add(std::move(*final_exit));
      spdlog::info("{}/attempt_{}: rank 0 finished; every checkpoint uploaded", s_.assignment.job_id(),
                   s_.assignment.attempt());
    }
    if (done) return;
  }
}

void Attempt::DrainMetrics() {
  for (auto& m : tailer_->Poll()) {
    if (!m.eval) {
      last_step_ = m.step;
      auto get = [&](const char* k) {
        auto it = m.values.find(k);
        return it == m.values.end() ? 0.0 : it->second;
      };
      metrics_->SetStep(s_.assignment.job_id(), 0, static_cast<double>(m.step), get("step_s"), get("allreduce_s"));
    }
    v1::WorkerEvent e;
    auto* sm = e.mutable_metrics();
    sm->set_step(m.step);
    sm->set_total_steps(m.total_steps);
    sm->set_eval(m.eval);
    for (const auto& [k, v] : m.values) (*sm->mutable_values())[k] = v;
    events_.Add(std::move(e));
  }
}

bool Attempt::UploadNew(bool until_done) {
  (void)until_done;  // every found checkpoint is retried until uploaded or stopped either way
  for (const auto& [step, dir] : ListCheckpoints(attempt_dir() + "/run")) {
    if (step <= uploaded_step_) continue;
    if (!UploadOne(step, dir)) return false;
    uploaded_step_ = step;
  }
  return true;
}

bool Attempt::UploadOne(int64_t step, const std::string& dir) {
  const std::string name = "step_" + std::to_string(step);
  milliseconds backoff{500};
  while (true) {
    if (!fs::exists(dir)) {
      spdlog::warn("{}: checkpoint {} was removed (retention) before it was uploaded", s_.assignment.job_id(), name);
      return true;
    }
    try {
      DrainMetrics();  // the step's metrics line precedes its checkpoint
      v1::CheckpointUploadHeader h;
      h.set_worker_id(s_.worker_id);
      h.set_job_id(s_.assignment.job_id());
      h.set_attempt(s_.assignment.attempt());
      *h.mutable_manifest() = rpc::BuildManifest(dir, name);
      auto* info = h.mutable_info();
      info->set_name(name);
      info->set_step(step);
      info->set_size_bytes(h.manifest().total_bytes());
      info->set_content_sha256(h.manifest().content_sha256());
      info->set_created_unix_ms(NowUnixMs());
      for (const auto& [k, v] : tailer_->ValuesForCheckpoint(step)) (*info->mutable_metrics())[k] = v;
      client_->UploadCheckpoint(dir, h);
      spdlog::info("{}: uploaded checkpoint {} ({} bytes)", s_.assignment.job_id(), name, h.manifest().total_bytes());
      return true;
    } catch (const std::exception& e) {
      if (!fs::exists(dir)) continue;  // removed while we read it: reported above
      spdlog::warn("{}: upload of {} failed: {}; retrying in {} ms", s_.assignment.job_id(), name, e.what(),
                   backoff.count());
    }
    if (WaitStop(backoff)) return false;
    backoff = std::min(backoff * 2, milliseconds(s_.upload_retry_max_ms));
  }
}

}  // namespace trm::agent
