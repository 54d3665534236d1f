// Coordinator::Backup (a snapshot to stream) and RestoreBackup (trm-coordinator --restore).
#include "trm/coordinator/backup.h"

#include <spdlog/spdlog.h>

#include <chrono>
#include <filesystem>
#include <set>
#include <utility>
#include <vector>

#include "coordinator_impl.h"
#include "job_lifecycle.h"
#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/common/sha256.h"
#include "trm/coordinator/coordinator.h"
#include "trm/coordinator/store.h"
#include "trm/rpc/tar.h"
#include "trm/rpc/transfer.h"

namespace fs = std::filesystem;

namespace trm::coordinator {
namespace {

// The meta key RestoreBackup leaves for the next Coordinator: the restore's time.
constexpr const char kRestorePending[] = "restore_pending_unix_ms";

// A hard link where the filesystem allows one (links are staged beside their originals), else a copy.
void LinkOrCopy(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  fs::create_directories(to.parent_path(), ec);
  if (ec) FileError(to.parent_path().string() + ": cannot create", ec);
  fs::create_hard_link(from, to, ec);
  if (!ec) return;
  fs::copy_file(from, to, ec);
  if (ec) FileError(from.string() + ": cannot copy it into the backup", ec);
}

void AddFile(v1::Manifest* m, const std::string& path, uint64_t size, const std::string& sha256) {
  rpc::TarHeader(path, size);  // a path no tar header holds fails now, not at the client
  auto* f = m->add_files();
  f->set_path(path);
  f->set_size(size);
  f->set_sha256(sha256);
  m->set_total_bytes(m->total_bytes() + size);
}

// A directory of files (a checkpoint, a dataset) staged as `prefix`/PATH.
struct Tree {
  std::string prefix;
  v1::Manifest files;
};

void LinkTree(const fs::path& stage, const fs::path& dir, const Tree& t) {
  for (const auto& f : t.files.files()) LinkOrCopy(dir / f.path(), stage / t.prefix / f.path());
}

void AddTree(v1::Manifest* m, const Tree& t) {
  for (const auto& f : t.files.files()) AddFile(m, t.prefix + "/" + f.path(), f.size(), f.sha256());
}

void AddWhole(v1::Manifest* m, const fs::path& stage, const std::string& path) {
  const std::string p = (stage / path).string();
  std::error_code ec;
  const uint64_t size = fs::file_size(p, ec);
  if (ec) FileError(p + ": cannot read its size", ec);
  AddFile(m, path, size, Sha256File(p));
}

// Where a backup's links to the files under `sub` (checkpoints, datasets) are staged: beside
// them, since a hard link cannot cross filesystems and either may be a mount of its own.
fs::path LinkStage(const std::string& data_dir, const char* sub, const fs::path& stage) {
  return fs::path(data_dir) / sub / ("." + stage.filename().string());
}

void RemoveStage(const std::string& data_dir, const fs::path& stage) {
  std::error_code ec;
  for (const char* sub : {"checkpoints", "datasets"}) fs::remove_all(LinkStage(data_dir, sub, stage), ec);
  fs::remove_all(stage, ec);
  if (ec) spdlog::warn("backup: cannot remove {}: {}", stage.string(), ec.message());
}

}  // namespace

void RemoveBackupStages(const std::string& data_dir) {
  std::error_code ec;
  for (const char* sub : {"checkpoints", "datasets"})
    for (const auto& e : fs::directory_iterator(fs::path(data_dir) / sub, ec))
      if (e.path().filename().string().rfind(".backup-", 0) == 0) fs::remove_all(e.path(), ec);
}

FileSet Coordinator::Backup(const Principal& who) {
  if (!who.admin()) ThrowError(Code::kPermissionDenied, "Backup: admins only; " + who.name + " is not one");
  if (impl_->backup_running.exchange(true))
    ThrowError(Code::kResourceExhausted, "a backup is already running; try again once it has finished");
  auto& d = *impl_;
  const fs::path stage = d.NewUploadDir("backup");
  try {
    std::error_code ec;
    fs::create_directories(stage, ec);
    if (ec) FileError(stage.string() + ": cannot create", ec);
    for (const char* sub : {"checkpoints", "datasets"}) {
      const fs::path links = LinkStage(d.opt.data_dir, sub, stage);
      fs::create_directories(links, ec);
      if (ec) FileError(links.string() + ": cannot create", ec);
      fs::create_directory_symlink(fs::path("..") / ".." / sub / links.filename(), stage / sub, ec);
      if (ec) FileError((stage / sub).string() + ": cannot create", ec);
    }
    std::vector<Tree> checkpoints;
    std::set<std::string> datasets;
    {
      // The database a few pages at a time, the state lock released in between (heartbeats and
      // reports go on; their changes are carried into the copy). Under the lock hold that
      // completes it, the checkpoints it lists are linked, before retention could delete one.
      Store::OnlineBackup copy(d.store.get(), (stage / "coordinator.db").string());
      for (;;) {
        std::lock_guard<std::mutex> l(d.mu);
        if (!copy.Step(256)) continue;
        for (const auto& [id, rec] : d.jobs)
          for (const auto& c : d.store->ListCheckpoints(id)) {
            checkpoints.push_back({"checkpoints/" + id + "/" + c.info().name(), c.manifest()});
            LinkTree(stage, d.CheckpointDir(id, c.info().name()), checkpoints.back());
          }
        for (const auto& e : fs::directory_iterator(fs::path(d.opt.data_dir) / "datasets")) {
          const std::string name = e.path().filename().string();
          const std::string suffix = ".manifest";
          if (name.size() == 64 + suffix.size() && name.compare(64, suffix.size(), suffix) == 0)
            datasets.insert(name.substr(0, 64));
        }
        break;
      }
    }
    // The database first: a restore reads it before the rest.
    v1::Manifest out;
    out.set_name("backup-" + std::to_string(d.Now()));
    AddWhole(&out, stage, "coordinator.db");
    // Datasets are written once under their content hash (files before the .manifest) and
    // never deleted: no lock needed.
    for (const auto& hash : datasets) {
      const fs::path dir = d.DatasetDir(hash);
      Tree t{"datasets/" + hash, {}};
      if (!t.files.ParseFromString(ReadFile(dir.string() + ".manifest"))) DataLoss(dir.string() + ".manifest: corrupt");
      LinkOrCopy(dir.string() + ".manifest", stage / (t.prefix + ".manifest"));
      AddWhole(&out, stage, t.prefix + ".manifest");
      LinkTree(stage, dir, t);
      AddTree(&out, t);
    }
    for (const auto& t : checkpoints) AddTree(&out, t);
    out.set_content_sha256(rpc::ContentHash(out));
    spdlog::info("backup {}: {} checkpoints, {} datasets, {} files, {} bytes", out.name(), checkpoints.size(),
                 datasets.size(), out.files_size(), out.total_bytes());
    return FileSet{stage.string(), out};
  } catch (...) {
    RemoveStage(d.opt.data_dir, stage);
    impl_->backup_running = false;
    throw;
  }
}

void Coordinator::EndBackup(const FileSet& backup) {
  RemoveStage(impl_->opt.data_dir, backup.dir);
  impl_->backup_running = false;
}

void Coordinator::Impl::VoidRestoredAttempts() {
  const auto restored = store->GetMeta(kRestorePending);
  if (!restored) return;
  std::vector<std::string> running;
  for (const auto& [id, r] : jobs)
    if (r.attempt().active()) running.push_back(id);
  for (const auto& id : running)
    Mutate(id, [&](v1::JobRecord* rec) {
      EmitState(rec, Restored(rec, "the coordinator was restored from a backup taken while it ran", Now()));
    });
  Store::Transaction tx(store.get());
  store->DeleteMeta(kRestorePending);
  tx.Commit();
  spdlog::info("restored state: {} running attempt(s) void, their jobs queued again", running.size());
}

RestoreResult RestoreBackup(const std::string& archive, const std::string& data_dir) {
  std::error_code ec;
  const fs::path db = fs::path(data_dir) / "coordinator.db";
  if (fs::exists(db, ec))
    ThrowError(Code::kFailedPrecondition, "--restore: " + db.string() +
                                              " exists; restore into a new (or empty) --data-dir, a restore never "
                                              "replaces a live state");
  fs::create_directories(data_dir, ec);
  if (ec) FileError(data_dir + ": cannot create", ec);
  const fs::path staging = fs::path(data_dir) / ".restore";
  fs::remove_all(staging, ec);
  RestoreResult result;
  try {
    const v1::Manifest m = rpc::ExtractTarTransfer(archive, rpc::kBackupManifestMember, staging.string());
    if (m.files_size() == 0 || m.files(0).path() != "coordinator.db")
      DataLoss(archive + ": holds no coordinator.db (not a coordinator backup)");
    result.files = m.files_size();
    result.bytes = m.total_bytes();
    {
      // Refuses a newer release's schema; migrates an older one; marks the running attempts void.
      Store restored((staging / "coordinator.db").string());
      Store::Transaction tx(&restored);
      restored.SetMeta(kRestorePending, static_cast<int64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                                                 std::chrono::system_clock::now().time_since_epoch())
                                                                 .count()));
      tx.Commit();
    }
    // Every destination is checked before anything moves; what moved goes back if a later move
    // fails, so a failed restore leaves the data directory as it was (and may be retried).
    const char* const subs[] = {"datasets", "checkpoints"};
    for (const char* sub : subs) {
      const fs::path to = fs::path(data_dir) / sub;
      if (fs::exists(to, ec) && (!fs::is_directory(to, ec) || !fs::is_empty(to, ec)))
        ThrowError(Code::kFailedPrecondition, "--restore: " + to.string() + " is not an empty directory; restore into a new --data-dir");
    }
    std::vector<std::pair<fs::path, fs::path>> moved;
    try {
      for (const char* sub : subs) {
        const fs::path from = staging / sub, to = fs::path(data_dir) / sub;
        fs::create_directories(from, ec);  // a backup without datasets or checkpoints
        fs::remove(to, ec);  // empty (checked)
        fs::rename(from, to, ec);
        if (ec) FileError(to.string() + ": cannot move the restored files into place", ec);
        moved.emplace_back(from, to);
      }
      // The database last: a data dir without it is one a restore may be retried into.
      for (const char* f : {"coordinator.db-wal", "coordinator.db-shm"}) fs::remove(staging / f, ec);
      fs::rename(staging / "coordinator.db", db, ec);
      if (ec) FileError(db.string() + ": cannot move the restored database into place", ec);
    } catch (...) {
      for (auto it = moved.rbegin(); it != moved.rend(); ++it) {
        std::error_code back;
        fs::rename(it->second, it->first, back);
        if (back) spdlog::error("--restore: cannot move {} back: {}", it->second.string(), back.message());
      }
      throw;
    }
    FsyncDirectory(data_dir);
    fs::remove_all(staging, ec);
  } catch (...) {
    fs::remove_all(staging, ec);
    throw;
  }
  spdlog::info("restored {} into {}: {} files, {} bytes", archive, data_dir, result.files, result.bytes);
  return result;
}

}  // namespace trm::coordinator
