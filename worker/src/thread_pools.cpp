#include "trm/worker/thread_pools.h"

#include <dlfcn.h>
#include <sched.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "trm/common/error.h"

namespace trm::worker {
namespace {

// OpenBLAS is reached through the BLAS alternative LibTorch links (libblas.so.3), which may be
// the reference BLAS or MKL instead; look its entry points up rather than link them.
using SetThreadsFn = void (*)(int);
using GetThreadsFn = int (*)();

// OpenMP likewise: libgomp comes in with LibTorch, and linking it here would need -fopenmp,
// which the LibTorch precompiled header was not built with.
template <class Fn>
Fn Lookup(const char* name) {
  return reinterpret_cast<Fn>(::dlsym(RTLD_DEFAULT, name));
}
SetThreadsFn OpenBlasSet() { return Lookup<SetThreadsFn>("openblas_set_num_threads"); }
GetThreadsFn OpenBlasGet() { return Lookup<GetThreadsFn>("openblas_get_num_threads"); }

int AffinityCores() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof(set), &set) != 0) return 1;
  return std::max(1, CPU_COUNT(&set));
}

int LocalRanks() {
  const char* v = std::getenv("LOCAL_WORLD_SIZE");
  if (v == nullptr || *v == '\0') return 1;
  char* end = nullptr;
  const long n = std::strtol(v, &end, 10);
  if (end == v || *end != '\0' || n < 1) {
    InvalidArgument(std::string("environment variable LOCAL_WORLD_SIZE: expected a positive integer, got '") + v + "'");
  }
  return static_cast<int>(n);
}

}  // namespace

int ResolveThreads(int64_t threads, int cores, int local_ranks) {
  if (threads < 0) InvalidArgument("config key threads: must not be negative, got " + std::to_string(threads));
  if (threads > 0) return static_cast<int>(threads);
  return std::max(1, std::max(1, cores) / std::max(1, local_ranks));
}

int ResolveThreadsForThisProcess(int64_t threads) { return ResolveThreads(threads, AffinityCores(), LocalRanks()); }

void ApplyThreads(int n) {
  if (n < 1) InvalidArgument("thread count must be positive, got " + std::to_string(n));
  at::set_num_threads(n);  // ATen's pool and the calling thread's OpenMP count (and MKL's)
  if (SetThreadsFn set = Lookup<SetThreadsFn>("omp_set_num_threads")) set(n);  // should ATen's pool not be OpenMP's
  if (SetThreadsFn set = OpenBlasSet()) set(n);
}

ThreadPoolSizes CurrentThreadPools() {
  ThreadPoolSizes s;
  s.intra_op = at::get_num_threads();
  if (GetThreadsFn get = Lookup<GetThreadsFn>("omp_get_max_threads")) s.openmp = get();
  if (GetThreadsFn get = OpenBlasGet()) s.openblas = get();
  return s;
}

std::string Describe(const ThreadPoolSizes& s) {
  auto one = [](const char* name, int n) { return std::string(name) + "=" + (n < 0 ? "absent" : std::to_string(n)); };
  return one("intra_op", s.intra_op) + " " + one("openmp", s.openmp) + " " + one("openblas", s.openblas);
}

bool SetOpenBlasThreadsForTest(int n) {
  SetThreadsFn set = OpenBlasSet();
  if (set == nullptr) return false;
  set(n);
  return true;
}

}  // namespace trm::worker
