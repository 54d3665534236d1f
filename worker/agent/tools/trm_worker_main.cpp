// trm-worker: the worker agent of the control plane (see trm/agent/agent.h).
#include <prometheus/exposer.h>
#include <prometheus/registry.h>
#include <signal.h>
#include <spdlog/cfg/env.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <cstring>

#include "trm/agent/agent.h"
#include "trm/agent/options.h"
#include "trm/common/error.h"

int main(int argc, char** argv) {
  spdlog::cfg::load_env_levels();
  std::vector<std::string> args(argv + 1, argv + argc);
  for (const auto& a : args) {
    if (a == "-h" || a == "--help") {
      std::fputs(trm::agent::kWorkerUsage, stdout);
      return 0;
    }
  }
  trm::agent::WorkerCommandLine cl;
  try {
    cl = trm::agent::ParseWorkerCommandLine(args);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n%s", e.what(), trm::agent::kWorkerUsage);
    return 2;
  }
  try {
    // Signals are taken synchronously by this thread; every thread started after this inherits
    // the mask (ranks get a clean one from RankProcess).
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    pthread_sigmask(SIG_BLOCK, &set, nullptr);
    ::signal(SIGPIPE, SIG_IGN);

    auto registry = std::make_shared<prometheus::Registry>();
    std::unique_ptr<prometheus::Exposer> exposer;
    if (!cl.metrics_listen.empty()) {
      try {
        exposer = std::make_unique<prometheus::Exposer>(cl.metrics_listen);
      } catch (const std::exception& e) {
        trm::ThrowError(trm::Code::kUnavailable, "--metrics-listen " + cl.metrics_listen + ": " + e.what());
      }
      exposer->RegisterCollectable(registry);
    }
    trm::agent::Agent agent(cl.agent, trm::agent::MakeGrpcCoordinatorClient(cl.coordinator), registry);
    spdlog::info("trm-worker {}: coordinator {}, work dir {}", cl.agent.worker_id, cl.coordinator, cl.agent.work_dir);
    agent.Start();
    int sig = 0;
    while (true) {
      const timespec tick{1, 0};  // bounded wait; nothing else to do here
      sig = sigtimedwait(&set, nullptr, &tick);
      if (sig == SIGTERM || sig == SIGINT) break;
    }
    spdlog::info("trm-worker: got {}; stopping every rank", strsignal(sig));
    agent.Shutdown();
    return 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
