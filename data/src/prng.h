// The project's seeded randomness for data order: SplitMix64 and an unbiased Fisher-Yates, written
// out so that a (seed, epoch) gives the same order on every platform and standard library
// (std::shuffle and the std distributions do not promise that). Internal; docs/data.md.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

namespace trm::data::internal {

class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n), n > 0, by rejection (no modulo bias).
  uint64_t Below(uint64_t n) {
    const uint64_t limit = ~uint64_t{0} - (~uint64_t{0} % n);
    uint64_t v;
    do v = Next(); while (v >= limit);
    return v % n;
  }

 private:
  uint64_t state_;
};

// Seed of one (seed, stream) pair, e.g. (seed, epoch): two SplitMix64 steps apart.
inline uint64_t DeriveSeed(uint64_t seed, uint64_t stream) {
  SplitMix64 a(seed);
  SplitMix64 b(a.Next() ^ (stream * 0xD1B54A32D192ED03ULL));
  return b.Next();
}

// Fisher-Yates from the back: for i = n-1 .. 1 swap v[i] with v[Below(i + 1)].
template <class T>
void Shuffle(std::vector<T>* v, SplitMix64* rng) {
  for (size_t i = v->size(); i > 1; --i) std::swap((*v)[i - 1], (*v)[rng->Below(i)]);
}

// Epoch `epoch`'s row order of `n` rows (docs/data.md, "Loader"): a shuffle of 0..n-1 seeded by
// DeriveSeed(seed, epoch). BatchIterator and the shard plan must agree on it exactly.
inline void EpochOrder(uint64_t seed, uint64_t epoch, int64_t n, std::vector<int64_t>* order) {
  order->resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) (*order)[static_cast<size_t>(i)] = i;
  SplitMix64 rng(DeriveSeed(seed, epoch));
  Shuffle(order, &rng);
}

// Rank `rank`'s slice [first, second) of a global batch of `size` rows.
inline std::pair<int64_t, int64_t> RankSlice(int64_t size, int rank, int world) {
  return {size * rank / world, size * (rank + 1) / world};
}

}  // namespace trm::data::internal
