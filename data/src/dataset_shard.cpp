#include "trm/data/dataset_shard.h"

#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/data/dataset_reader.h"
#include "trm/data/npy.h"

namespace fs = std::filesystem;

namespace trm::data {
namespace {

void LinkOrCopy(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::create_directories(to.parent_path(), ec);
  if (ec) FileError(to.parent_path().string() + ": cannot create", ec.value());
  fs::create_hard_link(from, to, ec);
  if (!ec) return;
  fs::copy_file(from, to, ec);
  if (ec) FileError(to.string() + ": cannot copy from " + from.string(), ec.value());
}

}  // namespace

void WriteDatasetShard(const std::string& dataset_dir, const std::string& split, const std::vector<int64_t>& rows,
                       const std::string& out_dir) {
  const DatasetSplit full = DatasetSplit::Open(dataset_dir, split);
  if (full.is_shard()) InvalidArgument(full.dir() + ": is already a shard");
  if (full.rows() > std::numeric_limits<int32_t>::max())
    InvalidArgument(full.dir() + ": " + std::to_string(full.rows()) + " rows: too many for a shard's int32 row ids");
  for (size_t i = 0; i < rows.size(); ++i) {
    if (rows[i] < 0 || rows[i] >= full.rows() || (i > 0 && rows[i] <= rows[i - 1]))
      InvalidArgument("dataset shard: rows must be increasing and below " + std::to_string(full.rows()) +
                      " (entry " + std::to_string(i) + ")");
  }
  const fs::path out(out_dir);
  const fs::path tmp = out.string() + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    const fs::path src(dataset_dir);
    const fs::path inputs = fs::path(split) / "all__inputs.npy", labels = fs::path(split) / "all__labels.npy";
    for (fs::recursive_directory_iterator it(src, ec), end; !ec && it != end; it.increment(ec)) {
      if (!it->is_regular_file()) continue;
      const fs::path rel = fs::relative(it->path(), src);
      if (rel == inputs || rel == labels) continue;
      LinkOrCopy(it->path(), tmp / rel);
    }
    if (ec) FileError(dataset_dir + ": cannot list", ec.value());
    const int64_t k = static_cast<int64_t>(rows.size()), len = full.seq_len();
    for (const auto& [rel, pick] : {std::pair<fs::path, bool>{inputs, true}, {labels, false}}) {
      fs::create_directories((tmp / rel).parent_path(), ec);
      NpyInt32Writer w((tmp / rel).string(), {k, len});
      for (int64_t r : rows) w.Write(pick ? full.inputs(r) : full.labels(r), static_cast<size_t>(len));
      w.Close();
    }
    {
      NpyInt32Writer w((tmp / split / "shard_rows.npy").string(), {k});
      for (int64_t r : rows) {
        const int32_t id = static_cast<int32_t>(r);
        w.Write(&id, 1);
      }
      w.Close();
    }
    WriteFileAtomic((tmp / split / "shard.json").string(), nlohmann::json{{"rows", full.rows()}}.dump() + "\n");
    fs::rename(tmp, out, ec);
    if (ec) FileError(out_dir + ": cannot move the shard into place", ec.value());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace trm::data
