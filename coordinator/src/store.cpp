#include "trm/coordinator/store.h"

#include <spdlog/spdlog.h>
#include <sqlite3.h>

#include <algorithm>
#include <utility>

#include "trm/common/error.h"

namespace trm::coordinator {
namespace {

// A prepared statement that finalizes itself.
class Stmt {
 public:
  Stmt(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &st_, nullptr) != SQLITE_OK)
      Internal(std::string("sqlite prepare: ") + sqlite3_errmsg(db) + " in: " + sql);
  }
  ~Stmt() { sqlite3_finalize(st_); }
  Stmt& Bind(int i, const std::string& v) {
    sqlite3_bind_text(st_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& BindBlob(int i, const std::string& v) {
    sqlite3_bind_blob(st_, i, v.data(), static_cast<int>(v.size()), SQLITE_TRANSIENT);
    return *this;
  }
  Stmt& Bind(int i, int64_t v) {
    sqlite3_bind_int64(st_, i, v);
    return *this;
  }
  bool Step() {  // true while rows come
    const int rc = sqlite3_step(st_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    const int ext = sqlite3_extended_errcode(db_);
    const std::string msg = std::string("coordinator database: ") + sqlite3_errmsg(db_);
    // A full disk is the caller's to report as such (the RPC fails RESOURCE_EXHAUSTED, the
    // in-memory state stays as committed, the coordinator keeps serving).
    if ((ext & 0xff) == SQLITE_FULL) ThrowError(Code::kResourceExhausted, msg + " (the data dir's disk is full)");
    if ((ext & 0xff) == SQLITE_IOERR) IoError(msg);
    Internal(msg);
  }
  std::string Blob(int col) {
    const void* p = sqlite3_column_blob(st_, col);
    return std::string(static_cast<const char*>(p), static_cast<size_t>(sqlite3_column_bytes(st_, col)));
  }
  int64_t Int(int col) { return sqlite3_column_int64(st_, col); }

 private:
  sqlite3* db_;
  sqlite3_stmt* st_ = nullptr;
};

template <class Msg>
Msg Parse(const std::string& bytes, const char* what) {
  Msg m;
  if (!m.ParseFromString(bytes)) DataLoss(std::string("coordinator database: a corrupt ") + what + " record");
  return m;
}

constexpr const char* kSchema = R"sql(
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs(id TEXT PRIMARY KEY, created INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS events(job_id TEXT NOT NULL, seq INTEGER NOT NULL, is_log INTEGER NOT NULL,
                                  data BLOB NOT NULL, PRIMARY KEY(job_id, seq));
CREATE TABLE IF NOT EXISTS state_events(job_id TEXT NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY(job_id, seq));
CREATE TABLE IF NOT EXISTS metrics(job_id TEXT NOT NULL, step INTEGER NOT NULL, eval INTEGER NOT NULL,
                                   data BLOB NOT NULL, PRIMARY KEY(job_id, step, eval));
CREATE TABLE IF NOT EXISTS checkpoints(job_id TEXT NOT NULL, name TEXT NOT NULL, step INTEGER NOT NULL,
                                       data BLOB NOT NULL, PRIMARY KEY(job_id, name));
CREATE TABLE IF NOT EXISTS workers(id TEXT PRIMARY KEY, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS datasets(hash TEXT PRIMARY KEY, name TEXT NOT NULL, created INTEGER NOT NULL,
                                    data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS datasets_by_name ON datasets(name, created);
CREATE TABLE IF NOT EXISTS dataset_versions(seq INTEGER PRIMARY KEY AUTOINCREMENT, owner TEXT NOT NULL,
                                            name TEXT NOT NULL, hash TEXT NOT NULL, created INTEGER NOT NULL,
                                            data BLOB NOT NULL, UNIQUE(owner, name, hash));
CREATE INDEX IF NOT EXISTS dataset_versions_by_name ON dataset_versions(owner, name, seq);
CREATE INDEX IF NOT EXISTS dataset_versions_by_hash ON dataset_versions(hash);
CREATE TABLE IF NOT EXISTS audit(id INTEGER PRIMARY KEY AUTOINCREMENT, time INTEGER NOT NULL,
                                 principal TEXT NOT NULL, data BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit(time);
)sql";

// Version 1 -> 2. Points stored before it keep their events (event_seq NULL).
constexpr const char* kMigrationTo2 = R"sql(
ALTER TABLE metrics ADD COLUMN event_seq INTEGER;
CREATE TABLE metric_retention(job_id TEXT PRIMARY KEY, stride INTEGER NOT NULL DEFAULT 1,
                              points INTEGER NOT NULL DEFAULT -1, logs INTEGER NOT NULL DEFAULT -1);
)sql";

// Data directories from before owners kept one row per content hash in `datasets` (a second
// name for the same content replaced the first). Each becomes a version owned by "local", once.
constexpr const char* kOwnersMigration = R"sql(
INSERT OR IGNORE INTO dataset_versions(owner, name, hash, created, data)
  SELECT 'local', name, hash, created, data FROM datasets
  WHERE NOT EXISTS (SELECT 1 FROM meta WHERE key = 'datasets_owned') ORDER BY created;
INSERT OR IGNORE INTO meta(key, value) VALUES('datasets_owned', 1);
)sql";

}  // namespace

struct Store::Impl {
  sqlite3* db = nullptr;
  std::string path;
  void Exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db, sql, nullptr, nullptr, &err) != SQLITE_OK) {
      std::string msg = err ? err : "unknown error";
      sqlite3_free(err);
      if ((sqlite3_extended_errcode(db) & 0xff) == SQLITE_FULL) ThrowError(Code::kResourceExhausted, path + ": " + msg);
      IoError(path + ": " + msg);
    }
  }
};

