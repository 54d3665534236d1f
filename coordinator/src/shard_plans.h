// Shard plans: which training rows the ranks an attempt places on one worker read, so that a
// worker fetches only those rows of the dataset when a run reads less than the whole split.
//
// A plan depends only on what never changes in a job (its resolved config, dataset and world
// size) and on the ranks, so it is made from a copy of those (ShardRequest) outside the
// coordinator's lock: parsing the config and opening the dataset's train split are work no other
// request should wait behind. Plans and row counts are memoized under a lock of their own that
// is never held across that work. Thread-safe. Internal.
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "trm/v1/state.pb.h"

namespace trm::coordinator {

struct ShardRequest {
  std::string job_id;
  int attempt = 0;
  std::string config_name;
  std::string resolved_config_json;
  std::string dataset_hash;  // empty: the job reads a path on the workers, never a shard
  int world_size = 0;
  std::vector<int> ranks;
};

// The request for `ranks` of the record's active attempt.
ShardRequest ShardRequestFor(const v1::JobRecord& rec, std::vector<int> ranks);

class ShardPlanner {
 public:
  explicit ShardPlanner(std::string data_dir);  // stored datasets are DATA_DIR/datasets/<hash>/

  // A shard when the ranks read less than the whole training split (a run shorter than its
  // data); nullopt when they read every row, or when no plan can be made (logged: the whole
  // dataset always works, and the trainer reports what is wrong with the config).
  std::optional<v1::ShardSpec> Plan(const ShardRequest& request);

  // Rows of a stored dataset's train split (read from its header once). Throws as
  // data::DatasetSplit::Open does.
  int64_t TrainRows(const std::string& hash);

  // The training rows the ranks of `shard` read (as the trainer's BatchIterator: shuffled, last
  // batch dropped).
  static std::vector<int64_t> RowsOf(const v1::ShardSpec& shard, int64_t rows);

 private:
  std::optional<v1::ShardSpec> Compute(const ShardRequest& request);

  std::string datasets_dir_;
  std::mutex mu_;  // guards the two memos only
  std::map<std::string, int64_t> train_rows_;                    // dataset hash -> train rows
  std::map<std::string, std::optional<v1::ShardSpec>> plans_;  // "job/attempt/first rank" -> plan
};

}  // namespace trm::coordinator
