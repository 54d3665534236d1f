// trm-coordinator: the control plane's server. `--standalone` also starts a local trm-worker, so
// one command gives a working service on one machine (the README's main job).
#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/common/rank_group.h"
#include "trm/common/unique_fd.h"
#include "trm/coordinator/server.h"
#include "trm/worker/train_config.h"

namespace fs = std::filesystem;

namespace {

// "data=60,allreduce=30" -> {"data": 60000, "allreduce": 30000}.
void ParseHangBudgets(const std::string& flag, const std::string& text, std::map<std::string, int64_t>* out) {
  static const std::set<std::string> kPhases{"starting", "data", "compute", "allreduce", "checkpoint", "eval"};
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    const size_t eq = item.find('=');
    const std::string phase = item.substr(0, eq);
    if (eq == std::string::npos || !kPhases.count(phase))
      trm::InvalidArgument(flag + " '" + item + "': expected PHASE=SECONDS with PHASE one of starting, data, "
                                                 "compute, allreduce, checkpoint, eval");
    const std::string v = item.substr(eq + 1);
    char* end = nullptr;
    const long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end || n <= 0) trm::InvalidArgument(flag + " '" + item + "': expected a positive number of seconds");
    (*out)[phase] = static_cast<int64_t>(n) * 1000;
  }
}

int Usage() {
  std::fprintf(stderr,
               "usage: trm-coordinator [--listen HOST:PORT] [--data-dir DIR] [--metrics-listen HOST:PORT]\n"
               "                       [--heartbeat-timeout-s S] [--heartbeat-interval-ms MS] [--keep-last K]\n"
               "                       [--hang-timeout-s S (900)] [--start-timeout-s S (1800)]\n"
               "                       [--hang-budget-s PHASE=S[,PHASE=S...]]\n"
               "                       [--keep-best METRIC] [--config-dir DIR] [--port-file FILE]\n"
               "                       [--standalone [--cpu-slots N] [--worker-binary PATH]]\n"
               "                       [--auth-tokens FILE] [--worker-secret-file FILE] [--tls-cert PEM --tls-key PEM\n"
               "                       [--tls-client-ca PEM [--require-worker-cert]]] [--insecure]\n"
               "  --hang-budget-s  longest time a rank may stay in one phase (starting, data, compute,\n"
               "                   allreduce, checkpoint, eval); default: --start-timeout-s for starting,\n"
               "                   max(--hang-timeout-s, 1800) for checkpoint and eval, --hang-timeout-s else\n"
               "  --standalone     also run a local trm-worker (CPU slots) under DATA_DIR/worker\n"
               "  --auth-tokens    'TOKEN ROLE [NAME]' lines (roles read | submit | admin); clients send TRM_TOKEN\n"
               "  --worker-secret-file  the secret workers send (TRM_WORKER_SECRET[_FILE] on the workers)\n"
               "  --insecure       allow plaintext on a non-loopback --listen (development only)\n"
               "  default --listen 127.0.0.1:50051\n");
  return 2;
}

// --standalone's local worker gets this long between SIGTERM and SIGKILL when we stop.
constexpr std::chrono::milliseconds kWorkerGrace{10000};

// The worker's output (both streams) goes to our stderr, line for line.
void ForwardLine(trm::OutputStream, const std::string& line) {
  const std::string data = line + "\n";
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, data.data(), data.size());
}

// The signal (SIGINT / SIGTERM, blocked and read from `sfd`) that arrived, or 0.
int ReadSignal(int sfd) {
  signalfd_siginfo si{};
  return ::read(sfd, &si, sizeof si) == static_cast<ssize_t>(sizeof si) ? static_cast<int>(si.ssi_signo) : 0;
}

}  // namespace

