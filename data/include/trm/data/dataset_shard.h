// A worker's part of a built dataset: what the coordinator sends a worker whose ranks read only
// some rows of the training split in a run shorter than its data (docs/control-plane.md,
// "Datasets"). DatasetSplit reads a shard as the whole split with only those rows present.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace trm::data {

// Writes `out_dir` (which must not exist; built under a temporary name, then renamed): every file
// of `dataset_dir` (hard links where the filesystem allows, else copies) except `split`'s
// all__inputs.npy and all__labels.npy, which hold only `rows` (sorted, distinct row ids of that
// split), plus `split`/shard_rows.npy (those ids) and `split`/shard.json ({"rows": whole split}).
// Throws InvalidArgument (bad rows), NotFound / DataLoss (bad dataset), IoError or
// ResourceExhausted (a full disk), naming the file.
void WriteDatasetShard(const std::string& dataset_dir, const std::string& split, const std::vector<int64_t>& rows,
                       const std::string& out_dir);

}  // namespace trm::data
