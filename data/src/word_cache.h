// Memo of piece -> token ids, the main reason encoding is fast: chat text repeats its words.
// Not thread-safe (each Tokenizer copy owns one). Internal.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace trm::data::internal {

class WordCache {
 public:
  // Once `max_entries` pieces are stored the cache starts over, bounding memory on huge inputs.
  explicit WordCache(size_t max_entries = size_t{1} << 18);

  // On a hit appends the ids to *out and returns true.
  bool Lookup(std::string_view piece, uint64_t hash, std::vector<int32_t>* out) const;
  void Insert(std::string_view piece, uint64_t hash, const int32_t* ids, size_t n);

  static uint64_t Hash(std::string_view piece);
  static constexpr size_t kMaxPieceBytes = 128;  // longer pieces are rare: not worth storing

 private:
  struct Slot {
    uint64_t hash = 0;
    uint32_t key_off = 0, key_len = 0, ids_off = 0, ids_len = 0;  // ids_len 0: empty slot
  };
  void Clear();

  size_t max_entries_;
  size_t used_ = 0;
  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> ids_;
};

}  // namespace trm::data::internal
