#include "trm/common/process_env.h"

#include <malloc.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

namespace trm {

void ConfigureComputeProcess(int argc, char** argv) {
  (void)argc;
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  const char* no_reexec = std::getenv("TRM_NO_REEXEC");
  if ((policy && *policy) || (no_reexec && std::strcmp(no_reexec, "0") != 0)) return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  execv("/proc/self/exe", argv);  // only returns on failure: carry on with the spinning default
}

}  // namespace trm
