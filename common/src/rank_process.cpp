#include "trm/common/rank_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "trm/common/error.h"

namespace trm {
namespace {

// Everything between fork and exec must be async-signal-safe (the launcher has other threads:
// LibTorch's store), so the child only runs this with data prepared by the parent.
struct ChildPlan {
  const char* path;
  char* const* argv;
  char* const* envp;
  int devnull, out_w, err_w, status_w;
  pid_t parent;
  int max_fd;
};

void CloseFrom(int first, int last, int max_fd) {
  if (first > last) return;
  if (::syscall(SYS_close_range, first, last, 0) == 0) return;
  for (int fd = first; fd <= last && fd < max_fd; ++fd) ::close(fd);
}

[[noreturn]] void RunChild(const ChildPlan& p) {
  int err = 0;
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  sigemptyset(&dfl.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGCHLD, SIGPIPE, SIGHUP, SIGQUIT}) ::sigaction(sig, &dfl, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (::setpgid(0, 0) != 0) err = errno;
  if (err == 0 && ::prctl(PR_SET_PDEATHSIG, SIGKILL) != 0) err = errno;
  // The launcher may have died before prctl: then nobody would kill us.
  if (err == 0 && ::getppid() != p.parent) ::_exit(128 + SIGKILL);
  if (err == 0 && (::dup2(p.devnull, 0) < 0 || ::dup2(p.out_w, 1) < 0 || ::dup2(p.err_w, 2) < 0)) err = errno;
  if (err == 0) {
    CloseFrom(3, p.status_w - 1, p.max_fd);
    CloseFrom(p.status_w + 1, ~0U >> 1, p.max_fd);  // status_w itself closes on exec
    ::execve(p.path, p.argv, p.envp);
    err = errno;
  }
  [[maybe_unused]] const ssize_t n = ::write(p.status_w, &err, sizeof err);
  ::_exit(127);
}

void MakePipe(UniqueFd& r, UniqueFd& w) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) FileError("pipe2", errno);
  r.reset(fds[0]);
  w.reset(fds[1]);
}

}  // namespace

RankProcess::RankProcess(const SpawnSpec& spec) {
  std::vector<char*> argv, envp;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  UniqueFd devnull(::open("/dev/null", O_RDONLY | O_CLOEXEC));
  if (!devnull.valid()) FileError("/dev/null", errno);
  UniqueFd out_r, out_w, err_r, err_w, status_r, status_w;
  MakePipe(out_r, out_w);
  MakePipe(err_r, err_w);
  MakePipe(status_r, status_w);
  struct rlimit rl {};
  const int max_fd =
      ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < (1u << 20)
          ? static_cast<int>(rl.rlim_cur)
          : 65536;
  const ChildPlan plan{spec.path.c_str(), argv.data(), envp.data(), devnull.get(), out_w.get(), err_w.get(),
                       status_w.get(), ::getpid(), max_fd};

  const pid_t pid = ::fork();
  if (pid < 0) ThrowError(Code::kFailedPrecondition, std::string("fork: ") + std::strerror(errno));
  if (pid == 0) RunChild(plan);
  pid_ = pid;
  // Also from the parent, so the group exists before we might signal it (whichever runs first).
  ::setpgid(pid, pid);
  out_w.reset();
  err_w.reset();
  status_w.reset();

  // The status pipe closes on a successful exec or carries the child's errno. exec of a resolved
  // local file takes milliseconds; the bound only guards against a wedged filesystem.
  struct pollfd pfd {status_r.get(), POLLIN, 0};
  int ready;
  do ready = ::poll(&pfd, 1, 30000);
  while (ready < 0 && errno == EINTR);
  int child_errno = 0;
  ssize_t n = 0;
  if (ready > 0) {
    do n = ::read(status_r.get(), &child_errno, sizeof child_errno);
    while (n < 0 && errno == EINTR);
  }
  if (ready <= 0 || n > 0) {
    // ~RankProcess does not run for a throwing constructor: clean up here.
    ::kill(-pid_, SIGKILL);
    ::kill(pid_, SIGKILL);
    int st;
    while (::waitpid(pid_, &st, 0) < 0 && errno == EINTR) {
    }
    ThrowError(Code::kFailedPrecondition,
               "cannot start PROGRAM " + spec.path + ": " +
                   (ready <= 0 ? std::string("exec did not complete within 30 s") : std::strerror(child_errno)));
  }
  out_ = std::move(out_r);
  err_ = std::move(err_r);
}

RankProcess::~RankProcess() {
  if (pid_ <= 0 || reaped_) return;
  SignalGroup(SIGKILL);
  ::kill(pid_, SIGKILL);
  // Bounded: a process stuck in the kernel ignores SIGKILL until it leaves; init reaps it then.
  for (int i = 0; i < 2000; ++i) {
    int st;
    const pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_ || (r < 0 && errno != EINTR)) return;
    ::usleep(5000);
  }
}

bool RankProcess::PollExit() {
  if (exited_) return true;
  siginfo_t info {};
  if (::waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0) {
    return false;
  }
  exited_ = true;
  // The same encoding waitpid uses, so WIFEXITED / WTERMSIG apply.
  status_ = info.si_code == CLD_EXITED ? (info.si_status & 0xff) << 8
                                       : (info.si_status & 0x7f) | (info.si_code == CLD_DUMPED ? 0x80 : 0);
  return true;
}

void RankProcess::SignalGroup(int sig) {
  if (pid_ > 0 && !reaped_) ::kill(-pid_, sig);
}

void RankProcess::Reap() {
  if (reaped_ || !exited_) return;
  SignalGroup(SIGKILL);
  int st = 0;
  pid_t r;
  do r = ::waitpid(pid_, &st, 0);  // the leader already exited: returns at once
  while (r < 0 && errno == EINTR);
  if (r == pid_) status_ = st;
  reaped_ = true;
}

}  // namespace trm
