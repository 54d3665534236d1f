// The CPU thread pools of a compute process (LibTorch's intra-op/OpenMP pool, OpenBLAS's own
// pthread pool, MKL's where linked), governed by one number: the `threads` config key.
//
// Why one number: a float32 result depends on how many threads computed it (OpenBLAS's threaded
// GEMM driver blocks the inner dimension differently from its single-threaded one; ATen's
// parallel reductions combine per-thread partial sums). Left alone, each pool sizes itself from
// the environment when its library loads (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, the core
// count), so a launcher that exports OMP_NUM_THREADS=1 for some topologies and not others
// changed the bytes of the same config. Applying the resolved count to every pool makes the
// bytes a function of the config, whatever the launcher or the environment.
#pragma once

#include <cstdint>
#include <string>

namespace trm::worker {

// `threads` > 0 is taken as it is. 0 (the default) means "this machine's share": the cores this
// process may run on (its affinity mask: taskset, cgroup cpusets) divided by `local_ranks`, the
// ranks sharing the machine (LOCAL_WORLD_SIZE), at least 1. Never the environment's
// OMP_NUM_THREADS / OPENBLAS_NUM_THREADS: they are what made the result depend on the launcher.
int ResolveThreads(int64_t threads, int cores, int local_ranks);

// ResolveThreads with this process's affinity core count and LOCAL_WORLD_SIZE (1 when unset).
int ResolveThreadsForThisProcess(int64_t threads);

// Sets every pool to `n` (> 0). Process-wide: call once at process start, before any tensor
// work, from the thread that will run the training loop (OpenMP's count is per calling thread;
// threads started later inherit ATen's setting).
void ApplyThreads(int n);

// The size each pool reports now; -1 for a pool this process does not have (OpenBLAS absent,
// e.g. LibTorch on MKL). For tests and the start-up log line.
struct ThreadPoolSizes {
  int intra_op = -1;  // at::get_num_threads
  int openmp = -1;    // omp_get_max_threads in the calling thread; -1 without OpenMP
  int openblas = -1;  // openblas_get_num_threads
};
ThreadPoolSizes CurrentThreadPools();

// "intra_op=2 openmp=2 openblas=2", for logs.
std::string Describe(const ThreadPoolSizes& s);

// Test hook: sets only OpenBLAS's pool (as OPENBLAS_NUM_THREADS would at load), so a test can
// start from pools that disagree. False when OpenBLAS is not in the process.
bool SetOpenBlasThreadsForTest(int n);

}  // namespace trm::worker
