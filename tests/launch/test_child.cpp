// trm_launch_test_child [OPTIONS]: the PROGRAM of the launcher tests. It records what it got and
// can fail like a rank does:
//   --out DIR            write DIR/env_rank<RANK>_attempt<TRM_RESTART_COUNT>.txt (KEY=VALUE lines)
//                        and a marker DIR/pids/<pid> for every process it starts
//   --lines N            print N lines "line I of rank R" on stdout
//   --stderr TEXT        print TEXT on stderr
//   --sleep-ms N         then sleep N ms and exit 0
//   --restart-sleep-ms N ... N ms instead when TRM_RESTART_COUNT > 0
//   --fail-rank R        only rank R fails (default: none; -1: every rank) ...
//   --fail-after-ms N    ... after N ms (instead of --sleep-ms) ...
//   --fail-exit N        ... by exiting with N (default 3) ...
//   --fail-signal NAME   ... or by raising KILL / SEGV / ABRT ...
//   --fail-first-attempt ... and only while TRM_RESTART_COUNT is 0
//   --ignore-sigterm     SIGTERM does nothing (tests the SIGKILL escalation)
//   --grandchild         fork a helper that sleeps 60 s in the rank's process group
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <string>

namespace {

const char* Env(const char* k) {
  const char* v = std::getenv(k);
  return v ? v : "";
}

void SleepMs(long ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0) {
  }
}

void WriteFile(const std::string& path, const std::string& text) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (!f) {
    std::fprintf(stderr, "test_child: cannot write %s\n", path.c_str());
    std::exit(100);
  }
  std::fputs(text.c_str(), f);
  std::fclose(f);
}

void Marker(const std::string& out, const std::string& role) {
  if (out.empty()) return;
  WriteFile(out + "/pids/" + std::to_string(::getpid()), role + "\n");
}

}  // namespace

int main(int argc, char** argv) {
  std::string out, err_text, fail_signal;
  long lines = 0, sleep_ms = 0, restart_sleep_ms = -1, fail_after_ms = 0, fail_exit = 3, fail_rank = -2;
  bool first_attempt_only = false, ignore_term = false, grandchild = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "test_child: %s needs a value\n", a.c_str());
        std::exit(100);
      }
      return argv[++i];
    };
    if (a == "--out") out = next();
    else if (a == "--lines") lines = std::stol(next());
    else if (a == "--stderr") err_text = next();
    else if (a == "--sleep-ms") sleep_ms = std::stol(next());
    else if (a == "--restart-sleep-ms") restart_sleep_ms = std::stol(next());
    else if (a == "--fail-rank") fail_rank = std::stol(next());
    else if (a == "--fail-after-ms") fail_after_ms = std::stol(next());
    else if (a == "--fail-exit") fail_exit = std::stol(next());
    else if (a == "--fail-signal") fail_signal = next();
    else if (a == "--fail-first-attempt") first_attempt_only = true;
    else if (a == "--ignore-sigterm") ignore_term = true;
    else if (a == "--grandchild") grandchild = true;
    else {
      std::fprintf(stderr, "test_child: unknown option %s\n", a.c_str());
      return 100;
    }
  }
  const long rank = std::atol(Env("RANK"));
  const long attempt = std::atol(Env("TRM_RESTART_COUNT"));
  if (ignore_term) ::signal(SIGTERM, SIG_IGN);
  if (!out.empty()) {
    ::mkdir((out + "/pids").c_str(), 0755);
    Marker(out, "rank " + std::to_string(rank));
    std::string env;
    for (const char* k : {"RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE",
                          "MASTER_ADDR", "MASTER_PORT", "TRM_RESTART_COUNT", "TORCHELASTIC_RUN_ID",
                          "OMP_NUM_THREADS"}) {
      if (std::getenv(k)) env += std::string(k) + "=" + Env(k) + "\n";
    }
    WriteFile(out + "/env_rank" + std::to_string(rank) + "_attempt" + std::to_string(attempt) + ".txt", env);
  }
  if (grandchild) {
    const pid_t pid = ::fork();
    if (pid == 0) {
      Marker(out, "grandchild of rank " + std::to_string(rank));
      SleepMs(60000);
      ::_exit(0);
    }
  }
  for (long i = 0; i < lines; ++i) std::printf("line %ld of rank %ld\n", i, rank);
  std::fflush(stdout);
  if (!err_text.empty()) std::fprintf(stderr, "%s\n", err_text.c_str());

  const bool fails = (fail_rank == -1 || fail_rank == rank) && (!first_attempt_only || attempt == 0);
  if (!fails) {
    SleepMs(attempt > 0 && restart_sleep_ms >= 0 ? restart_sleep_ms : sleep_ms);
    return 0;
  }
  SleepMs(fail_after_ms);
  std::fprintf(stderr, "rank %ld fails now (attempt %ld)\n", rank, attempt);
  std::fflush(stderr);
  if (fail_signal.empty()) return static_cast<int>(fail_exit);
  const int sig = fail_signal == "KILL" ? SIGKILL : fail_signal == "SEGV" ? SIGSEGV : SIGABRT;
  ::signal(sig, SIG_DFL);
  ::raise(sig);
  return 101;
}
