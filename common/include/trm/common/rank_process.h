// A child process (one rank of a run): fork+exec into its own process group, so the launcher can signal the
// rank together with anything it started.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "trm/common/unique_fd.h"

namespace trm {

struct SpawnSpec {
  std::string path;               // resolved executable (ResolveProgram)
  std::vector<std::string> argv;  // argv[0] included
  std::vector<std::string> env;   // complete environment, "KEY=VALUE"
};

// Not thread-safe; owned by the supervision loop. The child:
// - leads a new process group (pgid = pid), so SignalGroup reaches its whole tree (short of
//   processes that leave the group on purpose: setsid / setpgid);
// - gets SIGKILL when the launcher thread that forked it dies (PR_SET_PDEATHSIG), so a
//   SIGKILLed launcher leaves no rank running (its own children are reached only through
//   the process group);
// - reads stdin from /dev/null (a background process group reading the terminal would stop),
//   writes stdout/stderr to the pipes returned by TakeStdout/TakeStderr;
// - starts with default signal dispositions, an empty signal mask and only fds 0-2 open.
class RankProcess {
 public:
  // Throws kFailedPrecondition when fork or exec fails (the exec error is passed back from the
  // child), kIoError when pipes cannot be made.
  explicit RankProcess(const SpawnSpec& spec);
  // If still not reaped: SIGKILLs the group and reaps, so error paths leave nothing behind.
  ~RankProcess();
  RankProcess(const RankProcess&) = delete;
  RankProcess& operator=(const RankProcess&) = delete;

  pid_t pid() const { return pid_; }
  UniqueFd TakeStdout() { return std::move(out_); }
  UniqueFd TakeStderr() { return std::move(err_); }

  // Non-blocking. True once the process exited; the status is kept but the process is not
  // reaped yet, so its pid (= the group id) cannot be reused while we still signal the group.
  bool PollExit();
  bool exited() const { return exited_; }
  int wait_status() const { return status_; }  // as from waitpid, valid once exited()

  // kill(-pgid, sig); nothing after Reap().
  void SignalGroup(int sig);
  // Once exited(): SIGKILLs whatever is left in the group (a rank's helpers do not outlive it),
  // then reaps the leader.
  void Reap();
  bool reaped() const { return reaped_; }

 private:
  pid_t pid_ = -1;
  bool exited_ = false;
  bool reaped_ = false;
  int status_ = 0;
  UniqueFd out_, err_;
};

}  // namespace trm
