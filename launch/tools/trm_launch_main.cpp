// trm-launch [OPTIONS] PROGRAM [ARGS...]: torchrun for this project (docs/launch.md). Exits 0
// when every rank exited 0, 1 when the run failed with no restart left, 2 on unusable input,
// 128+N after signal N.
#include <spdlog/cfg/env.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "trm/common/error.h"
#include "trm/launch/launcher.h"
#include "trm/launch/options.h"

int main(int argc, char** argv) {
  // The console's stdout belongs to the ranks; the launcher talks on stderr. SPDLOG_LEVEL=debug
  // shows every event.
  auto logger = spdlog::stderr_color_mt("trm-launch");
  logger->set_pattern("%^[trm-launch %l]%$ %v");
  spdlog::set_default_logger(logger);
  spdlog::cfg::load_env_levels();

  trm::launch::LaunchOptions options;
  try {
    options = trm::launch::ParseLaunchArgs(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
  if (options.help) {
    std::fputs(trm::launch::LaunchUsage().c_str(), stdout);
    return 0;
  }
  try {
    const trm::launch::LaunchResult result = trm::launch::RunLaunch(options);
    if (result.exit_code != 0) {
      std::fprintf(stderr, "error: %s\n", trm::launch::DescribeFailure(result, options).c_str());
    }
    return result.exit_code;
  } catch (const trm::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return e.code() == trm::Code::kInvalidArgument || e.code() == trm::Code::kNotFound ? 2 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
