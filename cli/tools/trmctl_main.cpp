// trmctl: the user CLI of the control plane. All logic lives in trm_cli; this is the edge that
// makes real channels and turns exceptions into exit statuses (docs/error-policy.md).
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <cstdio>
#include <exception>
#include <iostream>
#include <string>
#include <vector>

#include "trm/cli/cli.h"
#include "trm/rpc/client.h"

int main(int argc, char** argv) {
  // stdout carries results (job ids, tables, JSON); warnings such as reconnects go to stderr.
  auto logger = spdlog::stderr_color_mt("trmctl");
  logger->set_pattern("%^trmctl: %v%$");
  spdlog::set_default_logger(logger);

  const trm::cli::ConnectFn connect = [](const std::string& address) {
    auto channel = trm::rpc::MakeChannel(address);
    return trm::cli::Stubs{trm::v1::JobService::NewStub(channel), trm::v1::DatasetService::NewStub(channel)};
  };
  const trm::cli::Io io{&std::cout, &std::cerr, ::isatty(STDOUT_FILENO) == 1};
  try {
    return trm::cli::Run(std::vector<std::string>(argv + 1, argv + argc), connect, io);
  } catch (const std::exception& e) {
    std::cout.flush();
    std::fprintf(stderr, "error: %s\n", e.what());
    return trm::cli::ExitCodeFor(e);
  }
}
