// The coordinator's logic: jobs, attempts, workers, datasets and checkpoints, persisted in a
// Store. The gRPC services (server.h) are thin adapters over this class, so everything here is
// tested without a server: every request is validated here, and transfers are whole sequences
// over a message reader (`read` fills the next message of the client's stream, false at its end).
//
// Model: a job is QUEUED until the scheduler (Tick) finds enough free worker slots; it then gets
// an attempt (placement of ranks on workers, a rendezvous endpoint, the checkpoint to resume
// from). Workers learn their part through heartbeats and report metrics, logs, checkpoints and
// rank exits. A failed attempt requeues the job (from its latest checkpoint) while restarts
// remain. Every change to a job appends a numbered event, which is what watchers stream.
//
// Thread safety: all public methods may be called from any thread (one internal mutex).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "trm/coordinator/auth.h"
#include "trm/v1/trm.pb.h"
#include "trm/worker/step_metrics.h"

namespace trm::coordinator {

class CoordinatorMetrics;

struct CoordinatorOptions {
  std::string data_dir = "trm-coordinator";  // coordinator.db, datasets/, checkpoints/, tmp/
  std::string config_dir;                    // for specs that name a config without sending it
  int heartbeat_interval_ms = 1000;
  int heartbeat_timeout_ms = 15000;          // a silent worker is lost after this
  // Hang detection. Ranks report their phase (starting, data, compute, all-reduce, checkpoint,
  // eval) and how long they have been in it; a rank that stays in a phase longer than that
  // phase's budget fails the attempt as "hang" (which restarts like any failure). Budgets:
  // phase_budget_ms[name] where given ("starting", "data", "compute", "allreduce", "checkpoint",
  // "eval"); otherwise start_timeout_ms for starting, the larger of hang_timeout_ms and 30 min for
  // checkpoint and eval, hang_timeout_ms for the rest. An attempt whose ranks report no phase
  // falls back to its step: none for start_timeout_ms, or no new one for hang_timeout_ms.
  int64_t hang_timeout_ms = 15 * 60 * 1000;
  int64_t start_timeout_ms = 30 * 60 * 1000;
  std::map<std::string, int64_t> phase_budget_ms;
  int keep_last_checkpoints = 3;             // per job, plus the best and any being resumed from
  // Training-step points kept per job (Store::AppendMetrics thins the rest to a coarser grid;
  // evaluations and checkpoints' points stay); 0 = every point.
  int64_t metrics_max_points = 10000;
  // Log lines kept per job (the oldest tenth goes past it); 0 = every line.
  int64_t max_log_lines = 100000;
  // An ended job's Prometheus series stay this long after it ended, then go (so the scrape does
  // not grow with every job ever run); its history is Prometheus's.
  int64_t job_metrics_linger_ms = 3600 * 1000;
  // A step metric ("eval_lm_loss") or an evaluation run's, "eval[DATASET]:lm_loss".
  std::string keep_best_metric = worker::EvalKey(worker::metric_key::kLmLoss);
  uint64_t max_dataset_bytes = uint64_t{64} << 30;
  uint64_t max_checkpoint_bytes = uint64_t{64} << 30;
  std::function<int64_t()> now_ms;           // the clock; default: system time
  CoordinatorMetrics* metrics = nullptr;     // not owned; may be null
  // Sharing (docs/control-plane.md#security). private_reads: users see only their own jobs and
  // datasets (admins see all). require_data_roots: a data_path job runs only on workers with
  // --data-root (set when auth is on). quota_slots: slots one user's jobs may hold at once
  // (default_quota_slots for the others; 0 = unlimited).
  bool private_reads = false;
  bool require_data_roots = false;
  std::map<std::string, int> quota_slots;
  int default_quota_slots = 0;
  int64_t audit_retention_ms = int64_t{90} * 24 * 3600 * 1000;
  // Fairness: a training job that cannot start and has waited longer than this keeps the slots
  // that free up (jobs behind it wait) until it fits; 0 = never (smaller jobs always backfill).
  int64_t max_wait_ms = 30 * 60 * 1000;
  // Preemption: a queued job of higher priority that does not fit stops the fewest
  // lower-priority running jobs it needs; their ranks get SIGTERM and this long to save a
  // checkpoint (then SIGKILL), and they are queued again without using a restart.
  int64_t preempt_grace_ms = 120 * 1000;
  // Elastic jobs (spec.min_world_size) running below their size grow when slots are free, no
  // training job waits and their attempt has run this long (the stop and resume cost a
  // checkpoint and a start: not worth it every few seconds); 0 = only at their next placement.
  int64_t elastic_grow_after_ms = 5 * 60 * 1000;
};

struct FileSet {  // a directory of files and the manifest that describes them
  std::string dir;
  v1::Manifest manifest;
};

class Coordinator {
 public:
  // Opens (or creates) the state under data_dir and reloads every job, worker and checkpoint.
  explicit Coordinator(CoordinatorOptions options);
  ~Coordinator();
  Coordinator(const Coordinator&) = delete;
  Coordinator& operator=(const Coordinator&) = delete;

