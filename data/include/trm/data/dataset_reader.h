// One split (train/ or test/) of a dataset in the reference layout, memory-mapped: dataset.json
// plus all__inputs.npy / all__labels.npy, each [rows, seq_len] int32. Reads datasets built by the
// reference Python builder as well as by `trm-data build`.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "trm/data/npy.h"

namespace trm::data {

struct DatasetMeta {
  int64_t seq_len = 0;
  int64_t vocab_size = 0;
  int32_t pad_id = 0;
  int32_t ignore_label_id = -100;
};

// Immutable after Open; all methods are const and safe to call from many threads. Move-only.
class DatasetSplit {
 public:
  // `data_path` is a dataset directory (the reference's data_paths entry) and `split` "train" or
  // "test". Throws NotFound (missing directory or file) or DataLoss (a field of dataset.json
  // missing or wrong, arrays whose shapes disagree with it), naming the file.
  static DatasetSplit Open(const std::string& data_path, const std::string& split);
  // A split directory itself.
  static DatasetSplit OpenDir(const std::string& dir);

  const DatasetMeta& meta() const { return meta_; }
  int64_t rows() const { return rows_; }  // of the whole split, also for a shard
  int64_t seq_len() const { return meta_.seq_len; }
  // Row `r` (0 <= r < rows()) of the arrays: seq_len values in the mapping. For a shard, a row
  // it does not hold throws DataLoss (the shard plan and the run disagree).
  const int32_t* inputs(int64_t r) const { return inputs_.data() + Slot(r) * meta_.seq_len; }
  const int32_t* labels(int64_t r) const { return labels_.data() + Slot(r) * meta_.seq_len; }
  const std::string& dir() const { return dir_; }
  // A worker's part of a split (dataset_shard.h): only shard_rows() are present.
  bool is_shard() const { return shard_rows_.has_value(); }
  int64_t present_rows() const { return is_shard() ? static_cast<int64_t>(shard_rows_->size()) : rows_; }

 private:
  DatasetSplit(std::string dir, DatasetMeta meta, NpyInt32Array inputs, NpyInt32Array labels);
  int64_t Slot(int64_t r) const { return shard_rows_ ? ShardSlot(r) : r; }
  int64_t ShardSlot(int64_t r) const;
  std::string dir_;
  DatasetMeta meta_;
  NpyInt32Array inputs_, labels_;
  int64_t rows_ = 0;
  std::optional<NpyInt32Array> shard_rows_;  // sorted row ids of the shard's rows, in file order
};

}  // namespace trm::data
