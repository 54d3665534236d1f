// trm-train --config-name NAME [--config-dir DIR] [--resume] [key=value ...]
// Trains as the reference's `pretrain.py --config-name NAME key=value ...` does; under trm-launch
// (or torchrun's environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, LOCAL_RANK) it is one
// rank of a data-parallel run, and TRM_RESTART_COUNT > 0 resumes from the newest checkpoint.
// Alone, SIGINT/SIGTERM stop after the current step with a checkpoint (`--resume` continues
// exactly). As one of several ranks, SIGTERM exits at once: the launcher is stopping the group
// because a peer failed, collectives may never complete, and the last committed checkpoint is
// where the restart resumes.
#include <pthread.h>
#include <signal.h>
#include <spdlog/spdlog.h>

#include <atomic>
#include <memory>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/cuda.h>
#include <unistd.h>

#include <cstdlib>

#include "trm/common/error.h"
#include "trm/common/exit_codes.h"
#include "trm/common/process_env.h"
#include "trm/worker/collective.h"
#include "trm/worker/trainer.h"

namespace {

std::atomic<bool> g_cancel{false};  // set by the signal thread, read by the trainer

// SIGINT, SIGTERM (one rank) and SIGUSR1 ask for a stop; SIGTERM with several ranks ends the
// process at once (a rank alone cannot checkpoint a multi-rank run). The signals are blocked in
// every thread and accepted by one thread in sigwait, so no handler ever runs on a compute
// thread: on the AMX machine a handler's frame pushed onto a thread whose AMX state oneDNN had
// enabled corrupted the heap ("corrupted size vs. prev_size", a rank aborting right after
// SIGUSR1 in e2e_preempt, about one run in three; never with oneDNN capped below AMX). Called
// before any other thread exists: threads inherit the mask.
void WatchStopSignals(int world) {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGINT, SIGTERM, SIGUSR1}) sigaddset(&set, sig);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  std::thread([set, world] {
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (sig == SIGTERM && world > 1) ::_exit(128 + sig);
      g_cancel.store(true);
    }
  }).detach();
}

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoi(v) : fallback;
}

int Usage() {
  std::fprintf(stderr,
               "usage: trm-train --config-name NAME [--config-dir DIR] [--resume] [--progress|--no-progress] "
               "[key=value ...]\n"
               "  e.g. trm-train --config-name cfg_chat data_paths=[data/x] global_batch_size=2 arch.H_cycles=3\n"
               "exit codes: 0 done, 1 error, 2 bad config / data / checkpoint, 3 out of memory, 4 out of disk\n"
               "space, 5 a collective timed out (TRM_COLLECTIVE_TIMEOUT_S), 130 stopped by a signal\n");
  return 2;
}

// LibTorch's allocators throw c10::Error, not std::bad_alloc: "DefaultCPUAllocator: can't
// allocate memory" on the host, "CUDA out of memory" (c10::OutOfMemoryError in 2.x) on a GPU.
bool IsOutOfMemory(const std::string& what) {
  return what.find("can't allocate memory") != std::string::npos || what.find("out of memory") != std::string::npos ||
         what.find("not enough memory") != std::string::npos;
}

// Prints the error; its exit code is kExitOutOfMemory for an allocation failure.
int ReportFailure(const std::string& what) {
  std::fprintf(stderr, "error: %s\n", what.c_str());
  if (!IsOutOfMemory(what)) return trm::kExitError;
  std::fprintf(stderr, "error: out of memory\n");
  return trm::kExitOutOfMemory;
}

// trm-train's exit codes (common/include/trm/common/exit_codes.h) from the error's code.
int ReportError(const trm::Error& e) {
  std::fprintf(stderr, "error: %s\n", e.what());
  switch (e.code()) {
    case trm::Code::kInvalidArgument:
    case trm::Code::kNotFound:
    case trm::Code::kDataLoss: return trm::kExitBadInput;
    case trm::Code::kResourceExhausted:
      std::fprintf(stderr, "error: out of disk space (or over a quota or file size limit)\n");
      return trm::kExitDiskFull;
    case trm::Code::kDeadlineExceeded: return trm::kExitTimeout;
    default: return trm::kExitError;
  }
}

}  // namespace

