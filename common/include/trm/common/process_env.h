// Process-wide runtime settings every compute binary applies first thing in main().
#pragma once

namespace trm {

// - OpenMP threads that spin after each parallel region steal the cores OpenBLAS's own threads
//   need for the next matrix product (measured: a training step 1.5-2.5x slower). libgomp reads
//   OMP_WAIT_POLICY only when it loads, so when it is unset this re-executes the program once
//   with OMP_WAIT_POLICY=PASSIVE (TRM_NO_REEXEC=1 disables this, e.g. under a debugger).
// - glibc serves allocations up to 32 MiB from the heap and stops trimming it, so the same
//   multi-MB activation buffers are reused every step instead of being mmap-ed and page-faulted
//   afresh.
// Returns only when no re-exec happened (or it failed, which is harmless).
void ConfigureComputeProcess(int argc, char** argv);

}  // namespace trm
