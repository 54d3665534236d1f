#include "trm/data/batch_iterator.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "prng.h"
#include "trm/common/error.h"

namespace trm::data {

std::string IteratorState::ToJson() const {
  return nlohmann::json{{"epoch", epoch}, {"position", position}}.dump();
}

IteratorState IteratorState::FromJson(const std::string& json) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(json);
  } catch (const nlohmann::json::parse_error& e) {
    InvalidArgument(std::string("iterator state: invalid JSON: ") + e.what());
  }
  IteratorState s;
  for (auto [key, field] : {std::pair<const char*, uint64_t*>{"epoch", &s.epoch}, {"position", &s.position}}) {
    auto it = j.is_object() ? j.find(key) : j.end();
    if (it == j.end() || !it->is_number_unsigned()) {
      InvalidArgument(std::string("iterator state: field \"") + key + "\": expected a non-negative integer");
    }
    *field = it->get<uint64_t>();
  }
  return s;
}

BatchIterator::BatchIterator(std::vector<DatasetSplit> splits, BatchConfig config)
    : splits_(std::move(splits)), config_(config) {
  if (splits_.empty()) InvalidArgument("batch iterator: no datasets given");
  if (config_.world <= 0) InvalidArgument("batch iterator: world size must be > 0, got " + std::to_string(config_.world));
  if (config_.rank < 0 || config_.rank >= config_.world) {
    InvalidArgument("batch iterator: rank " + std::to_string(config_.rank) + " outside [0, " +
                    std::to_string(config_.world) + ")");
  }
  if (config_.global_batch <= 0 || config_.global_batch % config_.world != 0) {
    InvalidArgument("batch iterator: global batch size " + std::to_string(config_.global_batch) +
                    " must be positive and divisible by the world size " + std::to_string(config_.world));
  }
  const DatasetSplit& first = splits_.front();
  for (const DatasetSplit& s : splits_) {
    auto check = [&](const char* field, int64_t a, int64_t b) {
      if (a != b) {
        InvalidArgument("datasets " + first.dir() + " and " + s.dir() + " are not compatible: " + field + " " +
                        std::to_string(a) + " vs " + std::to_string(b));
      }
    };
    check("seq_len", first.meta().seq_len, s.meta().seq_len);
    check("vocab_size", first.meta().vocab_size, s.meta().vocab_size);
    check("pad_id", first.meta().pad_id, s.meta().pad_id);
    check("ignore_label_id", first.meta().ignore_label_id, s.meta().ignore_label_id);
    starts_.push_back(total_rows_);
    total_rows_ += s.rows();
  }
  starts_.push_back(total_rows_);
  batches_per_epoch_ = BatchesPerEpoch(total_rows_, config_.global_batch, config_.drop_last);
  if (batches_per_epoch_ == 0) {
    InvalidArgument("batch iterator: the datasets have " + std::to_string(total_rows_) +
                    " rows, fewer than one global batch of " + std::to_string(config_.global_batch));
  }
}

BatchIterator BatchIterator::Open(const std::vector<std::string>& data_paths, const std::string& split,
                                  BatchConfig config) {
  std::vector<DatasetSplit> splits;
  for (const auto& p : data_paths) splits.push_back(DatasetSplit::Open(p, split));
  return BatchIterator(std::move(splits), config);
}

void BatchIterator::PrepareEpoch(uint64_t epoch) {
  if (!config_.shuffle || order_epoch_ == epoch) return;
  internal::EpochOrder(config_.seed, epoch, total_rows_, &order_);
  order_epoch_ = epoch;
}

int64_t BatchIterator::GlobalRowAt(int64_t k) const { return config_.shuffle ? order_[k] : k; }

void BatchIterator::Restore(const IteratorState& state) {
  if (state.position > static_cast<uint64_t>(batches_per_epoch_)) {
    InvalidArgument("iterator state: position " + std::to_string(state.position) + " is past the " +
                    std::to_string(batches_per_epoch_) + " batches of an epoch");
  }
  state_ = state;
}

