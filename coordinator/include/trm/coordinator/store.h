// The coordinator's durable state in SQLite (one file, WAL, synchronous=FULL so every committed
// transaction survives a crash): jobs, their event logs and metric history, checkpoints, workers,
// datasets. Rows hold the records of trm/v1/state.proto serialized, plus the columns queries
// need.
//
// Thread safety: none; the Coordinator serialises access under its mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "trm/v1/state.pb.h"
#include "trm/v1/trm.pb.h"

namespace trm::coordinator {

// The schema's version (SQLite's user_version). A data directory of an older version is migrated
// forward when opened; a newer one (made by a later release) is refused, unchanged.
//   1: the releases up to 2026-12-02 (user_version was left at 0)
//   2: metrics rows know their event (event_seq); jobs their retention grid and log count
//      (metric_retention)
constexpr int kSchemaVersion = 2;

// How much of a job's history it keeps (Store::AppendMetrics, Store::AppendEvent).
struct MetricRetention {
  int64_t max_points = 10000;  // training-step points per job; 0 = keep every point
  int64_t recent = 64;         // the newest points are never thinned (their checkpoint may be on its way)
  int64_t max_log_lines = 100000;  // log events per job (the oldest go, a tenth at a time); 0 = all
};

class Store {
 public:
  // Opens or creates `path` and its schema, migrating an older one. Throws IoError / DataLoss
  // naming the file, kFailedPrecondition for a schema newer than kSchemaVersion.
  explicit Store(const std::string& path);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  // All writes of one logical change go in one transaction: Begin(); ...; Commit().
  class Transaction {
   public:
    explicit Transaction(Store* s);
    ~Transaction();  // rolls back unless committed
    void Commit();

   private:
    Store* s_;
    bool done_ = false;
  };

  int64_t NextJobNumber();  // 1, 2, ... across restarts

  void PutJob(const v1::JobRecord& job);
  std::optional<v1::JobRecord> GetJob(const std::string& id);
  std::vector<v1::JobRecord> ListJobs();

  // Appends an event whose seq the caller already assigned (JobRecord.last_seq + 1). Past
  // `keep.max_log_lines` log events, the job's oldest tenth of them is deleted.
  void AppendEvent(const std::string& job_id, const v1::JobEvent& event, const MetricRetention& keep = {});
  std::vector<v1::JobEvent> ReadEvents(const std::string& job_id, uint64_t after_seq, bool include_logs, int limit);
  // The job's state events (its attempts and their reasons), oldest first, through their own
  // index: not a scan of its metrics events.
  std::vector<v1::JobEvent> ReadStateEvents(const std::string& job_id);
  // The job's newest `n` log events, oldest first (an index walk from the end, not a scan).
  std::vector<v1::JobEvent> LastLogs(const std::string& job_id, int n);

  // A job's points, stored with the seq of the event that carried them. Training points beyond
  // `keep.max_points` are thinned to a grid: each time the job passes the cap, its stride (in
  // steps: a power of two, from 1) becomes the finest that leaves at most half the cap, and the
  // points off it go, events included, except evaluation points, checkpoint steps and the newest
  // `keep.recent`. So the curve stays whole at a coarser resolution (about 2 x steps / cap),
  // the points since the last thinning at full resolution.
  void AppendMetrics(const std::string& job_id, const v1::StepMetrics& m, uint64_t event_seq = 0,
                     const MetricRetention& keep = {});
  int64_t MetricStride(const std::string& job_id);  // 1 until the job's first thinning
  std::vector<v1::StepMetrics> ReadMetrics(const std::string& job_id, int64_t from_step, int limit);

  void PutCheckpoint(const std::string& job_id, const v1::CheckpointRecord& c);
  void DeleteCheckpoint(const std::string& job_id, const std::string& name);
  std::vector<v1::CheckpointRecord> ListCheckpoints(const std::string& job_id);  // by step

  void PutWorker(const v1::WorkerRecord& w);
  std::vector<v1::WorkerRecord> ListWorkers();

  // Datasets: versions of OWNER/NAME (d.owner(), d.name()), each naming stored content.
  void PutDataset(const v1::DatasetInfo& d);
  std::optional<v1::DatasetInfo> FindDatasetName(const std::string& owner, const std::string& name);  // the newest
  // Versions whose hash is `hash` or starts with it (12+ digits), newest first; owner "" = anyone's.
  std::vector<v1::DatasetInfo> FindDatasetHash(const std::string& hash, const std::string& owner);
  std::vector<v1::DatasetInfo> ListDatasets();  // every version, oldest first

  // The audit log of mutating calls.
  void AppendAudit(const v1::AuditEntry& e);
  // The newest `limit` entries at or after since_ms (of `principal` unless ""), oldest first.
  std::vector<v1::AuditEntry> ListAudit(int64_t since_ms, const std::string& principal, int limit);
  int64_t PruneAudit(int64_t before_ms);  // returns the rows deleted

  // Small durable flags and counters (the meta table).
  std::optional<int64_t> GetMeta(const std::string& key);
  void SetMeta(const std::string& key, int64_t value);
  void DeleteMeta(const std::string& key);

  // A copy of the whole database at `path` by SQLite's online backup, a few pages per Step so
  // that writers need not wait for all of it: changes made through this Store meanwhile are
  // carried into the copy, and the copy is the database as of the Step that returns true (the
  // caller holds whatever serialises writes around each Step). Destroying it unfinished leaves
  // a partial file for the caller to remove.
  class OnlineBackup {
   public:
    OnlineBackup(Store* s, const std::string& path);
    ~OnlineBackup();
    OnlineBackup(const OnlineBackup&) = delete;
    OnlineBackup& operator=(const OnlineBackup&) = delete;
    bool Step(int pages);  // true once complete; throws IoError / kResourceExhausted naming `path`

   private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
  };
  int SchemaVersion();

 private:
  void IndexStateEvents();  // the one-time migration of older data directories
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trm::coordinator
