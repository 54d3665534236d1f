#include "trm/common/process_env.h"

#include <dlfcn.h>
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
  if (LoadedBlas().threading == "openmp") return;
  setenv("OMP_WAIT_POLICY", "PASSIVE", 1);
  execv("/proc/self/exe", argv);  // only returns on failure: carry on with the spinning default
}

BlasRuntime LoadedBlas() {
  BlasRuntime r;
  // openblas_get_parallel: 0 sequential, 1 pthreads, 2 OpenMP (OpenBLAS's cblas.h).
  void* sym = dlsym(RTLD_DEFAULT, "openblas_get_parallel");
  if (!sym) return r;
  const int parallel = reinterpret_cast<int (*)()>(sym)();
  r.threading = parallel == 2 ? "openmp" : parallel == 1 ? "pthread" : "sequential";
  Dl_info info{};
  if (dladdr(sym, &info) && info.dli_fname) r.library = info.dli_fname;
  return r;
}

std::string SameBlasPrefix() {
  const BlasRuntime blas = LoadedBlas();
  const auto slash = blas.library.rfind('/');
  if (blas.threading != "openmp" || slash == std::string::npos) return "";
  return "LD_LIBRARY_PATH='" + blas.library.substr(0, slash) + "' ";
}

}  // namespace trm
