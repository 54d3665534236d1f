#include "trm/worker/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>

#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/model/safetensors.h"
#include "trm/model/tensor_io.h"

namespace trm::worker {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

void FsyncPath(const fs::path& p, bool directory) {
  int fd = ::open(p.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0) IoError(p.string() + ": cannot open to fsync");
  int rc = ::fsync(fd);
  ::close(fd);
  if (rc != 0 && !directory) IoError(p.string() + ": fsync failed");
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

bool ParseStepDir(const std::string& name, int64_t* step) {
  if (name.rfind("step_", 0) != 0 || name.size() == 5) return false;
  int64_t v = 0;
  for (size_t i = 5; i < name.size(); ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
    v = v * 10 + (name[i] - '0');
  }
  *step = v;
  return true;
}

}  // namespace

std::vector<std::pair<int64_t, std::string>> ListCheckpoints(const std::string& run_dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(run_dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(run_dir, ec)) {
    int64_t step;
    if (e.is_directory() && ParseStepDir(e.path().filename().string(), &step) &&
        fs::exists(e.path() / "state.json")) {
      out.emplace_back(step, e.path().string());
    }
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string LatestCheckpoint(const std::string& run_dir) {
  auto all = ListCheckpoints(run_dir);
  return all.empty() ? "" : all.back().second;
}

std::string SaveCheckpoint(const std::string& run_dir, const CheckpointContents& c, int64_t keep) {
  if (!c.state.contains("step")) Internal("SaveCheckpoint: state has no step");
  const int64_t step = c.state["step"].get<int64_t>();
  std::error_code ec;
  fs::create_directories(run_dir, ec);
  if (ec) IoError(run_dir + ": cannot create run directory: " + ec.message());
  const fs::path final_dir = fs::path(run_dir) / ("step_" + std::to_string(step));
  const fs::path tmp = fs::path(run_dir) / (".tmp-step_" + std::to_string(step) + "-" + std::to_string(::getpid()));
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  if (ec) IoError(tmp.string() + ": cannot create: " + ec.message());
  try {
    std::map<std::string, std::string> meta = {{"format", "trm-checkpoint-v1"}, {"arch", c.arch.dump()}};
    model::SaveTensors((tmp / "model.safetensors").string(), c.ema.empty() ? c.model : c.ema, meta);
    if (!c.ema.empty()) model::SaveTensors((tmp / "weights.safetensors").string(), c.model, meta);
    if (!c.optimizer.empty()) model::SaveTensors((tmp / "optimizer.safetensors").string(), c.optimizer);
    if (!c.train_state.empty()) model::SaveTensors((tmp / "train_state.safetensors").string(), c.train_state);
    if (!c.tokenizer_dir.empty() && fs::is_directory(c.tokenizer_dir)) {
      fs::copy(c.tokenizer_dir, tmp / "tokenizer", fs::copy_options::recursive, ec);
      if (ec) IoError(c.tokenizer_dir + ": cannot copy tokenizer into the checkpoint: " + ec.message());
      for (const auto& e : fs::recursive_directory_iterator(tmp / "tokenizer"))
        if (e.is_regular_file()) FsyncPath(e.path(), false);
    }
    json state = c.state;
    state["arch"] = c.arch;
    WriteFileAtomic((tmp / "state.json").string(), state.dump(2) + "\n");  // written last: marks completeness
    FsyncPath(tmp, true);
    if (fs::exists(final_dir)) fs::remove_all(final_dir);  // same step saved again (e.g. after a restart)
    fs::rename(tmp, final_dir, ec);
    if (ec) IoError(final_dir.string() + ": cannot rename checkpoint into place: " + ec.message());
    FsyncPath(run_dir, true);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  if (keep > 0) {
    auto all = ListCheckpoints(run_dir);
    for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) fs::remove_all(all[i].second, ec);
  }
  return final_dir.string();
}

LoadedCheckpoint LoadCheckpoint(const std::string& dir, bool inference_only) {
  const fs::path d(dir);
  if (!fs::is_directory(d)) NotFound(dir + ": checkpoint directory not found");
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
