// Backups (Coordinator::Backup, the tar file trmctl writes, RestoreBackup), the store's schema
// versions, and the retention of step metrics.
#include <gtest/gtest.h>
#include <sqlite3.h>

#include <fstream>
#include <set>
#include <sstream>

#include "coordinator_fixture.h"
#include "trm/common/file_util.h"
#include "trm/coordinator/backup.h"
#include "trm/coordinator/store.h"
#include "trm/rpc/tar.h"

namespace trm::coordinator {
namespace {

// A backup as trmctl admin backup writes it: the coordinator's stream into a tar file.
void WriteBackup(Coordinator* c, const std::string& path, const Principal& who = {}) {
  const FileSet files = c->Backup(who);
  rpc::TarTransferWriter out(path, rpc::kBackupManifestMember, UINT64_MAX);
  rpc::SendFiles(files.dir, files.manifest, 0, [&](const v1::TransferMessage& m) {
    out.OnMessage(m);
    return true;
  });
  c->EndBackup(files);
  out.Finish();
}

void Sql(const std::string& db, const std::string& sql) {
  sqlite3* h = nullptr;
  ASSERT_EQ(sqlite3_open(db.c_str(), &h), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(h, sql.c_str(), nullptr, nullptr, nullptr), SQLITE_OK) << sqlite3_errmsg(h);
  sqlite3_close(h);
}

TEST_F(CoordinatorTest, BackupMidJobRestoresIntoANewDirectoryAndTheJobResumes) {
  AddWorker("w1", 1);
  Beat("w1");
  const fs::path ds = root_ / "ds";
  fs::create_directories(ds / "train");
  std::ofstream(ds / "train" / "rows.bin") << "some rows";
  const v1::DatasetInfo pushed = Push(ds, "ex");
  const std::string id = c_->SubmitJob(Spec(1));
  c_->Tick();
  ASSERT_EQ(c_->GetJob(id).state(), v1::JOB_RUNNING);
  Report("w1", id, 1, {Metrics(1, 3.5), Metrics(2, 3.0)});
  Upload(id, 1, 1);
  Upload(id, 1, 2);
  const std::string archive = (root_ / "backup.tar").string();
  WriteBackup(c_.get(), archive);
  // The staging areas are gone, and what happens after the snapshot is not in it.
  EXPECT_TRUE(fs::is_empty(root_ / "state" / "tmp"));
  for (const char* sub : {"checkpoints", "datasets"})
    for (const auto& e : fs::directory_iterator(root_ / "state" / sub))
      EXPECT_NE(e.path().filename().string().rfind(".backup-", 0), 0u) << e.path();
  Report("w1", id, 1, {Metrics(3, 2.5)});
  Upload(id, 1, 3);

  const std::string restored = (root_ / "restored").string();
  const RestoreResult r = RestoreBackup(archive, restored);
  EXPECT_GT(r.files, 5);
  CoordinatorOptions o = options_;
  o.data_dir = restored;
  o.config_dir = std::string(TRM_SOURCE_DIR) + "/configs";
  o.now_ms = [this] { return now_; };
  c_ = std::make_unique<Coordinator>(o);
  v1::Job j = c_->GetJob(id);
  // The attempt ran on past the snapshot: void, queued again without using a restart.
  EXPECT_EQ(j.state(), v1::JOB_QUEUED);
  EXPECT_EQ(j.restarts(), 0);
  EXPECT_EQ(j.latest_checkpoint(), "step_2");
  EXPECT_NE(j.message().find("restored from a backup"), std::string::npos) << j.message();
  ASSERT_EQ(c_->ListCheckpoints(id).size(), 2u);
  EXPECT_EQ(c_->GetMetrics(id, 0, 0).size(), 2u);
  const FileSet ckpt = c_->CheckpointFiles(id, "step_2");
  EXPECT_EQ(ReadFile(ckpt.dir + "/model.safetensors"), "weights at 2");
  EXPECT_EQ(ReadFile(c_->DatasetFiles(pushed.content_sha256()).dir + "/train/rows.bin"), "some rows");
  ASSERT_EQ(c_->ListDatasets().size(), 1u);
  // The worker still running the void attempt is told to stop it (one that died would be lost
  // after the heartbeat timeout); then the next attempt resumes from the backup's latest
  // checkpoint.
  c_->Tick();
  EXPECT_EQ(c_->GetJob(id).state(), v1::JOB_QUEUED) << "placed before w1 stopped the void attempt";
  EXPECT_EQ(Beat("w1", {{id, 1}}).stop_size(), 1);
  Beat("w1");
  c_->Tick();
  auto start = Beat("w1");
  ASSERT_EQ(start.start_size(), 1);
  EXPECT_EQ(start.start(0).attempt(), 2);
  EXPECT_EQ(start.start(0).resume_checkpoint(), "step_2");
  Report("w1", id, 2, {Metrics(3, 2.5), Exit(0, 0)});
  EXPECT_EQ(c_->GetJob(id).state(), v1::JOB_SUCCEEDED);
  // Opened again: the void attempts are not voided twice.
  c_.reset();
  c_ = std::make_unique<Coordinator>(o);
  EXPECT_EQ(c_->GetJob(id).state(), v1::JOB_SUCCEEDED);

  // Never over a live state.
  Code code{};
  EXPECT_NE(ErrorOf([&] { RestoreBackup(archive, restored); }, &code).find("exists"), std::string::npos);
  EXPECT_EQ(code, Code::kFailedPrecondition);
}

TEST_F(CoordinatorTest, BackupIsForAdminsAndOneAtATime) {
  Code code{};
  ErrorOf([&] { c_->Backup(Principal{"bob", Role::kSubmit}); }, &code);
  EXPECT_EQ(code, Code::kPermissionDenied);
  const FileSet first = c_->Backup();
  ErrorOf([&] { c_->Backup(); }, &code);
  EXPECT_EQ(code, Code::kResourceExhausted);
  c_->EndBackup(first);
  EXPECT_FALSE(fs::exists(first.dir));
  c_->EndBackup(c_->Backup());
}

TEST_F(CoordinatorTest, DamagedBackupsAreRefusedAndLeaveNothing) {
  AddWorker("w1", 1);
  Beat("w1");
  const std::string id = c_->SubmitJob(Spec(1));
  c_->Tick();
  Upload(id, 1, 1);
  const std::string archive = (root_ / "backup.tar").string();
  WriteBackup(c_.get(), archive);
  const std::string bytes = ReadFile(archive);
  // A flipped byte in the checkpoint's weights, then a truncated copy.
  const size_t at = bytes.find("weights at 1");
  ASSERT_NE(at, std::string::npos);
  std::string flipped = bytes;
  flipped[at] = 'W';
  WriteFileAtomic(archive + ".flipped", flipped);
  WriteFileAtomic(archive + ".short", bytes.substr(0, at + 3));
  const std::string dir = (root_ / "restored").string();
  Code code{};
  std::string why = ErrorOf([&] { RestoreBackup(archive + ".flipped", dir); }, &code);
  EXPECT_EQ(code, Code::kDataLoss);
  EXPECT_NE(why.find("model.safetensors has SHA-256"), std::string::npos) << why;
  EXPECT_FALSE(fs::exists(fs::path(dir) / "coordinator.db"));
  why = ErrorOf([&] { RestoreBackup(archive + ".short", dir); }, &code);
  EXPECT_EQ(code, Code::kDataLoss);
  EXPECT_NE(why.find("truncated"), std::string::npos) << why;
  EXPECT_TRUE(fs::is_empty(dir)) << "a failed restore leaves files behind";
  // Not a backup at all.
  WriteFileAtomic(archive + ".other", std::string(4096, '\0'));
  why = ErrorOf([&] { RestoreBackup(archive + ".other", dir); }, &code);
  EXPECT_NE(why.find("trm-backup.json"), std::string::npos) << why;
  // A destination in the way: refused before anything moves, and the restore can be retried.
  fs::create_directories(fs::path(dir) / "checkpoints");
  WriteFileAtomic((fs::path(dir) / "checkpoints" / "stray").string(), "x");
  why = ErrorOf([&] { RestoreBackup(archive, dir); }, &code);
  EXPECT_EQ(code, Code::kFailedPrecondition);
  EXPECT_NE(why.find("checkpoints is not an empty directory"), std::string::npos) << why;
  EXPECT_FALSE(fs::exists(fs::path(dir) / "datasets"));
  EXPECT_FALSE(fs::exists(fs::path(dir) / "coordinator.db"));
  fs::remove(fs::path(dir) / "checkpoints" / "stray");
  // The intact one restores.
  EXPECT_GT(RestoreBackup(archive, dir).files, 0);
}

TEST_F(CoordinatorTest, TransferWriterChecksEachFileAsItEnds) {
  const fs::path src = root_ / "src";
  fs::create_directories(src / "a");
  std::ofstream(src / "a" / "one") << "first file";
  std::ofstream(src / "empty");
  std::ofstream(src / "two") << std::string(100000, 'x');
  const std::string long_name = std::string(150, 'n');  // past ustar's fields: a GNU long name
  std::ofstream(src / long_name) << "long";
  const v1::Manifest m = rpc::BuildManifest(src.string(), "t");
  const std::string path = (root_ / "t.tar").string();
  {
    rpc::TarTransferWriter out(path, "manifest.json", UINT64_MAX);
    bool tampered = false;
    const std::string why = ErrorOf([&] {
      rpc::SendFiles(src.string(), m, 0, [&](v1::TransferMessage msg) {
        if (msg.has_chunk() && !tampered) {
          (*msg.mutable_chunk()->mutable_data())[0] ^= 1;
          tampered = true;
        }
        out.OnMessage(msg);
        return true;
      });
    });
    EXPECT_NE(why.find("a/one: SHA-256"), std::string::npos) << why;
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".partial"));
  {
    rpc::TarTransferWriter out(path, "manifest.json", UINT64_MAX);
    rpc::SendFiles(src.string(), m, 0, [&](const v1::TransferMessage& msg) {
      out.OnMessage(msg);
      return true;
    });
    out.Finish();
  }
  const v1::Manifest back = rpc::ExtractTarTransfer(path, "manifest.json", (root_ / "out").string());
  EXPECT_EQ(back.content_sha256(), m.content_sha256());
  EXPECT_EQ(ReadFile((root_ / "out" / "two").string()), std::string(100000, 'x'));
  EXPECT_TRUE(fs::exists(root_ / "out" / "empty"));
  EXPECT_EQ(ReadFile((root_ / "out" / long_name).string()), "long");
  // Python's tarfile (and GNU tar) read it as an ordinary archive.
  const std::string cmd = "python3 -c 'import sys, tarfile; print(\" \".join(tarfile.open(sys.argv[1]).getnames()))' " +
                          path + " > " + (root_ / "names").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  EXPECT_EQ(ReadFile((root_ / "names").string()), "manifest.json a/one empty " + long_name + " two\n");
}

TEST(StoreSchema, NewerIsRefusedUnchangedOlderIsMigrated) {
  const fs::path dir = fs::temp_directory_path() / ("trm_schema_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string db = (dir / "coordinator.db").string();
  {
    Store s(db);
    EXPECT_EQ(s.SchemaVersion(), kSchemaVersion);
  }
  Sql(db, "PRAGMA user_version = " + std::to_string(kSchemaVersion + 1));
  const std::string before = ReadFile(db);
  Code code{};
  const std::string why = ErrorOf([&] { Store s(db); }, &code);
  EXPECT_EQ(code, Code::kFailedPrecondition);
  EXPECT_NE(why.find("newer than this trm-coordinator's"), std::string::npos) << why;
  EXPECT_EQ(ReadFile(db), before) << "a refused database was modified";

  // Version 1 (the releases before versions: user_version 0, no event_seq, no metric_retention).
  const std::string v1db = (dir / "v1.db").string();
  Sql(v1db,
      "CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);"
      "CREATE TABLE metrics(job_id TEXT NOT NULL, step INTEGER NOT NULL, eval INTEGER NOT NULL,"
      " data BLOB NOT NULL, PRIMARY KEY(job_id, step, eval));"
      "INSERT INTO metrics VALUES('job-000001', 1, 0, x'');");
  {
    Store s(v1db);
    EXPECT_EQ(s.SchemaVersion(), kSchemaVersion);
    EXPECT_EQ(s.ReadMetrics("job-000001", 0, 0).size(), 1u);
    v1::StepMetrics m;
    m.set_step(2);
    s.AppendMetrics("job-000001", m, 7);
    EXPECT_EQ(s.ReadMetrics("job-000001", 0, 0).size(), 2u);
  }
  fs::remove_all(dir);
}

TEST(StoreRetention, ThinsTrainingPointsToAGridKeepingEvalsCheckpointsAndTheirEvents) {
  const fs::path dir = fs::temp_directory_path() / ("trm_retention_" + std::to_string(::getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  Store s((dir / "coordinator.db").string());
  const std::string job = "job-000001";
  const MetricRetention keep{1000, 64};
  v1::CheckpointRecord ck;
  ck.mutable_info()->set_name("step_777");
  ck.mutable_info()->set_step(777);
  s.PutCheckpoint(job, ck);
  uint64_t seq = 0;
  const int64_t steps = 20000;
  {
    Store::Transaction tx(&s);
    for (int64_t step = 1; step <= steps; ++step) {
      v1::JobEvent e;
      e.set_seq(++seq);
      e.mutable_metrics()->set_step(step);
      s.AppendEvent(job, e);
      s.AppendMetrics(job, e.metrics(), seq, keep);
      if (step % 500 == 0) {
        v1::StepMetrics ev;
        ev.set_step(step);
        ev.set_eval(true);
        s.AppendMetrics(job, ev, 0, keep);
      }
    }
    tx.Commit();
  }
  const auto points = s.ReadMetrics(job, 0, 0);
  int64_t train = 0, evals = 0;
  std::set<int64_t> kept;
  for (const auto& p : points) {
    if (p.eval()) {
      ++evals;
      continue;
    }
    ++train;
    kept.insert(p.step());
  }
  EXPECT_EQ(evals, steps / 500);
  EXPECT_LE(train, keep.max_points);
  const int64_t stride = s.MetricStride(job);
  // The finest power-of-two grid that fits: 2 x 20,000 / 1,000 = 40 steps, so 64.
  EXPECT_EQ(stride, 64);
  EXPECT_GE(train, steps / stride);
  EXPECT_TRUE(kept.count(777)) << "the checkpoint's step was thinned";
  for (int64_t step = steps - 63; step <= steps; ++step) EXPECT_TRUE(kept.count(step)) << step;
  // The whole run is still covered: no gap wider than the stride before the newest points.
  int64_t prev = 0;
  for (int64_t step : kept) {
    EXPECT_LE(step - prev, stride) << "a gap before step " << step;
    prev = step;
  }
  // Thinned points took their events with them; kept ones keep theirs.
  std::set<int64_t> with_events;
  for (const auto& e : s.ReadEvents(job, 0, false, 1000000)) with_events.insert(e.metrics().step());
  EXPECT_EQ(with_events, kept);

  // Log lines: past the cap the oldest tenth goes; the newest stay.
  const MetricRetention logs{0, 64, 1000};
  for (int i = 1; i <= 2500; ++i) {
    v1::JobEvent l;
    l.set_seq(++seq);
    l.mutable_log()->set_text("line " + std::to_string(i));
    s.AppendEvent(job, l, logs);
  }
  const auto tail = s.LastLogs(job, 5000);
  EXPECT_LE(tail.size(), 1000u);
  EXPECT_GE(tail.size(), 900u);
  ASSERT_FALSE(tail.empty());
  EXPECT_EQ(tail.back().log().text(), "line 2500");
  EXPECT_EQ(tail.front().log().text(), "line " + std::to_string(2500 - tail.size() + 1)) << "not the newest kept";
  fs::remove_all(dir);
}

}  // namespace
}  // namespace trm::coordinator
