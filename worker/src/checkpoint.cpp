#include "trm/worker/checkpoint.h"

#include <fcntl.h>
#include <stdio.h>  // renameat2
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <set>

#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/common/sha256.h"
#include "trm/model/safetensors.h"
#include "trm/model/tensor_io.h"

namespace trm::worker {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr int kManifestFormat = 1;
constexpr const char* kManifest = "manifest.json";
constexpr const char* kTmpPrefix = ".tmp-step_";  // every temporary directory of ours starts so

void FsyncPath(const fs::path& p, bool directory) {
  if (directory) return FsyncDirectory(p.string());
  int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) FileError(p.string() + ": cannot open to fsync", errno);
  const int rc = ::fsync(fd), err = errno;
  ::close(fd);
  if (rc != 0) FileError(p.string() + ": fsync failed", err);
}

std::map<std::string, at::Tensor> ReadAll(const fs::path& path, json* arch = nullptr) {
  model::SafetensorsFile f = model::SafetensorsFile::Open(path.string());
  std::map<std::string, at::Tensor> out;
  for (const auto& n : f.Names()) out[n] = model::LoadTensor(f, n);
  if (arch) {
    auto it = f.metadata().find("arch");
    if (it != f.metadata().end()) {
      try {
        *arch = json::parse(it->second);
      } catch (const json::exception& e) {
        DataLoss(path.string() + ": metadata 'arch' is not valid JSON: " + e.what());
      }
    }
  }
  return out;
}

// Every regular file under dir, as '/'-separated relative paths, sorted; manifest.json excluded.
std::vector<std::string> FilesUnder(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    std::error_code ec2;
    if (!it->is_regular_file(ec2)) continue;
    std::string rel = it->path().lexically_relative(dir).generic_string();
    if (rel != kManifest) out.push_back(rel);
  }
  if (ec) {
    if (ec == std::errc::no_such_file_or_directory) NotFound(dir.string() + ": " + ec.message());
    FileError(dir.string() + ": cannot list", ec);
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Files the loaders read: an unlisted one would be loaded unverified.
bool Critical(const std::string& rel) {
  auto ends_with = [&](const std::string& suffix) {
    return rel.size() >= suffix.size() && rel.compare(rel.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return rel == "state.json" || ends_with(".safetensors") || rel.rfind("tokenizer/", 0) == 0;
}

// A manifest path must stay inside the checkpoint.
bool SafeRelative(const std::string& rel) {
  if (rel.empty() || rel[0] == '/') return false;
  for (const auto& part : fs::path(rel)) {
    if (part == ".." || part == ".") return false;
  }
  return true;
}

// Phase 2: puts tmp in place as final. An existing final (the same step saved again) is swapped
// out atomically, never removed first, so step_<N> is always either the old or the new one.
void CommitRename(const fs::path& tmp, const fs::path& final_dir) {
  if (::rename(tmp.c_str(), final_dir.c_str()) == 0) return;
  const int err = errno;
  if (err != EEXIST && err != ENOTEMPTY) {
    FileError(final_dir.string() + ": cannot rename checkpoint into place", err);
  }
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, final_dir.c_str(), RENAME_EXCHANGE) == 0) {
    std::error_code ec;
    fs::remove_all(tmp, ec);  // now the old checkpoint, under the temporary name
    return;
  }
  // No RENAME_EXCHANGE on this filesystem: move the old one aside first (the previous
  // checkpoints stay, so a crash in between loses only this step's older copy).
  const fs::path old = tmp.string() + "-old";
  if (::rename(final_dir.c_str(), old.c_str()) != 0)
    FileError(final_dir.string() + ": cannot move the existing checkpoint aside", errno);
  if (::rename(tmp.c_str(), final_dir.c_str()) != 0)
    FileError(final_dir.string() + ": cannot rename checkpoint into place", errno);
  std::error_code ec;
  fs::remove_all(old, ec);
}

// Leftovers of a crash (or of an interrupted deletion): never loaded, removed here.
void RemoveTemporaries(const fs::path& run_dir, const fs::path& keep = {}) {
  std::error_code ec;
  std::vector<fs::path> doomed;
  for (fs::directory_iterator it(run_dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind(kTmpPrefix, 0) == 0 && it->path() != keep) doomed.push_back(it->path());
  }
  for (const auto& p : doomed) {
    std::error_code ec2;
    fs::remove_all(p, ec2);
    if (ec2) spdlog::warn("{}: cannot remove a leftover temporary checkpoint directory: {}", p.string(), ec2.message());
    else spdlog::info("{}: removed a leftover temporary checkpoint directory", p.string());
  }
}

// Deletes a committed checkpoint: renamed out of the step_<N> namespace first, so a crash never
// leaves a half-deleted step_<N> behind.
void DeleteCheckpoint(const fs::path& dir) {
  const fs::path doomed =
      dir.parent_path() / (kTmpPrefix + dir.filename().string().substr(5) + "-" + std::to_string(::getpid()) + "-deleted");
  std::error_code ec;
  fs::remove_all(doomed, ec);
  if (::rename(dir.c_str(), doomed.c_str()) != 0) {
    spdlog::warn("{}: cannot delete an old checkpoint: {}", dir.string(), std::strerror(errno));
    return;
  }
  fs::remove_all(doomed, ec);
}

json BuildManifest(const fs::path& dir, int64_t step) {
  json files = json::array();
  for (const std::string& rel : FilesUnder(dir)) {
    const fs::path p = dir / rel;
    std::error_code ec;
    const uintmax_t size = fs::file_size(p, ec);
    if (ec) FileError(p.string() + ": cannot stat", ec);
    files.push_back({{"path", rel}, {"size", size}, {"sha256", Sha256File(p.string())}});
  }
  return {{"format", kManifestFormat}, {"step", step}, {"files", files}};
}

}  // namespace

