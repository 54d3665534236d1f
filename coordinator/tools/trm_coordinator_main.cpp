// trm-coordinator: the control plane's server. `--standalone` also starts a local trm-worker, so
// one command gives a working service on one machine (the README's main job).
#include <cstdio>
#include <string>
#include <vector>

#include "trm/common/error.h"
#include "trm/coordinator/service_main.h"

int main(int argc, char** argv) {
  trm::coordinator::CommandLine cl;
  try {
    cl = trm::coordinator::ParseCommandLine(std::vector<std::string>(argv + 1, argv + argc));
  } catch (const trm::Error& e) {
    std::fprintf(stderr, "error: %s\n%s", e.what(), trm::coordinator::Usage().c_str());
    return 2;
  }
  if (cl.help) {
    std::fputs(trm::coordinator::Usage().c_str(), stderr);
    return 2;
  }
  return trm::coordinator::RunService(cl);
}