int main(int argc, char** argv) {
  trm::coordinator::ServerOptions opt;
  opt.coordinator.data_dir = "trm-coordinator";
  bool standalone = false;
  int cpu_slots = 2;
  std::string port_file, worker_binary, worker_secret_file, tokens_file;
  bool require_worker_cert = false;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) trm::InvalidArgument(a + " needs a value");
        return argv[++i];
      };
      auto number = [&]() -> long {
        const std::string v = value();
        char* end = nullptr;
        const long n = std::strtol(v.c_str(), &end, 10);
        if (v.empty() || *end || n < 0) trm::InvalidArgument(a + " '" + v + "': expected a non-negative integer");
        return n;
      };
      if (a == "--listen") opt.listen = value();
      else if (a == "--data-dir") opt.coordinator.data_dir = value();
      else if (a == "--metrics-listen") opt.metrics_listen = value();
      else if (a == "--heartbeat-timeout-s") opt.coordinator.heartbeat_timeout_ms = static_cast<int>(number() * 1000);
      else if (a == "--hang-timeout-s") opt.coordinator.hang_timeout_ms = number() * 1000;
      else if (a == "--start-timeout-s") opt.coordinator.start_timeout_ms = number() * 1000;
      else if (a == "--hang-budget-s") ParseHangBudgets(a, value(), &opt.coordinator.phase_budget_ms);
      else if (a == "--heartbeat-interval-ms") opt.coordinator.heartbeat_interval_ms = static_cast<int>(number());
      else if (a == "--keep-last") opt.coordinator.keep_last_checkpoints = static_cast<int>(number());
      else if (a == "--keep-best") opt.coordinator.keep_best_metric = value();
      else if (a == "--config-dir") opt.coordinator.config_dir = value();
      else if (a == "--port-file") port_file = value();
      else if (a == "--standalone") standalone = true;
      else if (a == "--cpu-slots") cpu_slots = static_cast<int>(number());
      else if (a == "--worker-binary") worker_binary = value();
      else if (a == "--auth-tokens") tokens_file = value();
      else if (a == "--worker-secret-file") worker_secret_file = value();
      else if (a == "--tls-cert") opt.tls_cert = value();
      else if (a == "--tls-key") opt.tls_key = value();
      else if (a == "--tls-client-ca") opt.tls_client_ca = value();
      else if (a == "--require-worker-cert") require_worker_cert = true;
      else if (a == "--insecure") opt.insecure = true;
      else if (a == "-h" || a == "--help") return Usage();
      else {
        std::fprintf(stderr, "error: unknown option %s\n", a.c_str());
        return Usage();
      }
    }
    if (!tokens_file.empty()) opt.auth = trm::coordinator::LoadTokenFile(tokens_file);
    if (!worker_secret_file.empty()) {
      std::string secret = trm::ReadFile(worker_secret_file);
      while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
      if (secret.size() < 16) trm::InvalidArgument(worker_secret_file + ": the worker secret needs 16+ characters");
      opt.auth.worker_secret = secret;
    }
    opt.auth.require_worker_cert = require_worker_cert;
    if (require_worker_cert && opt.tls_client_ca.empty()) trm::InvalidArgument("--require-worker-cert needs --tls-client-ca");
    if (opt.coordinator.config_dir.empty()) opt.coordinator.config_dir = trm::worker::DefaultConfigDir();
  } catch (const trm::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return Usage();
  }

  // Signals are taken synchronously by this thread (a signalfd); every other thread (gRPC's
  // included) inherits the mask.
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  const trm::UniqueFd sfd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sfd.valid()) {
    std::fprintf(stderr, "error: signalfd: %s\n", std::strerror(errno));
    return 1;
  }

  try {
    trm::coordinator::CoordinatorServer server(opt);
    if (!port_file.empty()) trm::WriteFileAtomic(port_file, std::to_string(server.port()) + "\n");
    trm::RankGroup worker;  // empty without --standalone
    if (standalone) {
      trm::SpawnSpec spec;
      spec.path = worker_binary.empty() ? trm::ExecutableDir() + "/trm-worker" : worker_binary;
      spec.argv = {spec.path, "--coordinator", "127.0.0.1:" + std::to_string(server.port()), "--cpu-slots",
                   std::to_string(cpu_slots), "--work-dir", (fs::path(opt.coordinator.data_dir) / "worker").string(),
                   "--id", "local"};
      for (char** e = environ; *e; ++e) spec.env.push_back(*e);
      if (!worker_secret_file.empty()) spec.env.push_back("TRM_WORKER_SECRET_FILE=" + worker_secret_file);
      worker.Spawn(spec, "the local worker", ForwardLine);
      spdlog::info("standalone: local worker pid {} with {} CPU slot(s)", worker.pid(0), cpu_slots);
    }
    // Wait for a signal, or for the local worker to die (then the service is useless: exit).
    int sig = 0;
    while (sig == 0) {
      std::vector<pollfd> extra{{sfd.get(), POLLIN, 0}};
      const bool worker_exited = !worker.Wait(&extra).empty();
      if (extra[0].revents) sig = ReadSignal(sfd.get());
      if (worker_exited) {
        spdlog::error("standalone: the local worker exited (status {}); stopping", worker.exit(0).wait_status);
        break;
      }
    }
    if (sig) spdlog::info("signal {}: shutting down", sig);
    // Bounded: SIGTERM, SIGKILL after the grace period, given up on if even that does not end it.
    worker.Stop(kWorkerGrace);
    while (!worker.done()) worker.Wait();
    worker.Drain();
    server.Shutdown();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
