// Process-wide runtime settings every compute binary applies first thing in main().
#pragma once

#include <string>

namespace trm {

// - With OpenBLAS's pthread build, OpenMP threads that spin after each parallel region steal the
//   cores OpenBLAS's own threads need for the next matrix product (measured: a training step
//   1.5-2.5x slower). libgomp reads OMP_WAIT_POLICY only when it loads, so when it is unset and
//   the BLAS is not OpenBLAS's OpenMP build this re-executes the program once with
//   OMP_WAIT_POLICY=PASSIVE (TRM_NO_REEXEC=1 disables this, e.g. under a debugger). With the
//   OpenMP build (what our binaries load where it is installed: cmake/Dependencies.cmake) the
//   products, ATen's kernels and ours share one libgomp pool, and its default (spin briefly,
//   then sleep) is the fastest setting: it is left alone.
// - glibc serves allocations up to 32 MiB from the heap and stops trimming it, so the same
//   multi-MB activation buffers are reused every step instead of being mmap-ed and page-faulted
//   afresh.
// Returns only when no re-exec happened (or it failed, which is harmless).
void ConfigureComputeProcess(int argc, char** argv);

// The OpenBLAS this process has loaded (through LibTorch), if any.
struct BlasRuntime {
  std::string library;    // the loaded file's path; empty: no OpenBLAS in this process
  std::string threading;  // "openmp" | "pthread" | "sequential" | "" (no OpenBLAS)
};
BlasRuntime LoadedBlas();

// A shell prefix that runs a child program (the PyTorch reference of the side-by-side
// benchmarks) on the BLAS this process uses: "LD_LIBRARY_PATH='<its folder>' " when that is
// OpenBLAS's OpenMP build, else "" (the system's default). The wait policy needs nothing: the
// child inherits ours.
std::string SameBlasPrefix();

}  // namespace trm
