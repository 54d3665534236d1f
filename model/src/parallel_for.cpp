// Compiled with -fopenmp and without the LibTorch precompiled header (model/CMakeLists.txt):
// the one place at::parallel_for's OpenMP region is instantiated. See parallel_for.h.
#include "trm/model/parallel_for.h"

#include <ATen/Parallel.h>

#ifndef _OPENMP
#error "parallel_for.cpp must be compiled with -fopenmp, or at::parallel_for runs on one thread"
#endif

namespace trm::model {

void detail::ParallelForImpl(int64_t begin, int64_t end, int64_t grain, ChunkFn fn, const void* body) {
  at::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { fn(body, b, e); });
}

}  // namespace trm::model
