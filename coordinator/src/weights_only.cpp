#include "weights_only.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/rpc/transfer.h"

namespace fs = std::filesystem;

namespace trm::coordinator {

bool IsWeightsFile(const std::string& path) {
  return path == "model.safetensors" || path == "state.json" || path.rfind("tokenizer/", 0) == 0;
}

FileSet WeightsOnlyFiles(const FileSet& full, int64_t step, const std::string& dir) {
  const std::string mark = dir + ".manifest";
  v1::Manifest m;
  try {
    if (m.ParseFromString(ReadFile(mark))) return FileSet{dir, m};
  } catch (const Error& e) {
    if (e.code() != Code::kNotFound) throw;
  }
  std::error_code ec;
  fs::remove_all(dir, ec);  // a build cut short before its mark was written
  nlohmann::json files = nlohmann::json::array();
  bool has_model = false;
  for (const auto& f : full.manifest.files()) {
    if (!IsWeightsFile(f.path())) continue;
    has_model = has_model || f.path() == "model.safetensors";
    const fs::path from = fs::path(full.dir) / f.path(), to = fs::path(dir) / f.path();
    fs::create_directories(to.parent_path(), ec);
    if (ec) FileError(to.parent_path().string() + ": cannot create", ec);
    fs::create_hard_link(from, to, ec);
    if (ec) {
      ec.clear();
      fs::copy_file(from, to, fs::copy_options::overwrite_existing, ec);
      if (ec) FileError(to.string() + ": cannot link or copy " + from.string(), ec);
    }
    files.push_back({{"path", f.path()}, {"size", f.size()}, {"sha256", f.sha256()}});
  }
  if (!has_model) DataLoss(full.dir + ": checkpoint " + full.manifest.name() + " has no model.safetensors");
  const nlohmann::json manifest = {{"format", 1}, {"step", step}, {"files", files}};
  WriteFileAtomic((fs::path(dir) / "manifest.json").string(), manifest.dump(2) + "\n");
  m = rpc::BuildManifest(dir, full.manifest.name());  // hashes what is there: a torn copy shows
  m.set_content_sha256(rpc::ContentHash(m));
  WriteFileAtomic(mark, m.SerializeAsString());
  return FileSet{dir, m};
}

void RemoveWeightsOnly(const std::string& dir) {
  std::error_code ec;
  fs::remove(dir + ".manifest", ec);
  fs::remove_all(dir, ec);
}

}  // namespace trm::coordinator