Verified VerifyCheckpoint(const std::string& dir) {
  const fs::path d(dir);
  std::error_code ec;
  if (!fs::is_directory(d, ec)) NotFound(dir + ": checkpoint directory not found");
  const fs::path mpath = d / kManifest;
  if (!fs::exists(mpath, ec)) {
    if (!fs::exists(d / "state.json", ec)) DataLoss(dir + ": not a checkpoint (neither manifest.json nor state.json)");
    spdlog::warn("{}: legacy checkpoint without manifest.json: loaded without verification", dir);
    return Verified::kLegacy;
  }
  json m;
  try {
    m = json::parse(ReadFile(mpath.string()));
  } catch (const json::exception& e) {
    DataLoss(mpath.string() + ": invalid JSON: " + e.what());
  }
  if (!m.is_object() || m.value("format", json()) != json(kManifestFormat) || !m.contains("step") ||
      !m["step"].is_number_integer() || !m.contains("files") || !m["files"].is_array()) {
    DataLoss(mpath.string() + ": not a format-1 manifest (expected {\"format\": 1, \"step\", \"files\"})");
  }
  int64_t dir_step;
  if (ParseStepDirName(d.filename().string(), &dir_step) && dir_step != m["step"].get<int64_t>()) {
    DataLoss(mpath.string() + ": manifest is for step " + m["step"].dump() + ", the directory is step_" +
             std::to_string(dir_step));
  }
  std::set<std::string> listed;
  for (const json& f : m["files"]) {
    if (!f.is_object() || !f.contains("path") || !f["path"].is_string() || !f.contains("size") ||
        !f["size"].is_number_unsigned() || !f.contains("sha256") || !f["sha256"].is_string()) {
      DataLoss(mpath.string() + ": malformed file entry " + f.dump());
    }
    const std::string rel = f["path"].get<std::string>();
    if (!SafeRelative(rel)) DataLoss(mpath.string() + ": file path '" + rel + "' leaves the checkpoint");
    listed.insert(rel);
    const fs::path p = d / rel;
    if (!fs::is_regular_file(p, ec)) DataLoss(p.string() + ": missing (listed in manifest.json)");
    const uint64_t want = f["size"].get<uint64_t>(), have = fs::file_size(p, ec);
    if (ec) DataLoss(p.string() + ": cannot stat (listed in manifest.json): " + ec.message());
    if (have != want) {
      DataLoss(p.string() + ": size " + std::to_string(have) + " bytes, manifest.json says " + std::to_string(want));
    }
    const std::string sha = Sha256File(p.string());
    if (sha != f["sha256"].get<std::string>()) {
      DataLoss(p.string() + ": SHA-256 " + sha + " differs from manifest.json's " + f["sha256"].get<std::string>());
    }
  }
  for (const char* required : {"state.json", "model.safetensors"}) {
    if (!listed.count(required)) DataLoss(mpath.string() + ": does not list " + required);
  }
  for (const std::string& rel : FilesUnder(d)) {
    if (listed.count(rel)) continue;
    if (Critical(rel)) DataLoss((d / rel).string() + ": not listed in manifest.json");
    spdlog::warn("{}: not listed in manifest.json (ignored)", (d / rel).string());
  }
  return Verified::kOk;
}

std::string QuarantineCheckpoint(const std::string& dir, const std::string& reason) {
  const int64_t now =
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
  const std::string base = fs::path(dir).lexically_normal().string();
  std::string target = base + ".quarantined-" + std::to_string(now);
  for (int i = 2; fs::exists(target); ++i) target = base + ".quarantined-" + std::to_string(now) + "-" + std::to_string(i);
  if (::rename(base.c_str(), target.c_str()) != 0)
    FileError(dir + ": cannot quarantine it (it failed: " + reason + "), rename to " + target, errno);
  if (fs::path(base).has_parent_path()) {
    try {
      FsyncPath(fs::path(base).parent_path(), true);
    } catch (const Error&) {
    }
  }
  spdlog::error("checkpoint failed verification: {}; quarantined as {}", reason, target);
  return target;
}

