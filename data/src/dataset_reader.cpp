#include "trm/data/dataset_reader.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "trm/common/error.h"
#include "trm/common/file_util.h"

namespace fs = std::filesystem;

namespace trm::data {

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
  return DatasetSplit(dir, meta, std::move(inputs), std::move(labels));
}

}  // namespace trm::data
