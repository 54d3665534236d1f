#include "trm/coordinator/service_main.h"

#include "trm/coordinator/backup.h"

#include <poll.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <sstream>

#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/common/rank_group.h"
#include "trm/common/unique_fd.h"
#include "tenancy.h"
#include "trm/coordinator/auth.h"
#include "trm/worker/train_config.h"

extern char** environ;

namespace trm::coordinator {
namespace {

namespace fs = std::filesystem;

// --standalone's local worker gets this long between SIGTERM and SIGKILL when we stop.
constexpr std::chrono::milliseconds kWorkerGrace{10000};

// "data=60,allreduce=30" -> {"data": 60000, "allreduce": 30000}.
void ParseHangBudgets(const std::string& flag, const std::string& text, std::map<std::string, int64_t>* out) {
  static const std::set<std::string> kPhases{"starting", "data", "compute", "allreduce", "checkpoint", "eval"};
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    const size_t eq = item.find('=');
    const std::string phase = item.substr(0, eq);
    if (eq == std::string::npos || !kPhases.count(phase))
      InvalidArgument(flag + " '" + item + "': expected PHASE=SECONDS with PHASE one of starting, data, "
                                           "compute, allreduce, checkpoint, eval");
    const std::string v = item.substr(eq + 1);
    char* end = nullptr;
    const long n = std::strtol(v.c_str(), &end, 10);
    if (v.empty() || *end || n <= 0) InvalidArgument(flag + " '" + item + "': expected a positive number of seconds");
    (*out)[phase] = static_cast<int64_t>(n) * 1000;
  }
}

// The flags that take a value, each applied to the command line.
void ApplyFlag(const std::string& a, const std::string& v, long n, CommandLine* cl) {
  ServerOptions& opt = cl->server;
  CoordinatorOptions& c = opt.coordinator;
  if (a == "--listen") opt.listen = v;
  else if (a == "--data-dir") c.data_dir = v;
  else if (a == "--metrics-listen") opt.metrics_listen = v;
  else if (a == "--http-listen") opt.http_listen = v;
  else if (a == "--heartbeat-timeout-s") c.heartbeat_timeout_ms = static_cast<int>(n * 1000);
  else if (a == "--hang-timeout-s") c.hang_timeout_ms = n * 1000;
  else if (a == "--start-timeout-s") c.start_timeout_ms = n * 1000;
  else if (a == "--hang-budget-s") ParseHangBudgets(a, v, &c.phase_budget_ms);
  else if (a == "--heartbeat-interval-ms") c.heartbeat_interval_ms = static_cast<int>(n);
  else if (a == "--keep-last") c.keep_last_checkpoints = static_cast<int>(n);
  else if (a == "--keep-best") c.keep_best_metric = v;
  else if (a == "--config-dir") c.config_dir = v;
  else if (a == "--port-file") cl->port_file = v;
  else if (a == "--restore") cl->restore = v;
  else if (a == "--metrics-max-points") {
    if (n != 0 && n < 1000) InvalidArgument(a + " '" + v + "': expected 0 (keep every point) or at least 1000");
    c.metrics_max_points = n;
  } else if (a == "--job-metrics-linger-s") {
    c.job_metrics_linger_ms = n * 1000;
  } else if (a == "--max-log-lines") {
    if (n != 0 && n < 1000) InvalidArgument(a + " '" + v + "': expected 0 (keep every line) or at least 1000");
    c.max_log_lines = n;
  }
  else if (a == "--cpu-slots") cl->cpu_slots = static_cast<int>(n);
  else if (a == "--worker-binary") cl->worker_binary = v;
  else if (a == "--auth-tokens") opt.auth = LoadTokenFile(v);
  else if (a == "--worker-secret-file") cl->worker_secret_file = v;
  else if (a == "--tls-cert") opt.tls_cert = v;
  else if (a == "--tls-key") opt.tls_key = v;
  else if (a == "--tls-client-ca") opt.tls_client_ca = v;
  else if (a == "--quota-slots") {
    const QuotaPolicy q = ParseQuotaSlots(a, v);
    c.quota_slots = q.per_user;
    c.default_quota_slots = q.default_slots;
  } else if (a == "--max-wait-s") {
    c.max_wait_ms = n * 1000;
  } else if (a == "--preempt-grace-s") {
    c.preempt_grace_ms = n * 1000;
  } else if (a == "--elastic-grow-after-s") {
    c.elastic_grow_after_ms = n * 1000;
  } else if (a == "--audit-retention-days") {
    if (n < 1) InvalidArgument(a + " '" + v + "': expected at least 1 day");
    c.audit_retention_ms = n * 24 * 3600 * 1000;
  }
}

bool TakesNumber(const std::string& a) {
  static const std::set<std::string> kNumeric{"--heartbeat-timeout-s", "--hang-timeout-s", "--start-timeout-s",
                                              "--heartbeat-interval-ms", "--keep-last", "--cpu-slots",
                                              "--audit-retention-days", "--max-wait-s", "--preempt-grace-s",
                                              "--elastic-grow-after-s", "--metrics-max-points",
                                              "--max-log-lines", "--job-metrics-linger-s"};
  return kNumeric.count(a) > 0;
}

bool TakesValue(const std::string& a) {
  static const std::set<std::string> kValued{"--listen",      "--data-dir",      "--metrics-listen", "--hang-budget-s",
                                             "--keep-best",   "--config-dir",    "--port-file",      "--worker-binary",
                                             "--auth-tokens", "--worker-secret-file", "--tls-cert",  "--tls-key",
                                             "--tls-client-ca", "--quota-slots", "--http-listen", "--restore"};
  return kValued.count(a) > 0 || TakesNumber(a);
}

long NonNegative(const std::string& flag, const std::string& v) {
  char* end = nullptr;
  const long n = std::strtol(v.c_str(), &end, 10);
  if (v.empty() || *end || n < 0) InvalidArgument(flag + " '" + v + "': expected a non-negative integer");
  return n;
}

std::string ReadWorkerSecret(const std::string& path) {
  std::string secret = ReadFile(path);
  while (!secret.empty() && (secret.back() == '\n' || secret.back() == '\r')) secret.pop_back();
  if (secret.size() < 16) InvalidArgument(path + ": the worker secret needs 16+ characters");
  return secret;
}

// The worker's output (both streams) goes to our stderr, line for line.
void ForwardLine(OutputStream, const std::string& line) {
  const std::string data = line + "\n";
  [[maybe_unused]] const ssize_t n = ::write(STDERR_FILENO, data.data(), data.size());
}

// The signal (SIGINT / SIGTERM, blocked and read from `sfd`) that arrived, or 0.
int ReadSignal(int sfd) {
  signalfd_siginfo si{};
  return ::read(sfd, &si, sizeof si) == static_cast<ssize_t>(sizeof si) ? static_cast<int>(si.ssi_signo) : 0;
}

void SpawnLocalWorker(const CommandLine& cl, int port, RankGroup* worker) {
  SpawnSpec spec;
  spec.path = cl.worker_binary.empty() ? ExecutableDir() + "/trm-worker" : cl.worker_binary;
  spec.argv = {spec.path, "--coordinator", "127.0.0.1:" + std::to_string(port), "--cpu-slots",
               std::to_string(cl.cpu_slots), "--work-dir", (fs::path(cl.server.coordinator.data_dir) / "worker").string(),
               "--id", "local"};
  for (char** e = environ; *e; ++e) spec.env.push_back(*e);
  if (!cl.worker_secret_file.empty()) spec.env.push_back("TRM_WORKER_SECRET_FILE=" + cl.worker_secret_file);
  worker->Spawn(spec, "the local worker", ForwardLine);
  spdlog::info("standalone: local worker pid {} with {} CPU slot(s)", worker->pid(0), cl.cpu_slots);
}

}  // namespace