Store::Store(const std::string& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  if (sqlite3_open_v2(path.c_str(), &impl_->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                      nullptr) != SQLITE_OK) {
    const std::string msg = impl_->db ? sqlite3_errmsg(impl_->db) : "out of memory";
    sqlite3_close(impl_->db);
    impl_->db = nullptr;
    IoError(path + ": cannot open the coordinator database: " + msg);
  }
  sqlite3_busy_timeout(impl_->db, 5000);
  try {
    // Before anything writes to it: a newer release's file stays as it is.
    const int version = SchemaVersion();
    bool existing = false;
    {
      Stmt q(impl_->db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'jobs'");
      existing = q.Step();
    }
    if (version > kSchemaVersion)
      ThrowError(Code::kFailedPrecondition,
                 path + ": schema version " + std::to_string(version) + ", newer than this trm-coordinator's " +
                     std::to_string(kSchemaVersion) + " (the data directory was written by a later release): run " +
                     "that release, or restore a backup made by this one into a new data directory; the file is "
                     "unchanged");
    impl_->Exec("PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;");
    impl_->Exec("BEGIN IMMEDIATE");
    impl_->Exec(kSchema);  // version 1's tables (a new file starts there too)
    impl_->Exec(kOwnersMigration);
    IndexStateEvents();
    if (version < 2) impl_->Exec(kMigrationTo2);
    // The caps may differ from the last run's (or have been off, leaving the counts stale):
    // each job's counts are taken again at its next event.
    impl_->Exec("UPDATE metric_retention SET points = -1, logs = -1");
    impl_->Exec(("PRAGMA user_version = " + std::to_string(kSchemaVersion)).c_str());
    impl_->Exec("COMMIT");
    if (existing && version < kSchemaVersion)
      spdlog::info("{}: migrated the schema from version {} to {}", path, std::max(version, 1), kSchemaVersion);
    Stmt check(impl_->db, "PRAGMA quick_check");
    if (check.Step() && check.Blob(0) != "ok") DataLoss(path + ": database integrity check failed: " + check.Blob(0));
  } catch (...) {
    sqlite3_close(impl_->db);
    impl_->db = nullptr;
    throw;
  }
}

Store::~Store() {
  if (impl_->db) sqlite3_close(impl_->db);
}

Store::Transaction::Transaction(Store* s) : s_(s) { s_->impl_->Exec("BEGIN IMMEDIATE"); }
Store::Transaction::~Transaction() {
  if (!done_) sqlite3_exec(s_->impl_->db, "ROLLBACK", nullptr, nullptr, nullptr);
}
void Store::Transaction::Commit() {
  s_->impl_->Exec("COMMIT");
  done_ = true;
}

int64_t Store::NextJobNumber() {
  Stmt(impl_->db, "INSERT INTO meta(key, value) VALUES('job_number', 1) "
                  "ON CONFLICT(key) DO UPDATE SET value = value + 1")
      .Step();
  Stmt q(impl_->db, "SELECT value FROM meta WHERE key = 'job_number'");
  q.Step();
  return q.Int(0);
}

void Store::PutJob(const v1::JobRecord& job) {
  Stmt(impl_->db, "INSERT INTO jobs(id, created, data) VALUES(?1, ?2, ?3) "
                  "ON CONFLICT(id) DO UPDATE SET data = excluded.data")
      .Bind(1, job.job().id())
      .Bind(2, job.job().created_unix_ms())
      .BindBlob(3, job.SerializeAsString())
      .Step();
}

std::optional<v1::JobRecord> Store::GetJob(const std::string& id) {
  Stmt q(impl_->db, "SELECT data FROM jobs WHERE id = ?1");
  q.Bind(1, id);
  if (!q.Step()) return std::nullopt;
  return Parse<v1::JobRecord>(q.Blob(0), "job");
}

std::vector<v1::JobRecord> Store::ListJobs() {
  Stmt q(impl_->db, "SELECT data FROM jobs ORDER BY created, id");
  std::vector<v1::JobRecord> out;
  while (q.Step()) out.push_back(Parse<v1::JobRecord>(q.Blob(0), "job"));
  return out;
}

void Store::AppendEvent(const std::string& job_id, const v1::JobEvent& e, const MetricRetention& keep) {
  Stmt(impl_->db, "INSERT INTO events(job_id, seq, is_log, data) VALUES(?1, ?2, ?3, ?4)")
      .Bind(1, job_id)
      .Bind(2, static_cast<int64_t>(e.seq()))
      .Bind(3, int64_t{e.has_log() ? 1 : 0})
      .BindBlob(4, e.SerializeAsString())
      .Step();
  if (e.has_log() && keep.max_log_lines > 0) {
    int64_t logs = -1;
    {
      Stmt q(impl_->db, "SELECT logs FROM metric_retention WHERE job_id = ?1");
      q.Bind(1, job_id);
      if (q.Step()) logs = q.Int(0);
    }
    if (logs < 0) {  // the job's first, or one from before version 2
      Stmt q(impl_->db, "SELECT COUNT(*) FROM events WHERE job_id = ?1 AND is_log = 1");
      q.Bind(1, job_id);
      q.Step();
      logs = q.Int(0);
    } else {
      ++logs;
    }
    if (logs > keep.max_log_lines) {
      const int64_t drop = logs - keep.max_log_lines + keep.max_log_lines / 10;
      Stmt(impl_->db, "DELETE FROM events WHERE job_id = ?1 AND is_log = 1 AND seq IN "
                      "(SELECT seq FROM events WHERE job_id = ?1 AND is_log = 1 ORDER BY seq LIMIT ?2)")
          .Bind(1, job_id)
          .Bind(2, drop)
          .Step();
      logs -= drop;
    }
    Stmt(impl_->db, "INSERT INTO metric_retention(job_id, logs) VALUES(?1, ?2) "
                    "ON CONFLICT(job_id) DO UPDATE SET logs = excluded.logs")
        .Bind(1, job_id)
        .Bind(2, logs)
        .Step();
  }
  if (e.has_state())
    Stmt(impl_->db, "INSERT INTO state_events(job_id, seq) VALUES(?1, ?2)")
        .Bind(1, job_id)
        .Bind(2, static_cast<int64_t>(e.seq()))
        .Step();
}

// Data directories from before state_events: their state events are found once, by reading
// every non-log event (the one time that costs a scan).
void Store::IndexStateEvents() {
  {
    Stmt done(impl_->db, "SELECT value FROM meta WHERE key = 'state_events_indexed'");
    if (done.Step()) return;
  }
  std::vector<std::pair<std::string, int64_t>> found;
  {
    Stmt q(impl_->db, "SELECT job_id, data FROM events WHERE is_log = 0");
    while (q.Step()) {
      const auto e = Parse<v1::JobEvent>(q.Blob(1), "event");
      if (e.has_state()) found.emplace_back(q.Blob(0), static_cast<int64_t>(e.seq()));
    }
  }
  for (const auto& [job, seq] : found)
    Stmt(impl_->db, "INSERT OR IGNORE INTO state_events(job_id, seq) VALUES(?1, ?2)").Bind(1, job).Bind(2, seq).Step();
  impl_->Exec("INSERT OR IGNORE INTO meta(key, value) VALUES('state_events_indexed', 1)");
}

std::vector<v1::JobEvent> Store::ReadStateEvents(const std::string& job_id) {
  Stmt q(impl_->db,
         "SELECT e.data FROM state_events s JOIN events e ON e.job_id = s.job_id AND e.seq = s.seq "
         "WHERE s.job_id = ?1 ORDER BY s.seq");
  q.Bind(1, job_id);
  std::vector<v1::JobEvent> out;
  while (q.Step()) out.push_back(Parse<v1::JobEvent>(q.Blob(0), "event"));
  return out;
}

std::vector<v1::JobEvent> Store::ReadEvents(const std::string& job_id, uint64_t after_seq, bool include_logs,
                                            int limit) {
  Stmt q(impl_->db, include_logs
                        ? "SELECT data FROM events WHERE job_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3"
                        : "SELECT data FROM events WHERE job_id = ?1 AND seq > ?2 AND is_log = 0 ORDER BY seq LIMIT ?3");
  q.Bind(1, job_id).Bind(2, static_cast<int64_t>(after_seq)).Bind(3, int64_t{limit});
  std::vector<v1::JobEvent> out;
  while (q.Step()) out.push_back(Parse<v1::JobEvent>(q.Blob(0), "event"));
  return out;
}

std::vector<v1::JobEvent> Store::LastLogs(const std::string& job_id, int n) {
  Stmt q(impl_->db, "SELECT data FROM events WHERE job_id = ?1 AND is_log = 1 ORDER BY seq DESC LIMIT ?2");
  q.Bind(1, job_id).Bind(2, int64_t{n});
  std::vector<v1::JobEvent> out;
  while (q.Step()) out.push_back(Parse<v1::JobEvent>(q.Blob(0), "event"));
  std::reverse(out.begin(), out.end());
  return out;
}

void Store::AppendMetrics(const std::string& job_id, const v1::StepMetrics& m, uint64_t event_seq,
                          const MetricRetention& keep) {
  const bool thin = !m.eval() && keep.max_points > 0;
  bool existed = false;
  if (thin) {
    Stmt q(impl_->db, "SELECT 1 FROM metrics WHERE job_id = ?1 AND step = ?2 AND eval = 0");
    q.Bind(1, job_id).Bind(2, m.step());
    existed = q.Step();
  }
  // A restarted attempt replays steps after its checkpoint: the newest values win.
  Stmt ins(impl_->db, "INSERT OR REPLACE INTO metrics(job_id, step, eval, data, event_seq) VALUES(?1, ?2, ?3, ?4, ?5)");
  ins.Bind(1, job_id).Bind(2, m.step()).Bind(3, int64_t{m.eval() ? 1 : 0}).BindBlob(4, m.SerializeAsString());
  if (event_seq > 0) ins.Bind(5, static_cast<int64_t>(event_seq));
  ins.Step();
  if (!thin) return;

  int64_t stride = 1, points = -1;
  {
    Stmt q(impl_->db, "SELECT stride, points FROM metric_retention WHERE job_id = ?1");
    q.Bind(1, job_id);
    if (q.Step()) {
      stride = q.Int(0);
      if (q.Int(1) >= 0) points = q.Int(1) + (existed ? 0 : 1);  // -1: not counted yet
    }
  }
  auto count = [&] {
    Stmt q(impl_->db, "SELECT COUNT(*) FROM metrics WHERE job_id = ?1 AND eval = 0");
    q.Bind(1, job_id);
    q.Step();
    return q.Int(0);
  };
  if (points < 0) points = count();  // the job's first point, or one from before version 2
  if (points > keep.max_points) {
    // The newest `recent` points stay: below `floor` only.
    Stmt f(impl_->db, "SELECT step FROM metrics WHERE job_id = ?1 AND eval = 0 ORDER BY step DESC LIMIT 1 OFFSET ?2");
    f.Bind(1, job_id).Bind(2, std::max<int64_t>(0, keep.recent - 1));
    const int64_t floor = f.Step() ? f.Int(0) : 0;
    static const char* kOffGrid =
        "job_id = ?1 AND eval = 0 AND step < ?2 AND step % ?3 != 0 "
        "AND step NOT IN (SELECT step FROM checkpoints WHERE job_id = ?1)";
    // The finest grid that brings the job down to half its cap: so the stride follows the run's
    // length (about 2 x steps / cap), and a thinning comes once per cap / 2 new points.
    auto left = [&](int64_t s) {
      Stmt q(impl_->db, (std::string("SELECT COUNT(*) FROM metrics WHERE job_id = ?1 AND eval = 0 AND NOT (") +
                         kOffGrid + ")")
                            .c_str());
      q.Bind(1, job_id).Bind(2, floor).Bind(3, s);
      q.Step();
      return q.Int(0);
    };
    while (stride <= floor && left(stride) > keep.max_points / 2) stride *= 2;
    Stmt(impl_->db, (std::string("DELETE FROM events WHERE job_id = ?1 AND seq IN "
                                 "(SELECT event_seq FROM metrics WHERE event_seq IS NOT NULL AND ") + kOffGrid + ")")
                        .c_str())
        .Bind(1, job_id)
        .Bind(2, floor)
        .Bind(3, stride)
        .Step();
    Stmt(impl_->db, (std::string("DELETE FROM metrics WHERE ") + kOffGrid).c_str())
        .Bind(1, job_id)
        .Bind(2, floor)
        .Bind(3, stride)
        .Step();
    points = count();
  }
  Stmt(impl_->db, "INSERT INTO metric_retention(job_id, stride, points) VALUES(?1, ?2, ?3) "
                  "ON CONFLICT(job_id) DO UPDATE SET stride = excluded.stride, points = excluded.points")
      .Bind(1, job_id)
      .Bind(2, stride)
      .Bind(3, points)
      .Step();
}

int64_t Store::MetricStride(const std::string& job_id) {
  Stmt q(impl_->db, "SELECT stride FROM metric_retention WHERE job_id = ?1");
  q.Bind(1, job_id);
  return q.Step() ? q.Int(0) : 1;
}

std::vector<v1::StepMetrics> Store::ReadMetrics(const std::string& job_id, int64_t from_step, int limit) {
  Stmt q(impl_->db, "SELECT data FROM metrics WHERE job_id = ?1 AND step >= ?2 ORDER BY step, eval LIMIT ?3");
  q.Bind(1, job_id).Bind(2, from_step).Bind(3, limit > 0 ? int64_t{limit} : int64_t{-1});
  std::vector<v1::StepMetrics> out;
  while (q.Step()) out.push_back(Parse<v1::StepMetrics>(q.Blob(0), "metrics"));
  return out;
}

void Store::PutCheckpoint(const std::string& job_id, const v1::CheckpointRecord& c) {
  Stmt(impl_->db, "INSERT OR REPLACE INTO checkpoints(job_id, name, step, data) VALUES(?1, ?2, ?3, ?4)")
      .Bind(1, job_id)
      .Bind(2, c.info().name())
      .Bind(3, c.info().step())
      .BindBlob(4, c.SerializeAsString())
      .Step();
}

void Store::DeleteCheckpoint(const std::string& job_id, const std::string& name) {
  Stmt(impl_->db, "DELETE FROM checkpoints WHERE job_id = ?1 AND name = ?2").Bind(1, job_id).Bind(2, name).Step();
}

std::vector<v1::CheckpointRecord> Store::ListCheckpoints(const std::string& job_id) {
  Stmt q(impl_->db, "SELECT data FROM checkpoints WHERE job_id = ?1 ORDER BY step");
  q.Bind(1, job_id);
  std::vector<v1::CheckpointRecord> out;
  while (q.Step()) out.push_back(Parse<v1::CheckpointRecord>(q.Blob(0), "checkpoint"));
  return out;
}

void Store::PutWorker(const v1::WorkerRecord& w) {
  Stmt(impl_->db, "INSERT OR REPLACE INTO workers(id, data) VALUES(?1, ?2)")
      .Bind(1, w.info().id())
      .BindBlob(2, w.SerializeAsString())
      .Step();
}

std::vector<v1::WorkerRecord> Store::ListWorkers() {
  Stmt q(impl_->db, "SELECT data FROM workers ORDER BY id");
  std::vector<v1::WorkerRecord> out;
  while (q.Step()) out.push_back(Parse<v1::WorkerRecord>(q.Blob(0), "worker"));
  return out;
}

void Store::PutDataset(const v1::DatasetInfo& d) {
  // The newest version is the row inserted last (seq), whatever the clock says: the same
  // content pushed again under the same name is re-inserted, becoming the newest. The caller
  // holds a transaction.
  Stmt(impl_->db, "DELETE FROM dataset_versions WHERE owner = ?1 AND name = ?2 AND hash = ?3")
      .Bind(1, d.owner())
      .Bind(2, d.name())
      .Bind(3, d.content_sha256())
      .Step();
  Stmt(impl_->db, "INSERT INTO dataset_versions(owner, name, hash, created, data) VALUES(?1, ?2, ?3, ?4, ?5)")
      .Bind(1, d.owner())
      .Bind(2, d.name())
      .Bind(3, d.content_sha256())
      .Bind(4, d.created_unix_ms())
      .BindBlob(5, d.SerializeAsString())
      .Step();
}

namespace {
// Rows of migrated data directories carry no owner in their blob: the column has it.
v1::DatasetInfo DatasetRow(Stmt& q) {
  v1::DatasetInfo d = Parse<v1::DatasetInfo>(q.Blob(0), "dataset");
  d.set_owner(q.Blob(1));
  return d;
}
}  // namespace

std::optional<v1::DatasetInfo> Store::FindDatasetName(const std::string& owner, const std::string& name) {
  Stmt q(impl_->db, "SELECT data, owner FROM dataset_versions WHERE owner = ?1 AND name = ?2 "
                    "ORDER BY seq DESC LIMIT 1");
  q.Bind(1, owner);
  q.Bind(2, name);
  if (!q.Step()) return std::nullopt;
  return DatasetRow(q);
}

std::vector<v1::DatasetInfo> Store::FindDatasetHash(const std::string& hash, const std::string& owner) {
  // The whole hash, or a prefix of 12+ digits; the caller tells several contents apart.
  Stmt q(impl_->db, "SELECT data, owner FROM dataset_versions WHERE (hash = ?1 OR (length(?1) >= 12 AND "
                    "substr(hash, 1, length(?1)) = ?1)) AND (?2 = '' OR owner = ?2) ORDER BY seq DESC");
  q.Bind(1, hash);
  q.Bind(2, owner);
  std::vector<v1::DatasetInfo> out;
  while (q.Step()) out.push_back(DatasetRow(q));
  return out;
}

std::vector<v1::DatasetInfo> Store::ListDatasets() {
  Stmt q(impl_->db, "SELECT data, owner FROM dataset_versions ORDER BY seq");
  std::vector<v1::DatasetInfo> out;
  while (q.Step()) out.push_back(DatasetRow(q));
  return out;
}

void Store::AppendAudit(const v1::AuditEntry& e) {
  Stmt(impl_->db, "INSERT INTO audit(time, principal, data) VALUES(?1, ?2, ?3)")
      .Bind(1, e.time_unix_ms())
      .Bind(2, e.principal())
      .BindBlob(3, e.SerializeAsString())
      .Step();
}

std::vector<v1::AuditEntry> Store::ListAudit(int64_t since_ms, const std::string& principal, int limit) {
  Stmt q(impl_->db, "SELECT data FROM (SELECT id, data FROM audit WHERE time >= ?1 AND (?2 = '' OR principal = ?2) "
                    "ORDER BY id DESC LIMIT ?3) ORDER BY id");
  q.Bind(1, since_ms);
  q.Bind(2, principal);
  q.Bind(3, static_cast<int64_t>(limit));
  std::vector<v1::AuditEntry> out;
  while (q.Step()) out.push_back(Parse<v1::AuditEntry>(q.Blob(0), "audit entry"));
  return out;
}

int64_t Store::PruneAudit(int64_t before_ms) {
  Stmt(impl_->db, "DELETE FROM audit WHERE time < ?1").Bind(1, before_ms).Step();
  return sqlite3_changes(impl_->db);
}

std::optional<int64_t> Store::GetMeta(const std::string& key) {
  Stmt q(impl_->db, "SELECT value FROM meta WHERE key = ?1");
  q.Bind(1, key);
  if (!q.Step()) return std::nullopt;
  return q.Int(0);
}

void Store::SetMeta(const std::string& key, int64_t value) {
  Stmt(impl_->db, "INSERT INTO meta(key, value) VALUES(?1, ?2) ON CONFLICT(key) DO UPDATE SET value = excluded.value")
      .Bind(1, key)
      .Bind(2, value)
      .Step();
}

void Store::DeleteMeta(const std::string& key) { Stmt(impl_->db, "DELETE FROM meta WHERE key = ?1").Bind(1, key).Step(); }

int Store::SchemaVersion() {
  Stmt q(impl_->db, "PRAGMA user_version");
  q.Step();
  return static_cast<int>(q.Int(0));
}

struct Store::OnlineBackup::Impl {
  std::string path;
  sqlite3* dst = nullptr;
  sqlite3_backup* b = nullptr;
  [[noreturn]] void Fail(int rc) {
    const std::string msg = dst ? sqlite3_errmsg(dst) : "out of memory";
    if ((rc & 0xff) == SQLITE_FULL) ThrowError(Code::kResourceExhausted, path + ": the backup's disk is full");
    IoError(path + ": backup failed: " + msg);
  }
};

Store::OnlineBackup::OnlineBackup(Store* s, const std::string& path) : impl_(std::make_unique<Impl>()) {
  impl_->path = path;
  const int rc = sqlite3_open_v2(path.c_str(), &impl_->dst, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr);
  if (rc != SQLITE_OK) {
    const std::string msg = impl_->dst ? sqlite3_errmsg(impl_->dst) : "out of memory";
    sqlite3_close(impl_->dst);
    impl_->dst = nullptr;
    IoError(path + ": cannot create the backup database: " + msg);
  }
  impl_->b = sqlite3_backup_init(impl_->dst, "main", s->impl_->db, "main");
  if (!impl_->b) {
    const std::string msg = sqlite3_errmsg(impl_->dst);
    sqlite3_close(impl_->dst);
    impl_->dst = nullptr;
    IoError(path + ": cannot start the backup: " + msg);
  }
}

Store::OnlineBackup::~OnlineBackup() {
  if (impl_->b) sqlite3_backup_finish(impl_->b);
  if (impl_->dst) sqlite3_close(impl_->dst);
}

bool Store::OnlineBackup::Step(int pages) {
  if (!impl_->b) return true;
  const int rc = sqlite3_backup_step(impl_->b, pages);
  if (rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED) return false;
  if (rc != SQLITE_DONE) impl_->Fail(rc);
  const int fin = sqlite3_backup_finish(impl_->b);
  impl_->b = nullptr;
  if (fin != SQLITE_OK) impl_->Fail(fin);
  if (sqlite3_close(impl_->dst) != SQLITE_OK) impl_->Fail(sqlite3_errcode(impl_->dst));
  impl_->dst = nullptr;
  return true;
}

}  // namespace trm::coordinator
