// ParallelFor: at::parallel_for's split of a range over ATen's intra-op threads, callable from
// any file.
//
// Why not at::parallel_for itself: it is a header template whose parallel region exists only in
// a file compiled with -fopenmp (Debian's LibTorch is an OpenMP build). Compiled anywhere else,
// as every file sharing the LibTorch precompiled header is, it silently runs the whole range on
// the calling thread. This one is compiled once with -fopenmp (parallel_for.cpp) and takes the
// body through a function reference, so callers need neither the flag nor their own PCH.
//
// Contract: as at::parallel_for. f(chunk_begin, chunk_end) is called on disjoint chunks that
// cover [begin, end), concurrently on up to at::get_num_threads() threads and on no more than
// ceil((end - begin) / grain) of them; inside a parallel region (nested), or when the range is
// no longer than the grain, the whole range runs inline. An exception from f is rethrown on the
// caller. The chunk boundaries depend on the thread count, so f must give the same result
// however the range is cut (each index computed alone): then results are bitwise the same for
// every thread count.
#pragma once

#include <cstdint>

namespace trm::model {

namespace detail {
using ChunkFn = void (*)(const void* body, int64_t begin, int64_t end);
void ParallelForImpl(int64_t begin, int64_t end, int64_t grain, ChunkFn fn, const void* body);
}  // namespace detail

template <class F>
void ParallelFor(int64_t begin, int64_t end, int64_t grain, const F& f) {
  detail::ParallelForImpl(
      begin, end, grain, [](const void* body, int64_t b, int64_t e) { (*static_cast<const F*>(body))(b, e); }, &f);
}

}  // namespace trm::model