int main(int argc, char** argv) {
  trm::ConfigureComputeProcess(argc, argv);
  std::string name, dir;
  std::vector<std::string> overrides;
  int progress = -1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const std::string& flag) -> std::string {
      if (a.size() > flag.size() && a.compare(0, flag.size() + 1, flag + "=") == 0) return a.substr(flag.size() + 1);
      if (i + 1 >= argc) {
        std::fprintf(stderr, "error: %s needs a value\n", flag.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--config-name" || a.rfind("--config-name=", 0) == 0) name = value("--config-name");
    else if (a == "--config-dir" || a.rfind("--config-dir=", 0) == 0) dir = value("--config-dir");
    else if (a == "--resume") overrides.push_back("resume=true");
    else if (a == "--progress") progress = 1;
    else if (a == "--no-progress") progress = 0;
    else if (a == "-h" || a == "--help") return Usage();
    else if (a.rfind("--", 0) == 0) {
      std::fprintf(stderr, "error: unknown option %s\n", a.c_str());
      return Usage();
    } else overrides.push_back(a);
  }
  if (name.empty()) return Usage();
  const int world = EnvInt("WORLD_SIZE", 1);
  // A file size limit (ulimit -f) should fail a write with EFBIG, reported as such, not kill us.
  std::signal(SIGXFSZ, SIG_IGN);
  // SIGUSR1: save a checkpoint after the current step and exit 130, whatever the world size: the
  // ranks agree on it in the step's all-reduce (a preemption; any rank's signal stops them all).
  WatchStopSignals(world);
  try {
    if (EnvInt("TRM_RESTART_COUNT", 0) > 0) overrides.push_back("resume=true");
    trm::worker::TrainConfig cfg =
        trm::worker::LoadTrainConfig(dir.empty() ? trm::worker::DefaultConfigDir() : dir, name, overrides);
    // Under torchrun's environment this process is one rank of `world`.
    trm::worker::CollectiveOptions co;
    if (world > 1) co = trm::worker::CollectiveOptionsFromEnv();
    // Before any tensor work: the thread pools, the seed, deterministic algorithms (trainer.h).
    trm::worker::ConfigureTrainingProcess(cfg, co.rank);
    trm::worker::TrainerOptions opt;
    opt.cancel = &g_cancel;
    opt.progress = progress;
    // trm-worker reads it for hang detection (phase_file.h).
    std::unique_ptr<trm::worker::PhaseWriter> phases = trm::worker::PhaseWriterFromEnv();
    if (phases) {
      phases->Enter(trm::worker::Phase::kStarting, 0);
      opt.hooks.on_phase = [w = phases.get()](trm::worker::Phase p, int64_t step) { w->Enter(p, step); };
    }
    std::unique_ptr<trm::worker::Collective> comm;
    if (world > 1) {
      co.cuda = cfg.device == "cuda" || (cfg.device == "auto" && torch::cuda::is_available());
      co.device_index = EnvInt("LOCAL_RANK", 0);
      if (co.rank != 0) spdlog::set_level(spdlog::level::warn);  // rank 0 speaks for the run
      comm = trm::worker::CreateCollective(co);
      opt.collective = comm.get();
      opt.device_index = co.device_index;
      if (co.rank != 0) opt.progress = 0;
    }
    trm::worker::Trainer trainer(std::move(cfg), opt);
    trm::worker::TrainResult r = trainer.Run();
    return r.cancelled ? trm::kExitCancelled : trm::kExitOk;
  } catch (const trm::Error& e) {
    return ReportError(e);
  } catch (const std::filesystem::filesystem_error& e) {
    return ReportError(trm::ToError(e));  // a throwing std::filesystem call: a full disk is still exit 4
  } catch (const c10::Error& e) {
    // Without the C++ backtrace LibTorch appends: one line a user can act on.
    return ReportFailure(e.what_without_backtrace());
  } catch (const std::bad_alloc& e) {
    return ReportFailure(std::string("out of memory: ") + e.what());
  } catch (const std::exception& e) {
    return ReportFailure(e.what());
  }
}
