#include "signal_watcher.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "trm/common/error.h"

namespace trm::launch {
namespace {

// The only global mutable state of the launcher, because a signal handler can reach nothing
// else: where to write the wake-up byte, and what arrived. Owned by the single live
// SignalWatcher (g_active guards that there is one).
std::atomic<int> g_wake_fd{-1};
std::atomic<int> g_term_count{0};
std::atomic<int> g_last_term_signal{0};
std::atomic<bool> g_active{false};
static_assert(std::atomic<int>::is_always_lock_free, "the signal handler needs lock-free atomics");

void OnSignal(int sig) {
  const int saved_errno = errno;
  if (sig != SIGCHLD) {
    g_last_term_signal.store(sig);
    g_term_count.fetch_add(1);
  }
  const int fd = g_wake_fd.load();
  if (fd >= 0) {
    const char byte = 1;
    // Non-blocking: a full pipe already means "wake up".
    [[maybe_unused]] const ssize_t n = ::write(fd, &byte, 1);
  }
  errno = saved_errno;
}

}  // namespace

SignalWatcher::SignalWatcher() {
  if (g_active.exchange(true)) ThrowError(Code::kFailedPrecondition, "only one launcher may run per process");
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    g_active.store(false);
    FileError("pipe2", errno);
  }
  read_.reset(fds[0]);
  write_.reset(fds[1]);
  g_term_count.store(0);
  g_last_term_signal.store(0);
  g_wake_fd.store(write_.get());

  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  ::sigaction(SIGINT, &sa, &old_int_);
  ::sigaction(SIGTERM, &sa, &old_term_);
  ::sigaction(SIGHUP, &sa, &old_hup_);
  ::sigaction(SIGQUIT, &sa, &old_quit_);
  sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
  ::sigaction(SIGCHLD, &sa, &old_chld_);
  struct sigaction ignore {};
  ignore.sa_handler = SIG_IGN;
  sigemptyset(&ignore.sa_mask);
  ::sigaction(SIGPIPE, &ignore, &old_pipe_);
}

SignalWatcher::~SignalWatcher() {
  ::sigaction(SIGINT, &old_int_, nullptr);
  ::sigaction(SIGTERM, &old_term_, nullptr);
  ::sigaction(SIGHUP, &old_hup_, nullptr);
  ::sigaction(SIGQUIT, &old_quit_, nullptr);
  ::sigaction(SIGCHLD, &old_chld_, nullptr);
  ::sigaction(SIGPIPE, &old_pipe_, nullptr);
  g_wake_fd.store(-1);
  g_active.store(false);
}

void SignalWatcher::Drain() {
  char buf[64];
  while (::read(read_.get(), buf, sizeof buf) > 0) {
  }
}

int SignalWatcher::termination_count() const { return g_term_count.load(); }
int SignalWatcher::last_termination_signal() const { return g_last_term_signal.load(); }

}  // namespace trm::launch
