// The vocabulary and ranked merges of a byte-level BPE, and the merge loop over one
// pre-tokenised piece. Internal.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace trm::data::internal {

struct MergeRule {
  uint32_t rank;
  int32_t merged;
};

class BpeModel {
 public:
  // vocab: byte-level spelling -> id; merges: spelled pairs in rank order. Every byte must have
  // a token and every merge's parts and result must be in the vocabulary; `source` names the
  // files in the errors (DataLoss) otherwise.
  BpeModel(const std::vector<std::pair<std::string, int32_t>>& vocab,
           std::vector<std::pair<std::string, std::string>> merges, const std::string& source);

  // Appends the ids of one piece (raw bytes). Thread-safe.
  void EncodeWord(std::string_view bytes, std::vector<int32_t>* out) const;

  // The two merge loops EncodeWord picks from (public for tests). Naive is the reference's loop,
  // quadratic in the piece length; Heap is O(n log n) and gives the same result because every
  // merge's parts are made by lower-ranked merges (checked for GPT-2), except possibly when two
  // different pairs share a rank (the "phantom" pairs below). Pieces longer than
  // kHeapThreshold bytes (runs of letters without spaces, long digit runs) take Heap.
  static constexpr size_t kHeapThreshold = 256;
  void EncodeWordNaive(std::string_view bytes, std::vector<int32_t>* out) const;
  void EncodeWordHeap(std::string_view bytes, std::vector<int32_t>* out) const;

  int32_t ByteId(uint8_t b) const { return byte_ids_[b]; }
  bool has_merges() const { return !merges_.empty(); }
  // One past the largest id of the vocabulary.
  int32_t id_end() const { return static_cast<int32_t>(spelled_.size()); }
  // Byte-level spelling of `id`; empty when the vocabulary has no such id.
  const std::string& Spelled(int32_t id) const { return spelled_[id]; }
  int32_t Find(const std::string& spelled) const;  // -1 when absent
  const std::vector<std::pair<std::string, std::string>>& merges() const { return merges_; }

 private:
  const MergeRule* Lookup(int32_t a, int32_t b) const;
  void AddRule(int32_t a, int32_t b, MergeRule rule);

  std::vector<std::string> spelled_;
  std::unordered_map<std::string, int32_t> ids_;
  std::vector<std::pair<std::string, std::string>> merges_;
  std::array<int32_t, 256> byte_ids_{};
  // Open addressing over (a << 32 | b); empty slots have key kEmpty.
  struct Slot {
    uint64_t key;
    MergeRule rule;
  };
  std::vector<Slot> table_;
  uint64_t mask_ = 0;
};

}  // namespace trm::data::internal
