// Helpers for the launcher tests: run trm-launch as a real process with a deadline, read what
// the test child recorded, and check that no process of a run is left.
#pragma once

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

namespace trm::launch::testing {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

inline std::string BinDir() { return TRM_BIN_DIR; }

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "trm_launch_XXXXXX").string();
    if (!::mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  std::string operator/(const std::string& rel) const { return (path_ / rel).string(); }

 private:
  fs::path path_;
};

inline std::string ReadText(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// KEY=VALUE lines of a file the test child wrote (--out).
inline std::map<std::string, std::string> ReadEnvFile(const fs::path& p) {
  std::map<std::string, std::string> env;
  std::istringstream in(ReadText(p));
  std::string line;
  while (std::getline(in, line)) {
    const auto eq = line.find('=');
    if (eq != std::string::npos) env[line.substr(0, eq)] = line.substr(eq + 1);
  }
  return env;
}

inline int FreePort() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

// Alive and not a zombie (this container's init may not reap orphans).
inline bool IsAlive(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  const std::string stat = ReadText("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() || stat[close + 2] != 'Z';
}

// The pids the test child recorded under DIR/pids (ranks and their helpers).
inline std::vector<pid_t> RecordedPids(const fs::path& out_dir) {
  std::vector<pid_t> pids;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(out_dir / "pids", ec)) pids.push_back(std::stoi(e.path().filename()));
  return pids;
}

// Recorded processes still alive after `grace` (SIGKILL is delivered asynchronously: give the
// kernel a moment), SIGKILLed so a failing test leaves nothing behind either.
inline std::vector<pid_t> Survivors(const fs::path& out_dir, std::chrono::milliseconds grace = std::chrono::milliseconds(1000)) {
  const auto until = Clock::now() + grace;
  std::vector<pid_t> alive;
  do {
    alive.clear();
    for (pid_t p : RecordedPids(out_dir)) {
      if (IsAlive(p)) alive.push_back(p);
    }
    if (alive.empty()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  } while (Clock::now() < until);
  for (pid_t p : alive) ::kill(p, SIGKILL);
  return alive;
}

struct Outcome {
  int exit_code = -1;  // 128+N when killed by signal N
  std::string out, err;
  double seconds = 0;
  bool timed_out = false;
};

// A running trm-launch, its stdout/stderr captured in files.
class Launch {
 public:
  Launch(const std::vector<std::string>& args, const TempDir& tmp, const std::string& tag = "launch",
         const std::vector<std::string>& unset_env = {"OMP_NUM_THREADS"})
      : out_(tmp / (tag + ".out")), err_(tmp / (tag + ".err")), start_(Clock::now()) {
    std::vector<std::string> argv{BinDir() + "/trm-launch"};
    argv.insert(argv.end(), args.begin(), args.end());
    std::vector<std::string> env;
    for (char** e = environ; *e; ++e) {
      const std::string kv = *e;
      bool drop = false;
      for (const auto& k : unset_env) drop = drop || kv.rfind(k + "=", 0) == 0;
      if (!drop) env.push_back(kv);
    }
    std::vector<char*> cargv, cenv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    for (auto& e : env) cenv.push_back(e.data());
    cenv.push_back(nullptr);
    pid_ = ::fork();
    if (pid_ == 0) {
      const int o = ::open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      const int r = ::open(err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(o, 1);
      ::dup2(r, 2);
      ::execve(cargv[0], cargv.data(), cenv.data());
      ::_exit(127);
    }
  }
  ~Launch() {
    if (pid_ > 0 && !reaped_) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  pid_t pid() const { return pid_; }
  void Signal(int sig) const { ::kill(pid_, sig); }

  // Waits at most `limit`; a launcher still running then is SIGKILLed and reported timed out.
  Outcome Wait(std::chrono::milliseconds limit = std::chrono::milliseconds(30000)) {
    Outcome o;
    int status = 0;
    while (true) {
      const pid_t r = ::waitpid(pid_, &status, WNOHANG);
      if (r == pid_) break;
      if (Clock::now() - start_ > limit) {
        o.timed_out = true;
        ::kill(pid_, SIGKILL);
        ::waitpid(pid_, &status, 0);
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    reaped_ = true;
    o.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    o.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    o.out = ReadText(out_);
    o.err = ReadText(err_);
    return o;
  }

 private:
  std::string out_, err_;
  Clock::time_point start_;
  pid_t pid_ = -1;
  bool reaped_ = false;
};

// Runs trm-launch to completion.
inline Outcome RunLaunch(const std::vector<std::string>& args, const TempDir& tmp,
                         std::chrono::milliseconds limit = std::chrono::milliseconds(30000)) {
  return Launch(args, tmp).Wait(limit);
}

// Waits (bounded) until `path` exists: the test child writes its env file at start-up.
inline bool WaitForFile(const fs::path& path, std::chrono::milliseconds limit = std::chrono::milliseconds(10000)) {
  const auto until = Clock::now() + limit;
  while (!fs::exists(path)) {
    if (Clock::now() > until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return true;
}

}  // namespace trm::launch::testing
