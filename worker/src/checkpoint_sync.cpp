#include "checkpoint_sync.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <vector>

#include "collective_bytes.h"
#include "trm/common/error.h"
#include "trm/common/sha256.h"
#include "trm/worker/checkpoint.h"

namespace trm::worker {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Files travel in pieces of this size: one broadcast each, well inside the collective timeout
// on any link, and a bounded buffer on every rank (GPU memory included, under NCCL).
constexpr int64_t kPieceBytes = int64_t{64} << 20;

// What identifies a checkpoint's contents: its manifest lists every file's size and SHA-256, so
// equal manifests mean equal checkpoints once each side verifies against its own. Legacy
// checkpoints (no manifest) fall back to state.json. "" when neither exists.
std::string ContentDigest(const fs::path& dir) {
  std::error_code ec;
  if (fs::is_regular_file(dir / "manifest.json", ec)) return Sha256File((dir / "manifest.json").string());
  if (fs::is_regular_file(dir / "state.json", ec)) return Sha256File((dir / "state.json").string());
  return "";
}

// Rank 0's description of its choice: {"name", "digest", "files": [{"path", "size"}]}, or
// {"error", "code"} when it could not choose.
json Describe(const std::string& dir) {
  json files = json::array();
  if (dir.empty()) return {{"name", ""}, {"digest", ""}, {"files", files}};
  std::vector<std::pair<std::string, uint64_t>> list;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    if (it->is_regular_file()) {
      list.emplace_back(fs::relative(it->path(), dir).generic_string(), static_cast<uint64_t>(it->file_size()));
    }
  }
  if (ec) FileError(dir + ": cannot list the checkpoint's files", ec);
  std::sort(list.begin(), list.end());
  for (const auto& [path, size] : list) files.push_back({{"path", path}, {"size", size}});
  return {{"name", fs::path(dir).filename().string()}, {"digest", ContentDigest(dir)}, {"files", files}};
}

// Whether `dir` holds the checkpoint rank 0 described, intact.
bool HaveCopy(const std::string& dir, const std::string& digest) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) return false;
  try {
    if (ContentDigest(dir) != digest) {
      spdlog::warn("{}: not the checkpoint rank 0 resumes from (another run's, or older): receiving rank 0's", dir);
      return false;
    }
    VerifyCheckpoint(dir);
    return true;
  } catch (const Error& e) {
    spdlog::warn("{}: this rank's copy is unusable ({}): receiving rank 0's", dir, e.what());
    return false;
  }
}

// Streams every file of rank 0's checkpoint to all ranks; the ones with `receive` write them
// under `into`. Every rank takes part in every broadcast.
void Transfer(Collective& comm, c10::Device device, const json& desc, const std::string& source, bool receive,
              const fs::path& into) {
  std::vector<char> piece;
  for (const auto& f : desc["files"]) {
    const std::string rel = f["path"].get<std::string>();
    const int64_t size = static_cast<int64_t>(f["size"].get<uint64_t>());
    std::ifstream in;
    std::ofstream out;
    if (comm.rank() == 0) {
      in.open(fs::path(source) / rel, std::ios::binary);
      if (!in) IoError((fs::path(source) / rel).string() + ": cannot open to send it");
    } else if (receive) {
      std::error_code ec;
      fs::create_directories((into / rel).parent_path(), ec);
      if (ec) FileError((into / rel).parent_path().string() + ": cannot create", ec);
      out.open(into / rel, std::ios::binary | std::ios::trunc);
      if (!out) FileError((into / rel).string() + ": cannot create", errno);
    }
    for (int64_t done = 0; done < size;) {
      const int64_t n = std::min(kPieceBytes, size - done);
      piece.resize(static_cast<size_t>(n));
      if (comm.rank() == 0 && !in.read(piece.data(), n)) {
        IoError((fs::path(source) / rel).string() + ": short read while sending it");
      }
      BroadcastBytes(comm, device, piece.data(), n);
      if (out.is_open() && !out.write(piece.data(), n)) IoError((into / rel).string() + ": write failed");
      done += n;
    }
    if (out.is_open()) {
      out.close();
      if (!out) IoError((into / rel).string() + ": write failed");
    }
  }
}

}  // namespace

SyncedCheckpoint SyncCheckpoint(Collective* comm, c10::Device device, const std::function<std::string()>& choose,
                                const std::function<std::string(const std::string& name)>& candidate,
                                const std::string& scratch_parent) {
  if (!comm || comm->world() == 1) return {choose(), ""};
  const int rank = comm->rank();
  std::string chosen;
  json desc;
  if (rank == 0) {
    try {
      chosen = choose();
      desc = Describe(chosen);
    } catch (const Error& e) {
      desc = {{"error", e.what()}, {"code", static_cast<int>(e.code())}};
    } catch (const std::exception& e) {
      desc = {{"error", e.what()}, {"code", static_cast<int>(Code::kInternal)}};
    }
  }
  desc = json::parse(BroadcastString(*comm, device, rank == 0 ? desc.dump() : std::string()));
  if (desc.contains("error")) {
    const std::string msg = desc["error"].get<std::string>();
    ThrowError(static_cast<Code>(desc["code"].get<int>()), rank == 0 ? msg : "rank 0 could not pick the checkpoint: " + msg);
  }
  const std::string name = desc["name"].get<std::string>();
  if (name.empty()) return {"", ""};  // nothing to resume: every rank starts afresh

  const std::string mine = rank == 0 ? chosen : candidate(name);
  const bool have = rank == 0 || HaveCopy(mine, desc["digest"].get<std::string>());
  at::Tensor missing = torch::full({1}, have ? 0 : 1, torch::kLong).to(device);
  comm->AllReduceSum(missing);
  const int64_t lacking = missing.cpu().item<int64_t>();
  if (lacking == 0) return {mine, ""};

  int64_t bytes = 0;
  for (const auto& f : desc["files"]) bytes += static_cast<int64_t>(f["size"].get<uint64_t>());
  const auto t0 = std::chrono::steady_clock::now();
  if (rank == 0) {
    spdlog::info("sending checkpoint {} ({:.1f} MiB) to {} rank(s) that have no copy of it", name, bytes / 1048576.0,
                 lacking);
  }
  // Received into this rank's own scratch directory (ranks of one machine may share run_dir),
  // named step_<N> inside it because verification checks the name against the manifest.
  const fs::path scratch = fs::path(scratch_parent) / (".tmp-recv-rank" + std::to_string(rank));
  if (!have) {
    std::error_code ec;
    fs::remove_all(scratch, ec);  // a crashed earlier receive
    fs::create_directories(scratch / name, ec);
    if (ec) FileError((scratch / name).string() + ": cannot create", ec);
  }
  Transfer(*comm, device, desc, chosen, !have, scratch / name);
  if (have) return {mine, ""};
  const std::string received = (scratch / name).string();
  VerifyCheckpoint(received);
  if (ContentDigest(received) != desc["digest"].get<std::string>()) {
    DataLoss(received + ": the received checkpoint differs from rank 0's");
  }
  spdlog::info("rank {}: received checkpoint {} from rank 0 ({:.1f} MiB in {:.1f} s): {} had no copy of it", rank,
               name, bytes / 1048576.0,
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), mine);
  return {received, scratch.string()};
}

}  // namespace trm::worker
