// The restart loop: one generation after another until one succeeds, restarts run out, or the
// launcher is told to stop.
#include "trm/launch/launcher.h"

#include <fcntl.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>

#include "failure.h"
#include "generation.h"
#include "program_path.h"
#include "rendezvous.h"
#include "signal_watcher.h"
#include "trm/common/error.h"

extern char** environ;

namespace trm::launch {
namespace {

// The variables each rank gets (docs/launch.md); inherited values of these are replaced.
const char* const kRankVariables[] = {"RANK",         "LOCAL_RANK",        "WORLD_SIZE",
                                      "LOCAL_WORLD_SIZE", "GROUP_RANK",    "GROUP_WORLD_SIZE",
                                      "MASTER_ADDR",  "MASTER_PORT",       "TRM_RESTART_COUNT",
                                      "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT",
                                      "TORCHELASTIC_MAX_RESTARTS"};

// A launcher started with fd 0, 1 or 2 closed would hand those numbers to its pipes, and the
// ranks' dup2 onto 0-2 would then clobber them.
void EnsureStandardFds() {
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) < 0 && errno == EBADF) {
      const int null = ::open("/dev/null", O_RDWR);
      if (null >= 0 && null != fd) {
        ::dup2(null, fd);
        ::close(null);
      }
    }
  }
}