CommandLine ParseCommandLine(const std::vector<std::string>& args) {
  CommandLine cl;
  cl.server.coordinator.data_dir = "trm-coordinator";
  bool require_worker_cert = false, http_given = false;
  for (size_t i = 0; i < args.size(); ++i) {
    http_given = http_given || args[i] == "--http-listen";
    const std::string& a = args[i];
    if (a == "-h" || a == "--help") cl.help = true;
    else if (a == "--standalone") cl.standalone = true;
    else if (a == "--require-worker-cert") require_worker_cert = true;
    else if (a == "--insecure") cl.server.insecure = true;
    else if (a == "--private") cl.server.coordinator.private_reads = true;
    else if (TakesValue(a)) {
      if (i + 1 >= args.size()) InvalidArgument(a + " needs a value");
      const std::string& v = args[++i];
      ApplyFlag(a, v, TakesNumber(a) ? NonNegative(a, v) : 0, &cl);
    } else {
      InvalidArgument("unknown option " + a);
    }
  }
  if (!cl.worker_secret_file.empty()) cl.server.auth.worker_secret = ReadWorkerSecret(cl.worker_secret_file);
  cl.server.auth.require_worker_cert = require_worker_cert;
  if (require_worker_cert && cl.server.tls_client_ca.empty()) InvalidArgument("--require-worker-cert needs --tls-client-ca");
  if (cl.server.coordinator.config_dir.empty()) cl.server.coordinator.config_dir = worker::DefaultConfigDir();
  // One machine, one command: the dashboard comes with it (on loopback, a free port; the URL is logged).
  if (cl.standalone && !http_given) cl.server.http_listen = "127.0.0.1:0";
  if (cl.server.http_listen == "none") cl.server.http_listen.clear();
  return cl;
}