void BatchIterator::Next(Batch* out) {
  if (state_.position >= static_cast<uint64_t>(batches_per_epoch_)) {
    ++state_.epoch;
    state_.position = 0;
  }
  PrepareEpoch(state_.epoch);
  const int64_t g = config_.global_batch;
  const int64_t begin = static_cast<int64_t>(state_.position) * g;
  const int64_t size = std::min(g, total_rows_ - begin);  // < g only for a kept last batch
  // Rank r takes the r-th contiguous slice of the global batch.
  const auto [lo, hi] = internal::RankSlice(size, config_.rank, config_.world);
  const int64_t len = meta().seq_len;

  out->rows = hi - lo;
  out->seq_len = len;
  out->epoch = state_.epoch;
  out->position = state_.position;
  out->inputs.resize(static_cast<size_t>(out->rows * len));
  out->labels.resize(static_cast<size_t>(out->rows * len));
  out->row_ids.resize(static_cast<size_t>(out->rows));
  for (int64_t i = 0; i < out->rows; ++i) {
    const int64_t row = GlobalRowAt(begin + lo + i);
    const size_t s = static_cast<size_t>(std::upper_bound(starts_.begin(), starts_.end(), row) - starts_.begin() - 1);
    const int64_t local = row - starts_[s];
    std::copy_n(splits_[s].inputs(local), len, out->inputs.begin() + i * len);  // DataLoss outside a shard
    std::copy_n(splits_[s].labels(local), len, out->labels.begin() + i * len);
    out->row_ids[static_cast<size_t>(i)] = row;
  }
  ++state_.position;
}

int64_t BatchesPerEpoch(int64_t rows, int64_t global_batch, bool drop_last) {
  return drop_last ? rows / global_batch : (rows + global_batch - 1) / global_batch;
}

std::vector<int64_t> RowsReadByRanks(int64_t total_rows, const BatchConfig& config, const std::vector<int>& ranks,
                                     int64_t batches) {
  const int64_t g = config.global_batch;
  if (total_rows <= 0 || g <= 0 || config.world <= 0 || g % config.world != 0)
    InvalidArgument("shard plan: " + std::to_string(total_rows) + " rows, global batch " + std::to_string(g) +
                    ", world " + std::to_string(config.world) + ": not a valid loader configuration");
  for (int r : ranks)
    if (r < 0 || r >= config.world) InvalidArgument("shard plan: rank " + std::to_string(r) + " outside the world");
  const int64_t per_epoch = BatchesPerEpoch(total_rows, g, config.drop_last);
  std::vector<char> read(static_cast<size_t>(total_rows), 0);
  int64_t count = 0;
  std::vector<int64_t> order;
  for (int64_t b = 0; b < batches && count < total_rows && per_epoch > 0; ++b) {
    const uint64_t epoch = static_cast<uint64_t>(b / per_epoch);
    const int64_t begin = (b % per_epoch) * g;
    if (config.shuffle && (b % per_epoch == 0 || order.empty())) internal::EpochOrder(config.seed, epoch, total_rows, &order);
    const int64_t size = std::min(g, total_rows - begin);
    for (int r : ranks) {
      const auto [lo, hi] = internal::RankSlice(size, r, config.world);
      for (int64_t k = begin + lo; k < begin + hi; ++k) {
        const int64_t row = config.shuffle ? order[static_cast<size_t>(k)] : k;
        if (!read[static_cast<size_t>(row)]) {
          read[static_cast<size_t>(row)] = 1;
          ++count;
        }
      }
    }
    // Past the first epoch without a shuffle nothing new comes.
    if (!config.shuffle && b + 1 >= per_epoch) break;
  }
  std::vector<int64_t> rows;
  rows.reserve(static_cast<size_t>(count));
  for (int64_t i = 0; i < total_rows; ++i)
    if (read[static_cast<size_t>(i)]) rows.push_back(i);
  return rows;
}

}  // namespace trm::data