  // ---- users. A spec with an EvalSpec submits an evaluation run (docs/control-plane.md,
  // "Evaluation runs": its checkpoint selector and dataset are resolved and pinned here). Errors: trm::Error naming the field (kInvalidArgument: also a job_id that is
  // empty or not a name, a limit out of range), kNotFound for unknown jobs / datasets /
  // checkpoints, kFailedPrecondition for impossible requests.
  //
  // `who` is the caller (Principal{}: "local", an admin, as without auth). What a user creates is
  // theirs: only its owner or an admin may cancel it (kPermissionDenied naming the owner);
  // with private_reads a job or dataset of someone else reads as absent (kNotFound).
  std::string SubmitJob(const v1::JobSpec& spec, const Principal& who = {});
  v1::Job GetJob(const std::string& job_id, const Principal& who = {});
  // owner: only that owner's jobs ("" = everyone's the caller may see).
  std::vector<v1::Job> ListJobs(const std::vector<v1::JobState>& states, int limit, const Principal& who = {},
                                const std::string& owner = "");
  v1::Job CancelJob(const std::string& job_id, const Principal& who = {});
  std::vector<v1::JobEvent> ReadEvents(const std::string& job_id, uint64_t after_seq, bool include_logs, int limit,
                                       const Principal& who = {});
  // Waits up to `timeout` for an event after `after_seq`. Returns false when the job has ended
  // and has no event after `after_seq` (a watcher is done).
  bool WaitForEvents(const std::string& job_id, uint64_t after_seq, std::chrono::milliseconds timeout);
  // The job's state events (attempts and their reasons), oldest first: the dashboard's list.
  std::vector<v1::JobEvent> StateEvents(const std::string& job_id, const Principal& who = {});
  // The newest `lines` log lines (1..5000), oldest first: the dashboard's log tail.
  std::vector<v1::JobEvent> TailLogs(const std::string& job_id, int lines, const Principal& who = {});
  // `last_seq`, when given, gets the job's newest event seq as of the read: events after it hold
  // the points logged since (the dashboard reads those instead of the whole series again).
  std::vector<v1::StepMetrics> GetMetrics(const std::string& job_id, int64_t from_step, int limit,
                                          const Principal& who = {}, uint64_t* last_seq = nullptr);
  std::vector<v1::CheckpointInfo> ListCheckpoints(const std::string& job_id, const Principal& who = {});
  // selector: latest | best:<metric> | step:N | step_N (at most 256 characters); <metric> may be
  // an evaluation result's key, eval[DATASET]:METRIC. `weights_only`: the checkpoint's
  // weights-only form (weights_only.h), built on first request.
  FileSet ResolveCheckpoint(const std::string& job_id, const std::string& selector, bool weights_only = false,
                            const Principal& who = {});
  // A worker's fetch: `name` must be a name (a resume checkpoint's), then resolves as a selector.
  FileSet CheckpointFiles(const std::string& job_id, const std::string& name, bool weights_only = false);
  // The queued jobs in scheduling order, each with why it waits (Job.queue_reason).
  v1::GetQueueResponse GetQueue(const Principal& who = {});
  // With private_reads, a worker's jobs list only the caller's (admins: all).
  std::vector<v1::WorkerInfo> ListWorkers(const Principal& who = {});

  // ---- datasets. A push is the manifest (its name is the dataset's), then the transfer's
  // chunks; it lands in a temporary directory, is verified and moved into place by content.
  // Names live per owner: the manifest's NAME is the caller's, OWNER/NAME another user's (its
  // owner or an admin only). A spec's dataset NAME means the caller's newest push of NAME.
  v1::DatasetInfo PushDataset(const std::function<bool(v1::TransferMessage*)>& read, const Principal& who = {});
  std::vector<v1::DatasetInfo> ListDatasets(const Principal& who = {});
  FileSet DatasetFiles(const std::string& content_sha256);
  // The part of a dataset that `shard` describes, built on first request under
  // DATA_DIR/shards/ (at most one build at a time, outside the state lock). Throws
  // kInvalidArgument for a spec no job could send, kNotFound for an unknown dataset.
  FileSet DatasetShardFiles(const std::string& content_sha256, const v1::ShardSpec& shard);

  // ---- workers.
  v1::RegisterResponse Register(const v1::RegisterRequest& req);
  v1::HeartbeatResponse Heartbeat(const v1::HeartbeatRequest& req);
  // At most 10000 events a report, and a worker's reports at most 2,000 events a second (bursts
  // of 20,000; kResourceExhausted beyond, the worker keeps them and retries): each is a write.
  v1::ReportEventsResponse ReportEvents(const v1::ReportEventsRequest& req);
  // An upload is the header (the job's current attempt, a step_<step> name, the manifest), then
  // chunks only. A failure while receiving or committing for lack of space (kResourceExhausted)
  // becomes the job's warning until an upload succeeds; the worker keeps the checkpoint and
  // retries.
  v1::CheckpointInfo UploadCheckpoint(const std::function<bool(v1::CheckpointUpload*)>& read);

  // ---- the audit log of mutating calls (the gRPC adapters record them, refusals included);
  // entries older than audit_retention_ms are pruned by Tick. ListAudit: admins only.
  void RecordAudit(v1::AuditEntry entry);
  std::vector<v1::AuditEntry> ListAudit(int64_t since_unix_ms, const std::string& user, int limit,
                                        const Principal& who = {});

  // ---- backups (backup.h). Admins only (kPermissionDenied), one at a time
  // (kResourceExhausted). A consistent snapshot of the whole state under DATA_DIR/tmp/backup-N:
  // the database copied between two changes, hard links to the stored datasets and to the
  // checkpoints it lists (retention may delete the originals meanwhile); the manifest lists them
  // with their SHA-256. The caller streams it, then calls EndBackup (which removes it; tmp/ is
  // also emptied at every start).
  FileSet Backup(const Principal& who = {});
  void EndBackup(const FileSet& backup);

  // ---- housekeeping: lost workers, scheduling. The server calls it a few times a second.
  void Tick();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trm::coordinator
