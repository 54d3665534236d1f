// A group of child processes supervised together: the ranks of a run (trm-launch, the worker
// agent) or one service process (trm-coordinator --standalone). This is the mechanism only;
// the callers keep their policy (restarts, rendezvous, event reports) on top of it.
//
// - Spawning: RankProcess (own process group, parent-death signal, environment as given).
// - Output: both pipes of every process read without blocking, split into lines of at most
//   OutputLimits::max_line bytes for a sink, with a bounded tail for failure reports.
// - Stopping: SIGTERM to each process group, SIGKILL after the grace period, and after
//   kill_wait more a process that survives SIGKILL (stuck in the kernel) is given up on. Every
//   wait is bounded, Drain() included.
// - Exits: exit code, signal name, and the kernel's OOM killer (a SIGKILL the group did not send
//   while the OOM kill count rose, trm/common/oom_counter.h).
#pragma once

#include <csignal>
#include <poll.h>
#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "trm/common/rank_process.h"
#include "trm/common/unique_fd.h"

namespace trm {

// "SIGTERM", "SIGKILL", ... ("signal 64" when unnamed).
std::string SignalName(int sig);

// How a process ended.
struct ProcessExit {
  int wait_status = 0;  // as from waitpid
  int exit_code = -1;   // its exit code when it exited, else -1
  int signal = 0;       // the signal that killed it, else 0
  bool core_dumped = false;
  bool signalled = false;  // the group had sent it SIGTERM or SIGKILL before it ended
  // Killed by a SIGKILL the group did not send while the OOM kill count went from
  // oom_kills_before to oom_kills_after: most likely the kernel's OOM killer.
  bool oom_killed = false;
  int64_t oom_kills_before = -1, oom_kills_after = -1;
  std::string what;  // "exited with code 3", "killed by SIGKILL", "killed by SIGSEGV (core dumped)"
  bool ok() const { return exit_code == 0; }
};

// From a waitpid status alone (no OOM classification).
ProcessExit DescribeWaitStatus(int wait_status);

enum class OutputStream { kStdout, kStderr };

// Receives one line of a process's output, without its newline.
using LineSink = std::function<void(OutputStream stream, const std::string& line)>;

struct OutputLimits {
  size_t max_line = 64 * 1024;            // a longer line arrives in pieces of this size
  size_t max_read_per_call = 256 * 1024;  // per stream and wake-up: a chatty process cannot starve the others
  size_t tail_lines = 20;                 // last lines kept (both streams) for a failure report
  size_t tail_line_chars = 1000;          // of each kept line; a cut one ends in "..."
};

// One process's stdout and stderr pipes: read without blocking, split into lines for the sink,
// the last lines kept in a bounded tail. Memory is bounded by the limits whatever the process
// writes. Not thread-safe.
class OutputCapture {
 public:
  // Either fd may be invalid (that stream is closed already). A null sink only keeps the tail.
  OutputCapture(UniqueFd out, UniqueFd err, OutputLimits limits, LineSink sink);

  // A pollfd (POLLIN) for every stream still open.
  void AddPollFds(std::vector<pollfd>& fds) const;
  // Reads what `fd` holds now (at most max_read_per_call) and closes it at EOF. False when
  // `fd` is not one of this capture's open streams.
  bool OnReadable(int fd);
  // Reads what both pipes hold now, without waiting.
  void ReadAvailable();
  // Reads what the pipes hold, delivers partial lines and closes both streams.
  void Close();
  bool open() const { return out_.fd.valid() || err_.fd.valid(); }
  std::vector<std::string> Tail() const { return {tail_.begin(), tail_.end()}; }

 private:
  struct Stream {
    UniqueFd fd;
    OutputStream kind;
    std::string partial;
  };
  void Read(Stream& s);
  void EmitLongPieces(Stream& s);
  void Emit(OutputStream kind, const std::string& line);
  void CloseStream(Stream& s);

  OutputLimits limits_;
  LineSink sink_;
  Stream out_, err_;
  std::deque<std::string> tail_;
};

struct RankGroupOptions {
  std::chrono::milliseconds tick{100};         // the longest Wait()
  std::chrono::milliseconds kill_wait{10000};  // after SIGKILL, before a survivor is given up on
  std::chrono::milliseconds pipe_drain{1000};  // Drain()'s bound on pipes that stay open
  OutputLimits output;
};

// Not thread-safe: one thread spawns, waits and stops, and it must outlive the processes
// (PR_SET_PDEATHSIG follows the forking thread).
class RankGroup {
 public:
  explicit RankGroup(RankGroupOptions options = {});
  // Whatever still runs is SIGKILLed with its group and reaped (bounded, ~RankProcess).
  ~RankGroup();
  RankGroup(const RankGroup&) = delete;
  RankGroup& operator=(const RankGroup&) = delete;

  // Starts one more process and returns its index (0, 1, ...). `name` ("rank 3 (local rank 1,
  // node 0)") is what the group's log lines call it; `sink` gets its output lines. Throws as
  // RankProcess does; processes started before stay in the group.
  size_t Spawn(const SpawnSpec& spec, std::string name, LineSink sink);

  size_t size() const { return procs_.size(); }
  pid_t pid(size_t i) const;
  bool exited(size_t i) const { return procs_[i]->exit_seen; }
  const ProcessExit& exit(size_t i) const { return procs_[i]->exit; }  // once exited(i)
  std::vector<std::string> Tail(size_t i) const { return procs_[i]->output->Tail(); }

  // Waits at most `tick` (less when the SIGKILL of a stop is due) for output, an exit or one of
  // `extra`'s fds (their revents are filled in); delivers output to the sinks, escalates a stop
  // and returns the processes that exited since the last call, each exactly once, after their
  // last output was delivered.
  std::vector<size_t> Wait(std::vector<pollfd>* extra = nullptr);

  // `first_signal` (SIGTERM) to the group of every process still running, SIGKILL `grace` later
  // (from Wait). Returns how many were signalled; does nothing once stopping.
  int Stop(std::chrono::milliseconds grace, int first_signal = SIGTERM);
  // SIGKILL to the group of every process still running, now.
  void Kill();
  bool stopping() const { return stopping_; }
  bool killed() const { return killed_; }
  // Every process exited, or kill_wait passed since SIGKILL (survivors are logged and left).
  bool done() const;

  // Once done(): SIGKILLs what is left in each process group (a process's helpers do not
  // outlive it), reaps, delivers the output still coming for at most pipe_drain (pipes held
  // open by processes that left their group are cut then) and closes the pipes. Idempotent.
  void Drain();

 private:
  struct Proc {
    std::unique_ptr<RankProcess> proc;
    std::unique_ptr<OutputCapture> output;
    std::string name;
    int64_t oom_kills_at_start = -1;
    bool signalled = false;
    bool exit_seen = false;
    ProcessExit exit;
  };
  void Dispatch(const std::vector<pollfd>& fds, size_t first);
  std::vector<size_t> CollectExits();
  void Escalate();
  void SignalRunning(int sig);

  RankGroupOptions opt_;
  std::vector<std::unique_ptr<Proc>> procs_;
  bool stopping_ = false, killed_ = false, abandoned_ = false, drained_ = false;
  std::chrono::milliseconds grace_{0};
  std::chrono::steady_clock::time_point kill_at_{}, killed_at_{};
};

}  // namespace trm
