#include "rank_supervisor.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include <nlohmann/json.hpp>

#include "trm/common/error.h"
#include "trm/common/exit_codes.h"

extern char** environ;

namespace trm::agent {
namespace {

constexpr size_t kTailLines = 20;  // of a failing rank's output, in its exit report

RankGroupOptions GroupOptions() {
  RankGroupOptions o;
  o.output.tail_lines = kTailLines;
  return o;
}

}  // namespace

std::string PhaseFilePath(const std::string& attempt_dir, int rank) {
  return attempt_dir + "/rank_" + std::to_string(rank) + ".phase";
}

RankSupervisor::RankSupervisor(RankLaunch launch, StopSignal* stop, EventBuffer* events,
                               std::function<void(v1::WorkerEvent)> on_rank0_success)
    : l_(std::move(launch)), stop_(stop), events_(events), on_rank0_success_(std::move(on_rank0_success)),
      group_(GroupOptions()) {}

bool RankSupervisor::started() const { return !ranks_.empty(); }

std::vector<RankSupervisor::RankView> RankSupervisor::Ranks() const {
  std::lock_guard<std::mutex> lock(mu_);
  return views_;
}

std::vector<std::string> RankSupervisor::BaseEnvironment() const {
  const std::vector<std::string> ours{"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK",
                                      "MASTER_ADDR", "MASTER_PORT", "TRM_RESTART_COUNT", "CUDA_VISIBLE_DEVICES",
                                      "TRM_PHASE_FILE"};
  std::vector<std::string> base;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv = *e;
    const std::string key = kv.substr(0, kv.find('='));
    if (std::find(ours.begin(), ours.end(), key) == ours.end()) base.push_back(kv);
  }
  return base;
}

SpawnSpec RankSupervisor::SpecFor(int i, const std::vector<std::string>& base) const {
  const v1::Assignment& a = l_.assignment;
  SpawnSpec spec;
  if (!l_.command.empty()) {
    spec.path = l_.command.front();
    spec.argv = l_.command;
  } else {
    spec.path = l_.train_binary;
    spec.argv = {l_.train_binary, "--config-dir", l_.attempt_dir + "/config", "--config-name", "job", "--no-progress"};
    // Quoted: the value is YAML, and a path holding ',' or ']' must stay one path.
    if (!l_.dataset_dir.empty()) spec.argv.push_back("data_paths=[" + nlohmann::json(l_.dataset_dir).dump() + "]");
    spec.argv.push_back("run_dir=" + l_.attempt_dir + "/run");
    if (!l_.checkpoint_dir.empty()) spec.argv.push_back("load_checkpoint=" + l_.checkpoint_dir);
  }
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
  set("TRM_PHASE_FILE", PhaseFilePath(l_.attempt_dir, a.ranks(i)));
  if (l_.device_kind == "cuda" && i < static_cast<int>(l_.slot_devices.size()))
    set("CUDA_VISIBLE_DEVICES", l_.slot_devices[i]);
  return spec;
}

void RankSupervisor::Spawn() {
  const v1::Assignment& a = l_.assignment;
  if (stop_->raised()) ThrowError(Code::kCancelled, "stopped before the ranks started: " + stop_->reason());
  const std::vector<std::string> base = BaseEnvironment();
  try {
    for (int i = 0; i < a.ranks_size(); ++i) {
      auto r = std::make_unique<Rank>();
      r->rank = a.ranks(i);
      const std::string log_path = l_.attempt_dir + "/rank_" + std::to_string(r->rank) + ".log";
      r->log.reset(::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644));
      if (!r->log.valid()) FileError(log_path + ": cannot create", errno);
      Rank* rp = r.get();
      const size_t index = group_.Spawn(SpecFor(i, base), "rank " + std::to_string(r->rank),
                                        [this, rp](OutputStream stream, const std::string& line) {
                                          if (stream == OutputStream::kStdout && l_.on_stdout) l_.on_stdout(line);
                                          EmitLine(*rp, line);
                                        });
      const pid_t pid = group_.pid(index);
      spdlog::info("{}/attempt_{}: started rank {} (pid {})", a.job_id(), a.attempt(), r->rank, pid);
      std::lock_guard<std::mutex> lock(mu_);
      views_.push_back({r->rank, pid, false});
      ranks_.push_back(std::move(r));
    }
  } catch (const Error& e) {
    if (ranks_.empty()) throw;
    // Some ranks run: report the rest, stop those, and let Run() reap them.
    for (int i = static_cast<int>(ranks_.size()); i < a.ranks_size(); ++i) {
      v1::WorkerEvent ev;
      ev.mutable_exit()->set_rank(a.ranks(i));
      ev.mutable_exit()->set_exit_code(-1);
      ev.mutable_exit()->set_failure_kind("setup");
      ev.mutable_exit()->set_message(e.what());
      events_->Add(std::move(ev));
    }
    stop_->Raise(std::string("a rank could not start: ") + e.what());
  }
}

