// Global batches for data-parallel training: a deterministic per-epoch shuffle of the rows of one
// or more dataset splits (concatenated), with each of `world` ranks taking its own disjoint slice
// of every global batch, and a state that resumes on the exact next batch. Semantics:
// docs/data.md ("Loader").
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "trm/data/dataset_reader.h"

namespace trm::data {

struct BatchConfig {
  int64_t global_batch = 0;  // rows per step over all ranks; must be divisible by world
  int rank = 0;
  int world = 1;
  uint64_t seed = 0;
  bool shuffle = true;       // false: rows in dataset order every epoch (evaluation)
  bool drop_last = true;     // false: an epoch's last, smaller batch is kept, still split by rank
};

// Where the iterator is: `position` global batches of epoch `epoch` have been handed out.
struct IteratorState {
  uint64_t epoch = 0;
  uint64_t position = 0;

  std::string ToJson() const;  // {"epoch": E, "position": P}
  // Throws InvalidArgument naming what is wrong.
  static IteratorState FromJson(const std::string& json);
  bool operator==(const IteratorState& o) const { return epoch == o.epoch && position == o.position; }
};

// This rank's share of one global batch; row-major [rows, seq_len] int32 buffers.
struct Batch {
  int64_t rows = 0;
  int64_t seq_len = 0;
  std::vector<int32_t> inputs;
  std::vector<int32_t> labels;
  std::vector<int64_t> row_ids;  // index of each row in the concatenated splits
  uint64_t epoch = 0;            // the global batch this is part of
  uint64_t position = 0;
};

// Not thread-safe (one per training process / rank). The global batch sequence depends only on
// (splits, global_batch, seed, shuffle, drop_last), not on world or rank, so a job can resume with
// another number of ranks and still see the same global batches.
class BatchIterator {
 public:
  // Throws InvalidArgument: no splits, splits whose seq_len / vocab_size / pad_id /
  // ignore_label_id differ (naming both), global_batch not divisible by world, rank outside
  // [0, world), fewer rows than one global batch with drop_last.
  BatchIterator(std::vector<DatasetSplit> splits, BatchConfig config);
  // Opens `split` of each data path (DatasetSplit::Open) and concatenates them in that order.
  static BatchIterator Open(const std::vector<std::string>& data_paths, const std::string& split,
                            BatchConfig config);

  // Fills *out with this rank's rows of the next global batch; at the end of an epoch the next
  // epoch starts (re-shuffled). Reuses out's buffers.
  void Next(Batch* out);

  IteratorState state() const { return state_; }
  // Continue from a saved state: the next batch is the one that followed when it was saved.
  // Throws InvalidArgument if position is past the end of an epoch.
  void Restore(const IteratorState& state);

  int64_t batches_per_epoch() const { return batches_per_epoch_; }
  int64_t total_rows() const { return total_rows_; }
  const DatasetMeta& meta() const { return splits_.front().meta(); }

 private:
  void PrepareEpoch(uint64_t epoch);
  int64_t GlobalRowAt(int64_t k) const;  // k-th row of the current epoch's order

  std::vector<DatasetSplit> splits_;
  std::vector<int64_t> starts_;  // first global row of each split, plus the total
  BatchConfig config_;
  int64_t total_rows_ = 0;
  int64_t batches_per_epoch_ = 0;
  IteratorState state_;
  uint64_t order_epoch_ = ~uint64_t{0};  // epoch `order_` was made for
  std::vector<int64_t> order_;           // empty when not shuffling
};

// Global batches in an epoch of `rows` rows.
int64_t BatchesPerEpoch(int64_t rows, int64_t global_batch, bool drop_last);

// The rows (sorted, distinct) that ranks `ranks` of config.world read in the first `batches`
// global batches of BatchIterator over `total_rows` rows (config.rank is ignored): what a worker
// hosting those ranks needs of the split (the coordinator's shard plan). Throws InvalidArgument
// for a configuration BatchIterator would refuse. Stops early once every row is read.
std::vector<int64_t> RowsReadByRanks(int64_t total_rows, const BatchConfig& config, const std::vector<int>& ranks,
                                     int64_t batches);

}  // namespace trm::data