std::map<std::string, std::string> InheritedEnvironment(const LaunchOptions& o) {
  std::map<std::string, std::string> env;
  for (char** e = environ; e && *e; ++e) {
    const std::string kv = *e;
    const auto eq = kv.find('=');
    if (eq == std::string::npos) continue;
    env[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  for (const char* k : kRankVariables) env.erase(k);
  // As torchrun: several ranks each using every core would oversubscribe the machine.
  if (o.nproc_per_node > 1 && env.count("OMP_NUM_THREADS") == 0) {
    spdlog::warn("setting OMP_NUM_THREADS=1 for each rank so {} ranks do not oversubscribe the CPU; "
                 "set it yourself to tune",
                 o.nproc_per_node);
    env["OMP_NUM_THREADS"] = "1";
  }
  return env;
}

GenerationPlan MakePlan(const LaunchOptions& o, const std::string& path, const std::map<std::string, std::string>& base,
                        const GenerationInfo& info, const std::string& master_addr) {
  const int generation = info.generation, nodes = static_cast<int>(info.members.size());
  GenerationPlan plan;
  plan.generation = generation;
  plan.node_rank = o.node_rank;
  plan.grace = std::chrono::milliseconds(static_cast<int64_t>(o.grace_period_s * 1000));
  std::string attempt_dir;
  if (!o.log_dir.empty()) {
    attempt_dir = o.log_dir + "/attempt_" + std::to_string(generation);
    std::error_code ec;
    std::filesystem::create_directories(attempt_dir, ec);
    if (ec) FileError("--log-dir: cannot create " + attempt_dir, ec);
  }
  for (int local = 0; local < o.nproc_per_node; ++local) {
    RankPlan r;
    r.local_rank = local;
    // Elastic: the ranks are numbered over this generation's members, so they stay dense.
    r.global_rank = info.group_rank * o.nproc_per_node + local;
    std::map<std::string, std::string> env = base;
    env["RANK"] = std::to_string(r.global_rank);
    env["LOCAL_RANK"] = std::to_string(local);
    env["WORLD_SIZE"] = std::to_string(nodes * o.nproc_per_node);
    env["LOCAL_WORLD_SIZE"] = std::to_string(o.nproc_per_node);
    env["GROUP_RANK"] = std::to_string(info.group_rank);
    env["GROUP_WORLD_SIZE"] = std::to_string(nodes);
    env["MASTER_ADDR"] = master_addr;
    env["MASTER_PORT"] = std::to_string(info.master_port);
    env["TRM_RESTART_COUNT"] = std::to_string(generation);
    env["TORCHELASTIC_RUN_ID"] = o.rdzv_id;
    env["TORCHELASTIC_RESTART_COUNT"] = std::to_string(generation);
    env["TORCHELASTIC_MAX_RESTARTS"] = std::to_string(o.max_restarts);
    r.spawn.path = path;
    r.spawn.argv.push_back(o.program);
    r.spawn.argv.insert(r.spawn.argv.end(), o.args.begin(), o.args.end());
    for (const auto& [k, v] : env) r.spawn.env.push_back(k + "=" + v);
    if (!attempt_dir.empty()) r.output.log_path = attempt_dir + "/rank_" + std::to_string(r.global_rank) + ".log";
    // With --log-dir the console stays quiet unless --tee; without it the console is the log.
    r.output.console = o.log_dir.empty() || o.tee;
    if (o.tee) r.output.prefix = "[rank " + std::to_string(r.global_rank) + "] ";
    plan.ranks.push_back(std::move(r));
  }
  return plan;
}

}  // namespace

LaunchResult RunLaunch(const LaunchOptions& o) {
  EnsureStandardFds();
  const std::string path = ResolveProgram(o.program);
  if (!o.log_dir.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(o.log_dir, ec);
    if (ec) FileError("--log-dir: cannot create " + o.log_dir, ec);
  }
  const auto base_env = InheritedEnvironment(o);
  // Joining may wait up to --rdzv-timeout-s; until ranks exist, SIGINT may simply end us.
  std::unique_ptr<Rendezvous> rdzv = o.nnodes > 1 ? JoinStoreRendezvous(o) : MakeLocalRendezvous(o);
  SignalWatcher signals;

  LaunchResult result;
  // This launcher was told to stop: tell the other nodes (best effort) and leave.
  auto stopped = [&](int generation) {
    const int sig = signals.last_termination_signal();
    Failure f;
    f.generation = generation;
    f.node_rank = o.node_rank;
    f.signal = sig;
    f.what = "the launcher of node " + std::to_string(o.node_rank) + " got " + SignalName(sig);
    f.abort = true;
    rdzv->ReportFailure(f);
    result.failure = f;
    result.exit_code = 128 + sig;
    return result;
  };

  int restarts = 0;  // failures restarted from (a node joining an elastic run is not one)
  for (int from = 0;;) {
    const auto any_signal = [&] { return signals.termination_count() > 0; };
    GenerationInfo info;
    try {
      info = rdzv->StartGeneration(from, restarts, any_signal);
    } catch (const Error& e) {
      if (e.code() != Code::kCancelled) throw;
      if (rdzv->in_run()) return stopped(from);
      // A late node still waiting to be taken in stops only itself.
      result.exit_code = 128 + signals.last_termination_signal();
      return result;
    }
    if (info.run_over) {  // joined an elastic run as it ended: its verdict is ours
      spdlog::warn("the run ended ({}) before an attempt included node {}", info.run_succeeded ? "succeeded" : "failed",
                   o.node_rank);
      rdzv->Finish([] { return false; }, info.run_succeeded);
      result.exit_code = info.run_succeeded ? 0 : 1;
      return result;
    }
    restarts = result.restarts = info.restarts;  // node 0's count: a late node adopts it
    const int g = info.generation;
    from = g + 1;
    ++result.generations;
    const GenerationPlan plan = MakePlan(o, path, base_env, info, rdzv->master_addr());
    if (o.elastic() && g > 0)
      spdlog::warn("attempt {}: {} of {}..{} nodes, ranks {}-{} of {} here", g + 1, info.members.size(), o.min_nnodes,
                   o.nnodes, plan.ranks.front().global_rank, plan.ranks.back().global_rank,
                   info.members.size() * static_cast<size_t>(o.nproc_per_node));
    spdlog::debug("generation {}: starting {} rank(s) with MASTER_ADDR={} MASTER_PORT={}", g, plan.ranks.size(),
                  rdzv->master_addr(), info.master_port);
    const GenerationResult gen = RunGeneration(plan, *rdzv, signals);

    // A new termination signal during the barrier means: stop waiting for the other nodes.
    const int signals_seen = signals.termination_count();
    GenerationEnd end;
    try {
      end = rdzv->EndGeneration(g, [&] { return signals.termination_count() > signals_seen; });
    } catch (const Error& e) {
      if (e.code() == Code::kCancelled) return stopped(g);
      throw;
    }
    if (gen.failed && !end.failure) {  // defensive: our own failure got lost on the way
      Failure f;
      f.generation = g;
      f.node_rank = o.node_rank;
      f.what = "generation failed";
      end.failure = f;
    }
    const auto give_up = [&] { return signals.termination_count() > signals_seen; };
    if (!end.failure) {
      rdzv->Finish(give_up, true);
      result.exit_code = 0;
      result.failure.reset();
      return result;
    }
    result.failure = end.failure;
    if (end.abort) result.failure->abort = true;  // reported as "not restarted"
    if (gen.signal != 0) {
      rdzv->Finish(give_up, false);
      result.exit_code = 128 + gen.signal;
      return result;
    }
    const Failure& f = *end.failure;
    if (f.resize && !end.abort) {
      spdlog::warn("attempt {} stopped: {}; restarting every rank with it (not counted as a restart)", g + 1, f.what);
      continue;
    }
    if (end.abort || restarts >= o.max_restarts) {
      rdzv->Finish(give_up, false);
      result.exit_code = 1;
      return result;
    }
    result.restarts = ++restarts;
    spdlog::warn("attempt {} failed ({}{}); restarting every rank (restart {} of {})", g + 1,
                 f.global_rank >= 0 ? "rank " + std::to_string(f.global_rank) + " on node " + std::to_string(f.node_rank) + " "
                                    : std::string(),
                 f.what, restarts, o.max_restarts);
  }
}

std::string DescribeFailure(const LaunchResult& result, const LaunchOptions& o) {
  if (!result.failure) return "the run failed (exit status " + std::to_string(result.exit_code) + ")";
  const Failure& f = *result.failure;
  std::string s;
  if (f.global_rank >= 0) {
    s = "rank " + std::to_string(f.global_rank) + " (local rank " + std::to_string(f.local_rank) + " on node " +
        std::to_string(f.node_rank) + ") failed first: " + f.what;
  } else {
    s = f.what;
  }
  if (result.generations == result.restarts + 1) {
    s += " (attempt " + std::to_string(result.generations) + " of " + std::to_string(o.max_restarts + 1);
  } else {  // elastic: some attempts ended because a node joined
    s += " (attempt " + std::to_string(result.generations) + ", restart " + std::to_string(result.restarts) + " of " +
         std::to_string(o.max_restarts);
  }
  s += f.abort || result.exit_code > 128 ? ", not restarted)" : ": no restart left, --max-restarts " +
                                                                   std::to_string(o.max_restarts) + ")";
  if (f.global_rank < 0) return s;
  if (!f.log_path.empty()) s += "\nlog: " + f.log_path;
  if (f.log_tail.empty()) {
    s += "\nrank " + std::to_string(f.global_rank) + " printed nothing";
  } else {
    s += "\nlast " + std::to_string(f.log_tail.size()) + " line(s) of rank " + std::to_string(f.global_rank) +
         "'s output:";
    for (const auto& line : f.log_tail) s += "\n  | " + line;
  }
  return s;
}

}  // namespace trm::launch
