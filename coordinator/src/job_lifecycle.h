// A job's lifecycle as transitions on its persisted record (state.proto's JobRecord):
//
//   (new) --Submit--> QUEUED --Place--> RUNNING --Succeed--> SUCCEEDED
//                       ^                  |
//                       +-----Requeue------+  (attempt failed, a restart remains: restarts + 1)
//                                          +--Fail--> FAILED  (attempt failed, no restart left)
//                       +-----Preempted----+  (a higher-priority job took the slots: no restart used)
//                       +-----Resized------+  (an elastic job stopped itself to grow: nothing used)
//                       +-----Restored-----+  (restored from a backup taken while it ran: nothing used)
//   QUEUED or RUNNING --Cancel--> CANCELLED
//   QUEUED --Abandon--> FAILED  (it can never start: an evaluation run whose checkpoint is gone)
//
// FailAttempt chooses between Requeue and Fail by the restart budget (spec.max_restarts), and
// RankExited turns a rank's exit into FailAttempt (non-zero code) or Succeed (the last rank).
// The job's attempt is active exactly while it is RUNNING; an active attempt's placement is what
// holds worker slots (SlotsHeld), so every transition out of RUNNING frees them.
//
// Each transition checks that it is legal from the record's current state and throws kInternal
// otherwise: the coordinator checks the state before it calls one, so an illegal transition is
// a bug of ours. Each returns the message of the state event the caller appends (and shows as
// Job.message). Pure: no store, no clock (the time is an argument), no logging.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "trm/coordinator/scheduler.h"
#include "trm/v1/state.pb.h"

namespace trm::coordinator {

bool Terminal(v1::JobState s);
std::string StateName(v1::JobState s);  // queued, running, ...

// A fresh record (no id yet) becomes job `id`, QUEUED. An unnamed spec is named after its config
// (or the id).
std::string Submit(v1::JobRecord* rec, const std::string& id, v1::JobSpec spec, const std::string& resolved_config_json,
                   const std::string& dataset_hash, int64_t now_ms);

// The world sizes from `max` down to `min` (0: `max` alone) that divide `global_batch`, largest
// first (Job.world_sizes).
std::vector<int> ElasticWorldSizes(int max, int min, int64_t global_batch);
// Job.world_sizes; spec.world_size alone for records from before elastic jobs.
std::vector<int> WorldSizesOf(const v1::JobRecord& rec);
// Ranks of the current (or last) attempt: attempt.world_size; spec.world_size for older records.
int AttemptWorldSize(const v1::JobRecord& rec);
// Whether the active attempt is stopping so that its (elastic) job can grow.
bool Resizing(const v1::JobRecord& rec);

// QUEUED -> RUNNING: a new attempt (the next number) with `groups` (every rank of the world,
// each group non-empty; their ranks one of WorldSizesOf), the rendezvous on
// `master_addr:master_port`, resuming from the job's latest checkpoint.
std::string Place(v1::JobRecord* rec, const std::vector<RankGroup>& groups, const std::string& master_addr,
                  uint32_t master_port, int64_t now_ms);

// RUNNING -> QUEUED: the attempt ended as failed (`kind` is Job.failure_kind, `why` the reason);
// a restart is used. Illegal when no restart remains.
std::string Requeue(v1::JobRecord* rec, const std::string& kind, const std::string& why, int64_t now_ms);
// RUNNING -> FAILED: the attempt ended as failed and the job with it.
std::string Fail(v1::JobRecord* rec, const std::string& kind, const std::string& why, int64_t now_ms);
// QUEUED -> FAILED without an attempt: the job can never start (`kind`, `why` as for Fail).
std::string Abandon(v1::JobRecord* rec, const std::string& kind, const std::string& why, int64_t now_ms);
// RUNNING -> Requeue while restarts remain, else Fail.
std::string FailAttempt(v1::JobRecord* rec, const std::string& kind, const std::string& why, int64_t now_ms);

// RUNNING -> SUCCEEDED: legal once every rank of the world has exited with code 0.
std::string Succeed(v1::JobRecord* rec, int64_t now_ms);

// RUNNING, its attempt being preempted -> the attempt's ranks are told to save and stop for job
// `by` (priority `priority`); they have until `deadline_ms`.
std::string StartPreemption(v1::JobRecord* rec, const std::string& by, int priority, int64_t deadline_ms);
// RUNNING, an elastic job below its largest size -> its ranks are told to save and stop so that
// the next placement can use `to` ranks (slots freed up); they have until `deadline_ms`. The
// attempt reads as being preempted by its own job.
std::string StartResize(v1::JobRecord* rec, int to, int64_t deadline_ms);
// RUNNING (being preempted) -> QUEUED: the attempt ended by preemption; preemptions + 1 (a
// resize: resizes + 1), no restart used; the next attempt resumes from the latest checkpoint.
std::string Preempted(v1::JobRecord* rec, const std::string& why, int64_t now_ms);
// RUNNING -> QUEUED: the coordinator was restored from a backup taken while this attempt ran;
// its ranks went on past the snapshot, so the attempt is void: nothing used, and the next
// attempt resumes from the latest checkpoint the backup holds.
std::string Restored(v1::JobRecord* rec, const std::string& why, int64_t now_ms);

// QUEUED or RUNNING -> CANCELLED (a user's cancel; an already ended job is the caller's no-op).
std::string Cancel(v1::JobRecord* rec, int64_t now_ms);

// A rank of the running attempt exited (on `worker_id`): recorded in the attempt. In an attempt
// being preempted, the last rank's exit ends it as Preempted (Succeed if every rank exited 0:
// the job finished first). Otherwise a non-zero code fails the attempt (kind: the worker's failure_kind, else signal / exit_code; the message
// carries the end of the rank's log), the last rank's zero exit succeeds the job. Returns the
// state message when the job's state changed, nullopt while other ranks still run.
std::optional<std::string> RankExited(v1::JobRecord* rec, const v1::RankExit& exit, const std::string& worker_id,
                                      int64_t now_ms);

// The worker slots the record holds: ranks of its active attempt per worker (none when no
// attempt is active).
std::map<std::string, int> SlotsHeld(const v1::JobRecord& rec);

}  // namespace trm::coordinator