void RankSupervisor::Run() {
  while (!group_.done()) {
    for (size_t i : group_.Wait()) OnExit(i);
    if (group_.done() || group_.stopping() || !stop_->raised()) continue;
    spdlog::warn("{}/attempt_{}: stopping its ranks: {}", l_.assignment.job_id(), l_.assignment.attempt(),
                 stop_->reason());
    const int64_t grace = stop_->grace_ms() >= 0 ? stop_->grace_ms() : l_.grace_ms;
    // A preemption asks trm-train to save and stop (SIGUSR1: every rank agrees at the step's
    // end, whatever the world size); SIGTERM would end a multi-rank run without a checkpoint.
    // Evaluation runs (their own command) just stop.
    const bool save = stop_->drain() && l_.command.empty();
    group_.Stop(std::chrono::milliseconds(grace), save ? SIGUSR1 : SIGTERM);  // SIGKILL after the grace period
  }
  group_.Drain();
  for (auto& r : ranks_) r->log.reset();
}

void RankSupervisor::EmitLine(Rank& r, const std::string& line) {
  if (r.log.valid()) {
    const std::string data = line + "\n";
    if (::write(r.log.get(), data.data(), data.size()) < 0) {
      spdlog::warn("rank {}: cannot write its log: {}; the rest of it is lost", r.rank, std::strerror(errno));
      r.log.reset();
    }
  }
  events_->AddLog(r.rank, line);
}

void RankSupervisor::OnExit(size_t index) {
  const Rank& r = *ranks_[index];
  const ProcessExit& pe = group_.exit(index);  // its last words are delivered already
  pid_t pid;
  {
    std::lock_guard<std::mutex> lock(mu_);
    views_[index].exited = true;
    pid = views_[index].pid;
  }
  const bool stopping = stop_->raised();
  const std::string reason = stopping ? stop_->reason() : "";
  v1::WorkerEvent e;
  auto* x = e.mutable_exit();
  x->set_rank(r.rank);
  std::string what = pe.what, diagnosis;
  if (pe.exit_code >= 0) {
    x->set_exit_code(pe.exit_code);
    // trm-train says what went wrong through its exit code (exit_codes.h).
    if (!pe.ok()) x->set_failure_kind(FailureKindOfExitCode(pe.exit_code));
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
  if (!pe.ok()) {
    std::string tail = diagnosis + (reason.empty() ? "" : "stopped by the worker: " + reason + "\n");
    for (const auto& l : group_.Tail(index)) tail += l + "\n";
    x->set_message(tail);
  }
  spdlog::log(pe.ok() ? spdlog::level::info : spdlog::level::warn, "{}/attempt_{}: rank {} (pid {}) {}",
              l_.assignment.job_id(), l_.assignment.attempt(), r.rank, pid, what);
  if (pe.ok() && r.rank == 0 && on_rank0_success_) {
    on_rank0_success_(std::move(e));
    return;
  }
  if (stop_->drain()) {
    // A preemption: the exits wait until the checkpoint the ranks saved is uploaded (the
    // coordinator requeues the job on the last one, and resumes it from its latest checkpoint).
    std::lock_guard<std::mutex> lock(mu_);
    held_exits_.push_back(std::move(e));
    return;
  }
  events_->Add(std::move(e));
}

}  // namespace trm::agent
