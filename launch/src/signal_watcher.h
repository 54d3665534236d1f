// Turns SIGINT, SIGTERM, SIGHUP, SIGQUIT and SIGCHLD into bytes on a pipe, so the supervision
// loop can poll() them together with the ranks' output instead of doing work in a handler.
#pragma once

#include <signal.h>

#include "unique_fd.h"

namespace trm::launch {

// Process-wide by nature: at most one SignalWatcher may exist at a time (the constructor throws
// kFailedPrecondition otherwise). While it exists, SIGINT/SIGTERM/SIGHUP/SIGQUIT no longer kill
// the process (they are counted, and the launcher stops its ranks, as torchrun does), SIGCHLD
// wakes fd(), and SIGPIPE is ignored so a closed console cannot kill the launcher. The
// destructor restores the previous dispositions. Methods are for the owning thread; the
// handler may run on any thread.
class SignalWatcher {
 public:
  SignalWatcher();
  ~SignalWatcher();
  SignalWatcher(const SignalWatcher&) = delete;
  SignalWatcher& operator=(const SignalWatcher&) = delete;

  // Readable whenever a watched signal arrived since the last Drain().
  int fd() const { return read_.get(); }
  void Drain();
  // Termination signals (all but SIGCHLD) received so far, and the latest of them (0 if none).
  int termination_count() const;
  int last_termination_signal() const;

 private:
  UniqueFd read_;
  UniqueFd write_;
  struct sigaction old_int_ {}, old_term_ {}, old_hup_ {}, old_quit_ {}, old_chld_ {}, old_pipe_ {};
};

}  // namespace trm::launch
