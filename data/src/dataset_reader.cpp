#include "trm/data/dataset_reader.h"

#include <algorithm>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "trm/common/error.h"
#include "trm/common/file_util.h"

namespace fs = std::filesystem;

namespace trm::data {
namespace {

constexpr const char* kShardFile = "shard.json";
constexpr const char* kShardRowsFile = "shard_rows.npy";

}  // namespace

DatasetSplit::DatasetSplit(std::string dir, DatasetMeta meta, NpyInt32Array inputs, NpyInt32Array labels)
    : dir_(std::move(dir)), meta_(meta), inputs_(std::move(inputs)), labels_(std::move(labels)) {
  rows_ = inputs_.shape().empty() ? 0 : inputs_.shape()[0];
}

DatasetSplit DatasetSplit::Open(const std::string& data_path, const std::string& split) {
  std::error_code ec;
  if (!fs::is_directory(data_path, ec)) NotFound(data_path + ": no such dataset directory");
  return OpenDir((fs::path(data_path) / split).string());
}

DatasetSplit DatasetSplit::OpenDir(const std::string& dir) {
  const std::string meta_path = (fs::path(dir) / "dataset.json").string();
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) NotFound(dir + ": no such split directory");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(ReadFile(meta_path));
  } catch (const nlohmann::json::parse_error& e) {
    DataLoss(meta_path + ": invalid JSON: " + e.what());
  }
  auto integer = [&](const char* key, bool required, int64_t fallback) -> int64_t {
    auto it = j.find(key);
    if (it == j.end()) {
      if (required) DataLoss(meta_path + ": missing field \"" + key + "\"");
      return fallback;
    }
    if (!it->is_number_integer()) DataLoss(meta_path + ": field \"" + key + "\": expected an integer");
    return it->get<int64_t>();
  };
  if (!j.is_object()) DataLoss(meta_path + ": expected an object");
  DatasetMeta meta;
  meta.seq_len = integer("seq_len", true, 0);
  meta.vocab_size = integer("vocab_size", true, 0);
  meta.pad_id = static_cast<int32_t>(integer("pad_id", true, 0));
  meta.ignore_label_id = static_cast<int32_t>(integer("ignore_label_id", false, -100));
  if (meta.seq_len <= 0) DataLoss(meta_path + ": field \"seq_len\": expected > 0");

  NpyInt32Array inputs = NpyInt32Array::Open((fs::path(dir) / "all__inputs.npy").string());
  NpyInt32Array labels = NpyInt32Array::Open((fs::path(dir) / "all__labels.npy").string());
  for (const NpyInt32Array* a : {&inputs, &labels}) {
    if (a->shape().size() != 2 || a->shape()[1] != meta.seq_len) {
      std::string shape;
      for (int64_t d : a->shape()) shape += (shape.empty() ? "" : ", ") + std::to_string(d);
      DataLoss(a->path() + ": shape (" + shape + "), expected (rows, " + std::to_string(meta.seq_len) +
               ") as seq_len in " + meta_path);
    }
  }
  if (inputs.shape()[0] != labels.shape()[0]) {
    DataLoss(dir + ": all__inputs.npy has " + std::to_string(inputs.shape()[0]) + " rows, all__labels.npy " +
             std::to_string(labels.shape()[0]));
  }
  DatasetSplit split(dir, meta, std::move(inputs), std::move(labels));
  const fs::path shard_json = fs::path(dir) / kShardFile;
  if (fs::exists(shard_json, ec)) {
    // A shard: the arrays hold the rows listed in shard_rows.npy, of a split of "rows" rows.
    nlohmann::json sj;
    try {
      sj = nlohmann::json::parse(ReadFile(shard_json.string()));
    } catch (const nlohmann::json::parse_error& e) {
      DataLoss(shard_json.string() + ": invalid JSON: " + e.what());
    }
    if (!sj.is_object() || !sj.contains("rows") || !sj["rows"].is_number_integer())
      DataLoss(shard_json.string() + ": expected {\"rows\": <rows of the whole split>}");
    NpyInt32Array ids = NpyInt32Array::Open((fs::path(dir) / kShardRowsFile).string());
    const int64_t total = sj["rows"].get<int64_t>();
    if (ids.shape().size() != 1 || ids.shape()[0] != split.rows_)
      DataLoss(ids.path() + ": expected one row id per row of all__inputs.npy (" + std::to_string(split.rows_) + ")");
    for (size_t i = 0; i < ids.size(); ++i) {
      if (ids.data()[i] < 0 || ids.data()[i] >= total || (i > 0 && ids.data()[i] <= ids.data()[i - 1]))
        DataLoss(ids.path() + ": row ids must be increasing and below " + std::to_string(total) + " (entry " +
                 std::to_string(i) + ")");
    }
    split.rows_ = total;
    split.shard_rows_.emplace(std::move(ids));
  }
  return split;
}

int64_t DatasetSplit::ShardSlot(int64_t r) const {
  const int32_t* begin = shard_rows_->data();
  const int32_t* end = begin + shard_rows_->size();
  const int32_t* it = std::lower_bound(begin, end, static_cast<int32_t>(r));
  if (it == end || *it != r)
    DataLoss(dir_ + ": row " + std::to_string(r) + " is not in this worker's shard (" +
             std::to_string(shard_rows_->size()) + " of " + std::to_string(rows_) +
             " rows): the run reads rows its shard plan did not expect");
  return it - begin;
}

}  // namespace trm::data
