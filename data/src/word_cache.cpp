#include "word_cache.h"

#include <cstring>

namespace trm::data::internal {

WordCache::WordCache(size_t max_entries) : max_entries_(max_entries) { Clear(); }

void WordCache::Clear() {
  size_t cap = 1024;
  while (cap < max_entries_ * 2) cap <<= 1;
  slots_.assign(cap, Slot{});
  keys_.clear();
  ids_.clear();
  used_ = 0;
}

uint64_t WordCache::Hash(std::string_view piece) {
  // 8 bytes at a time, multiply-xorshift mixing; good enough for a memo table.
  uint64_t h = 0x9E3779B97F4A7C15ULL ^ piece.size();
  const char* p = piece.data();
  size_t n = piece.size();
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    h = (h ^ v) * 0xff51afd7ed558ccdULL;
    h ^= h >> 32;
    p += 8;
    n -= 8;
  }
  uint64_t v = 0;
  std::memcpy(&v, p, n);
  h = (h ^ v) * 0xc4ceb9fe1a85ec53ULL;
  h ^= h >> 29;
  return h;
}

bool WordCache::Lookup(std::string_view piece, uint64_t hash, std::vector<int32_t>* out) const {
  const size_t mask = slots_.size() - 1;
  for (size_t i = hash & mask;; i = (i + 1) & mask) {
    const Slot& s = slots_[i];
    if (s.ids_len == 0) return false;
    if (s.hash == hash && s.key_len == piece.size() &&
        std::memcmp(keys_.data() + s.key_off, piece.data(), piece.size()) == 0) {
      out->insert(out->end(), ids_.begin() + s.ids_off, ids_.begin() + s.ids_off + s.ids_len);
      return true;
    }
  }
}

void WordCache::Insert(std::string_view piece, uint64_t hash, const int32_t* ids, size_t n) {
  if (piece.size() > kMaxPieceBytes || n == 0) return;
  if (used_ >= max_entries_) Clear();
  const size_t mask = slots_.size() - 1;
  size_t i = hash & mask;
  while (slots_[i].ids_len != 0) i = (i + 1) & mask;
  Slot& s = slots_[i];
  s.hash = hash;
  s.key_off = static_cast<uint32_t>(keys_.size());
  s.key_len = static_cast<uint32_t>(piece.size());
  s.ids_off = static_cast<uint32_t>(ids_.size());
  s.ids_len = static_cast<uint32_t>(n);
  keys_.append(piece);
  ids_.insert(ids_.end(), ids, ids + n);
  ++used_;
}

}  // namespace trm::data::internal