std::string ResumeCheckpoint(const std::string& run_dir, bool repair) {
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return "";
  if (repair) RemoveTemporaries(run_dir);
  auto all = ListCheckpoints(run_dir);
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    try {
      VerifyCheckpoint(it->second);
      return it->second;
    } catch (const Error& e) {
      if (e.code() == Code::kNotFound && !fs::exists(it->second, ec)) continue;  // renamed away meanwhile
      if (e.code() != Code::kDataLoss && e.code() != Code::kNotFound) throw;
      if (repair) {
        QuarantineCheckpoint(it->second, e.what());
      } else {
        spdlog::error("checkpoint failed verification, skipped: {}", e.what());
      }
    }
  }
  return "";
}

std::string LatestCheckpoint(const std::string& run_dir) { return ResumeCheckpoint(run_dir, /*repair=*/false); }

std::string SaveCheckpoint(const std::string& run_dir, const CheckpointContents& c, int64_t keep) {
  if (!c.state.contains("step")) Internal("SaveCheckpoint: state has no step");
  const int64_t step = c.state["step"].get<int64_t>();
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) FileError(run_dir + ": cannot create run directory", ec.value());
  RemoveTemporaries(run_dir);
  const fs::path final_dir = fs::path(run_dir) / ("step_" + std::to_string(step));
  const fs::path tmp = fs::path(run_dir) / (kTmpPrefix + std::to_string(step) + "-" + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) FileError(tmp.string() + ": cannot create", ec.value());
  try {
    // Phase 1: every file under the temporary name, each fsynced, then the manifest.
    std::map<std::string, std::string> meta = {{"format", "trm-checkpoint-v1"}, {"arch", c.arch.dump()}};
    model::SaveTensors((tmp / "model.safetensors").string(), c.ema.empty() ? c.model : c.ema, meta);
    if (!c.ema.empty()) model::SaveTensors((tmp / "weights.safetensors").string(), c.model, meta);
    if (!c.optimizer.empty()) model::SaveTensors((tmp / "optimizer.safetensors").string(), c.optimizer);
    if (!c.train_state.empty()) model::SaveTensors((tmp / "train_state.safetensors").string(), c.train_state);
    if (!c.tokenizer_dir.empty() && fs::is_directory(c.tokenizer_dir)) {
      fs::copy(c.tokenizer_dir, tmp / "tokenizer", fs::copy_options::recursive, ec);
      if (ec) FileError(c.tokenizer_dir + ": cannot copy tokenizer into the checkpoint", ec.value());
      for (fs::recursive_directory_iterator it(tmp / "tokenizer", ec), end; !ec && it != end; it.increment(ec)) {
        std::error_code ec2;
        if (it->is_directory(ec2)) FsyncPath(it->path(), true);
      }
      if (ec) FileError((tmp / "tokenizer").string() + ": cannot list", ec);
      FsyncPath(tmp / "tokenizer", true);
    }
    json state = c.state;
    state["arch"] = c.arch;
    WriteFileAtomic((tmp / "state.json").string(), state.dump(2) + "\n");
    for (const std::string& rel : FilesUnder(tmp)) FsyncPath(tmp / rel, false);
    WriteFileAtomic((tmp / kManifest).string(), BuildManifest(tmp, step).dump(2) + "\n");
    FsyncPath(tmp, true);
    // Phase 2: the commit.
    CommitRename(tmp, final_dir);
    FsyncPath(run_dir, true);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  if (keep > 0) {
    // Committed ones only (quarantined and temporary directories are not listed); the newest and
    // the one just written always stay.
    auto all = ListCheckpoints(run_dir);
    const size_t n = all.size();
    for (size_t i = 0; i + static_cast<size_t>(keep) < n && i + 1 < n; ++i) {
      if (all[i].first == step) continue;
      DeleteCheckpoint(all[i].second);
    }
  }
  return final_dir.string();
}

LoadedCheckpoint LoadCheckpoint(const std::string& dir, bool inference_only, bool verify) {
  const fs::path d(dir);
  if (!fs::is_directory(d)) NotFound(dir + ": checkpoint directory not found");
  if (verify) VerifyCheckpoint(dir);
  LoadedCheckpoint out;
  out.dir = dir;
  const fs::path state_path = d / "state.json";
  if (!fs::exists(state_path)) DataLoss(dir + ": not a complete checkpoint (no state.json)");
  try {
    out.state = json::parse(ReadFile(state_path.string()));
  } catch (const json::exception& e) {
    DataLoss(state_path.string() + ": invalid JSON: " + e.what());
  }
  out.model = ReadAll(d / "model.safetensors", &out.arch);
  if (out.arch.is_null() && out.state.contains("arch")) out.arch = out.state["arch"];
  if (inference_only) return out;
  out.weights = fs::exists(d / "weights.safetensors") ? ReadAll(d / "weights.safetensors") : out.model;
  if (fs::exists(d / "optimizer.safetensors")) out.optimizer = ReadAll(d / "optimizer.safetensors");
  if (fs::exists(d / "train_state.safetensors")) out.train_state = ReadAll(d / "train_state.safetensors");
  return out;
}

}  // namespace trm::worker