std::string Usage() {
  return "usage: trm-coordinator [--listen HOST:PORT] [--data-dir DIR] [--metrics-listen HOST:PORT]\n"
         "                       [--http-listen HOST:PORT|none (--standalone: 127.0.0.1:0)]\n"
         "                       [--heartbeat-timeout-s S] [--heartbeat-interval-ms MS] [--keep-last K]\n"
         "                       [--hang-timeout-s S (900)] [--start-timeout-s S (1800)]\n"
         "                       [--hang-budget-s PHASE=S[,PHASE=S...]]\n"
         "                       [--keep-best METRIC|eval[DATASET]:METRIC] [--config-dir DIR] [--port-file FILE]\n"
         "                       [--standalone [--cpu-slots N] [--worker-binary PATH]]\n"
         "                       [--auth-tokens FILE] [--worker-secret-file FILE] [--tls-cert PEM --tls-key PEM\n"
         "                       [--tls-client-ca PEM [--require-worker-cert]]] [--insecure]\n"
         "                       [--private] [--quota-slots NAME=N[,NAME=N...][,*=N]] [--audit-retention-days D (90)]\n"
         "                       [--max-wait-s S (1800)] [--preempt-grace-s S (120)] [--elastic-grow-after-s S (300)]\n"
         "                       [--metrics-max-points N (10000)] [--max-log-lines N (100000)]\n"
         "                       [--job-metrics-linger-s S (3600)] [--restore BACKUP_FILE]\n"
         "  --hang-budget-s  longest time a rank may stay in one phase (starting, data, compute,\n"
         "                   allreduce, checkpoint, eval); default: --start-timeout-s for starting,\n"
         "                   max(--hang-timeout-s, 1800) for checkpoint and eval, --hang-timeout-s else\n"
         "  --standalone     also run a local trm-worker (CPU slots) under DATA_DIR/worker\n"
         "  --auth-tokens    'TOKEN ROLE NAME' or 'sha256:HEX ROLE NAME' lines (roles read | submit | admin);\n"
         "                   clients send TRM_TOKEN; SIGHUP (or trmctl admin reload-tokens) re-reads it\n"
         "  --private        users see only their own jobs and datasets (admins see all)\n"
         "  --quota-slots    slots one user's jobs may hold at once (*=N: everyone else); over it, jobs wait\n"
         "  --max-wait-s     a job that cannot start after this long keeps freed slots until it fits (0: never)\n"
         "  --preempt-grace-s  how long a preempted job's ranks have to save a checkpoint (then SIGKILL)\n"
         "  --elastic-grow-after-s  an elastic job running shrunk grows onto free slots once its attempt\n"
         "                   has run this long and no training job waits (0: only when next placed)\n"
         "  --worker-secret-file  the secret workers send (TRM_WORKER_SECRET[_FILE] on the workers)\n"
         "  --insecure       allow plaintext on a non-loopback --listen (development only)\n"
         "  --http-listen    the web dashboard (docs/dashboard.md); TLS and tokens as for --listen\n"
         "  --metrics-max-points  training-step points kept per job; past it they are thinned to a\n"
         "                   coarser grid (evaluations and checkpoints' points stay; 0: keep all)\n"
         "  --max-log-lines  log lines kept per job; past it the oldest tenth goes (0: keep all)\n"
         "  --job-metrics-linger-s  how long an ended job's Prometheus series stay after it ended\n"
         "  --restore        first extract a backup (trmctl admin backup FILE) into --data-dir, which must\n"
         "                   hold no coordinator.db; jobs that were running resume from their latest\n"
         "                   checkpoint in it (docs/operations.md)\n"
         "  default --listen 127.0.0.1:50051\n";
}

int RunService(const CommandLine& cl) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  ::signal(SIGPIPE, SIG_IGN);
  const UniqueFd sfd(::signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK));
  if (!sfd.valid()) {
    std::fprintf(stderr, "error: signalfd: %s\n", std::strerror(errno));
    return 1;
  }
  try {
    if (!cl.restore.empty()) RestoreBackup(cl.restore, cl.server.coordinator.data_dir);
    CoordinatorServer server(cl.server);
    if (!cl.port_file.empty()) WriteFileAtomic(cl.port_file, std::to_string(server.port()) + "\n");
    RankGroup worker;  // empty without --standalone
    if (cl.standalone) SpawnLocalWorker(cl, server.port(), &worker);
    // Wait for a signal, or for the local worker to die (then the service is useless: exit).
    int sig = 0;
    while (sig == 0) {
      std::vector<pollfd> extra{{sfd.get(), POLLIN, 0}};
      const bool worker_exited = !worker.Wait(&extra).empty();
      if (extra[0].revents) sig = ReadSignal(sfd.get());
      if (sig == SIGHUP) {
        sig = 0;
        try {
          server.ReloadTokens("SIGHUP");
        } catch (const std::exception& e) {
          spdlog::error("SIGHUP: the tokens file was not reloaded (the old tokens stay): {}", e.what());
        }
      }
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

}  // namespace trm::coordinator
