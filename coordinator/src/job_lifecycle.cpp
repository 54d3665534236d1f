#include "job_lifecycle.h"

#include <algorithm>

#include "trm/common/error.h"

namespace trm::coordinator {
namespace {

std::string Describe(const v1::JobRecord& rec) {
  std::string s = StateName(rec.job().state());
  if (rec.attempt().active()) s += ", attempt " + std::to_string(rec.attempt().number()) + " active";
  return s;
}

[[noreturn]] void Illegal(const v1::JobRecord& rec, const std::string& transition, const std::string& expected) {
  ThrowError(Code::kInternal, "job " + rec.job().id() + ": cannot " + transition + " it (" + Describe(rec) +
                                  "): expected " + expected);
}

void RequireRunning(const v1::JobRecord& rec, const std::string& transition) {
  if (rec.job().state() != v1::JOB_RUNNING || !rec.attempt().active())
    Illegal(rec, transition, "a running job with an active attempt");
}

// Ends the active attempt; the job's per-rank placement goes with it (its slots are free).
void EndAttempt(v1::JobRecord* rec, int64_t now_ms) {
  rec->mutable_attempt()->set_active(false);
  rec->mutable_attempt()->set_ended_unix_ms(now_ms);
  rec->mutable_job()->clear_placement();
}

std::string FailedMessage(const v1::JobRecord& rec, const std::string& kind, const std::string& why) {
  return "attempt " + std::to_string(rec.attempt().number()) + " failed (" + kind + "): " + why;
}

}  // namespace

bool Terminal(v1::JobState s) {
  return s == v1::JOB_SUCCEEDED || s == v1::JOB_FAILED || s == v1::JOB_CANCELLED;
}

std::string StateName(v1::JobState s) {
  switch (s) {
    case v1::JOB_QUEUED: return "queued";
    case v1::JOB_RUNNING: return "running";
    case v1::JOB_SUCCEEDED: return "succeeded";
    case v1::JOB_FAILED: return "failed";
    case v1::JOB_CANCELLED: return "cancelled";
    default: return "unspecified";
  }
}

std::string Submit(v1::JobRecord* rec, const std::string& id, v1::JobSpec spec, const std::string& resolved_config_json,
                   const std::string& dataset_hash, int64_t now_ms) {
  if (!rec->job().id().empty() || rec->job().state() != v1::JOB_STATE_UNSPECIFIED)
    Illegal(*rec, "submit", "a new record");
  auto* j = rec->mutable_job();
  j->set_id(id);
  if (spec.name().empty()) spec.set_name(spec.config_name().empty() ? id : spec.config_name());
  *j->mutable_spec() = std::move(spec);
  j->set_state(v1::JOB_QUEUED);
  j->set_created_unix_ms(now_ms);
  j->set_resolved_config_json(resolved_config_json);
  j->set_dataset_hash(dataset_hash);
  return "submitted: " + std::to_string(j->spec().world_size()) + " ranks";
}

std::vector<int> ElasticWorldSizes(int max, int min, int64_t global_batch) {
  std::vector<int> out;
  for (int n = max; n >= std::max(1, min == 0 ? max : min); --n)
    if (global_batch > 0 && global_batch % n == 0) out.push_back(n);
  return out;
}

std::vector<int> WorldSizesOf(const v1::JobRecord& rec) {
  if (rec.job().world_sizes_size() > 0)
    return std::vector<int>(rec.job().world_sizes().begin(), rec.job().world_sizes().end());
  return {rec.job().spec().world_size()};
}

int AttemptWorldSize(const v1::JobRecord& rec) {
  return rec.attempt().world_size() > 0 ? rec.attempt().world_size() : rec.job().spec().world_size();
}

bool Resizing(const v1::JobRecord& rec) {
  return rec.attempt().active() && rec.attempt().preempted_by() == rec.job().id();
}

std::string Place(v1::JobRecord* rec, const std::vector<RankGroup>& groups, const std::string& master_addr,
                  uint32_t master_port, int64_t now_ms) {
  if (rec->job().state() != v1::JOB_QUEUED || rec->attempt().active()) Illegal(*rec, "place", "a queued job");
  size_t ranks = 0;
  for (const auto& g : groups) {
    if (g.ranks.empty()) Illegal(*rec, "place", "no empty rank group");
    ranks += g.ranks.size();
  }
  const std::vector<int> sizes = WorldSizesOf(*rec);
  if (std::find(sizes.begin(), sizes.end(), static_cast<int>(ranks)) == sizes.end())
    Illegal(*rec, "place", "one of its world sizes (" + std::to_string(sizes.front()) + " down to " +
                               std::to_string(sizes.back()) + "), not " + std::to_string(ranks) + " ranks");
  v1::AttemptRecord a;
  a.set_world_size(static_cast<int>(ranks));
  a.set_number(rec->attempt().number() + 1);
  a.set_master_addr(master_addr);
  a.set_master_port(master_port);
  a.set_resume_checkpoint(rec->job().latest_checkpoint());
  a.set_active(true);
  a.set_started_unix_ms(now_ms);
  std::string where;
  auto* j = rec->mutable_job();
  j->clear_placement();
  for (const auto& g : groups) {
    auto* p = a.add_placement();
    p->set_worker_id(g.worker_id);
    for (int r : g.ranks) {
      p->add_ranks(r);
      auto* rp = j->add_placement();
      rp->set_rank(r);
      rp->set_worker_id(g.worker_id);
    }
    where += (where.empty() ? "" : ", ") + g.worker_id + " (ranks " + std::to_string(g.ranks.front()) + "-" +
             std::to_string(g.ranks.back()) + ")";
  }
  *rec->mutable_attempt() = a;
  j->set_attempt(a.number());
  j->set_world_size(a.world_size());
  j->set_state(v1::JOB_RUNNING);
  if (j->started_unix_ms() == 0) j->set_started_unix_ms(now_ms);
  if (a.world_size() < sizes.front())
    where += " (" + std::to_string(a.world_size()) + " of " + std::to_string(sizes.front()) + " ranks: elastic)";
  return "attempt " + std::to_string(a.number()) + " on " + where + ", rendezvous " + a.master_addr() + ":" +
         std::to_string(master_port) + (a.resume_checkpoint().empty() ? "" : ", resuming from " + a.resume_checkpoint());
}

std::string Requeue(v1::JobRecord* rec, const std::string& kind, const std::string& why, int64_t now_ms) {
  RequireRunning(*rec, "requeue");
  auto* j = rec->mutable_job();
  if (j->restarts() >= j->spec().max_restarts())
    Illegal(*rec, "requeue", "a restart left (" + std::to_string(j->restarts()) + " of " +
                                 std::to_string(j->spec().max_restarts()) + " used)");
  EndAttempt(rec, now_ms);
  j->set_failure_kind(kind);
  j->set_restarts(j->restarts() + 1);
  j->set_state(v1::JOB_QUEUED);
  return FailedMessage(*rec, kind, why) + "; restarting (" + std::to_string(j->restarts()) + "/" +
         std::to_string(j->spec().max_restarts()) + ") from " +
         (j->latest_checkpoint().empty() ? std::string("the start") : j->latest_checkpoint());
}

std::string Fail(v1::JobRecord* rec, const std::string& kind, const std::string& why, int64_t now_ms) {
  RequireRunning(*rec, "fail");
  EndAttempt(rec, now_ms);
  rec->mutable_job()->set_failure_kind(kind);
  rec->mutable_job()->set_state(v1::JOB_FAILED);
  rec->mutable_job()->set_finished_unix_ms(now_ms);
  return FailedMessage(*rec, kind, why);
}

std::string Abandon(v1::JobRecord* rec, const std::string& kind, const std::string& why, int64_t now_ms) {
  if (rec->job().state() != v1::JOB_QUEUED || rec->attempt().active()) Illegal(*rec, "abandon", "a queued job");
  rec->mutable_job()->set_failure_kind(kind);
  rec->mutable_job()->set_state(v1::JOB_FAILED);
  rec->mutable_job()->set_finished_unix_ms(now_ms);
  return "not started (" + kind + "): " + why;
}

std::string FailAttempt(v1::JobRecord* rec, const std::string& kind, const std::string& why, int64_t now_ms) {
  if (rec->job().restarts() < rec->job().spec().max_restarts()) return Requeue(rec, kind, why, now_ms);
  return Fail(rec, kind, why, now_ms);
}

std::string Succeed(v1::JobRecord* rec, int64_t now_ms) {
  RequireRunning(*rec, "succeed");
  const auto& exits = rec->attempt().exits();
  bool clean = exits.size() == static_cast<size_t>(AttemptWorldSize(*rec));
  for (const auto& [rank, x] : exits) clean = clean && x.exit_code() == 0;
  if (!clean) Illegal(*rec, "succeed", "every rank exited with code 0");
  EndAttempt(rec, now_ms);
  auto* j = rec->mutable_job();
  j->set_state(v1::JOB_SUCCEEDED);
  j->set_finished_unix_ms(now_ms);
  return "finished at step " + std::to_string(j->step()) +
         (j->latest_checkpoint().empty() ? "" : ", checkpoint " + j->latest_checkpoint());
}

std::string Cancel(v1::JobRecord* rec, int64_t now_ms) {
  if (rec->job().state() != v1::JOB_QUEUED && rec->job().state() != v1::JOB_RUNNING)
    Illegal(*rec, "cancel", "a queued or running job");
  EndAttempt(rec, now_ms);
  rec->mutable_job()->set_state(v1::JOB_CANCELLED);
  rec->mutable_job()->set_finished_unix_ms(now_ms);
  return "cancelled by the user";
}

std::optional<std::string> RankExited(v1::JobRecord* rec, const v1::RankExit& x, const std::string& worker_id,
                                      int64_t now_ms) {
  RequireRunning(*rec, "record a rank exit of");
  (*rec->mutable_attempt()->mutable_exits())[x.rank()] = x;
  if (!rec->attempt().preempted_by().empty()) {
    // Told to stop: however the ranks end (saved and exited, killed after the grace period),
    // it is a preemption, not a failure.
    if (rec->attempt().exits_size() < AttemptWorldSize(*rec)) return std::nullopt;
    bool clean = true;
    for (const auto& [rank, e] : rec->attempt().exits()) clean = clean && e.exit_code() == 0 && e.signal() == 0;
    if (clean) return Succeed(rec, now_ms);
    return Preempted(rec, "its ranks stopped", now_ms);
  }
  if (x.exit_code() != 0) {
    const std::string how = x.signal() ? "killed by signal " + std::to_string(x.signal())
                                       : "exited with code " + std::to_string(x.exit_code());
    std::string tail = x.message();
    if (tail.size() > 2000) tail = "..." + tail.substr(tail.size() - 2000);
    return FailAttempt(rec, x.failure_kind().empty() ? (x.signal() ? "signal" : "exit_code") : x.failure_kind(),
                       "rank " + std::to_string(x.rank()) + " on " + worker_id + " " + how +
                           (tail.empty() ? "" : ": " + tail),
                       now_ms);
  }
  if (rec->attempt().exits_size() == AttemptWorldSize(*rec)) return Succeed(rec, now_ms);
  return std::nullopt;
}

std::string StartPreemption(v1::JobRecord* rec, const std::string& by, int priority, int64_t deadline_ms) {
  RequireRunning(*rec, "preempt");
  if (!rec->attempt().preempted_by().empty()) Illegal(*rec, "preempt", "an attempt not being preempted yet");
  rec->mutable_attempt()->set_preempted_by(by);
  rec->mutable_attempt()->set_preempt_deadline_unix_ms(deadline_ms);
  return "preempting attempt " + std::to_string(rec->attempt().number()) + " for " + by + " (priority " +
         std::to_string(priority) + "): its ranks save a checkpoint and stop";
}

std::string StartResize(v1::JobRecord* rec, int to, int64_t deadline_ms) {
  RequireRunning(*rec, "resize");
  if (!rec->attempt().preempted_by().empty()) Illegal(*rec, "resize", "an attempt not being preempted yet");
  const std::vector<int> sizes = WorldSizesOf(*rec);
  if (to <= AttemptWorldSize(*rec) || std::find(sizes.begin(), sizes.end(), to) == sizes.end())
    Illegal(*rec, "resize", "a larger world size it may run on, not " + std::to_string(to));
  rec->mutable_attempt()->set_preempted_by(rec->job().id());
  rec->mutable_attempt()->set_preempt_deadline_unix_ms(deadline_ms);
  return "resizing: attempt " + std::to_string(rec->attempt().number()) + " runs on " +
         std::to_string(AttemptWorldSize(*rec)) + " of " + std::to_string(sizes.front()) + " ranks and " +
         std::to_string(to) + " can run now: its ranks save a checkpoint and stop, to resume on more";
}

std::string Preempted(v1::JobRecord* rec, const std::string& why, int64_t now_ms) {
  RequireRunning(*rec, "end the preemption of");
  if (rec->attempt().preempted_by().empty()) Illegal(*rec, "end the preemption of", "an attempt being preempted");
  const std::string by = rec->attempt().preempted_by();
  const bool resize = Resizing(*rec);
  EndAttempt(rec, now_ms);
  auto* j = rec->mutable_job();
  j->set_state(v1::JOB_QUEUED);
  if (resize) {
    j->set_resizes(j->resizes() + 1);
    return "attempt " + std::to_string(rec->attempt().number()) + " stopped to resize (" + why +
           "); queued again, to resume on more ranks from " +
           (j->latest_checkpoint().empty() ? std::string("the start") : "its latest checkpoint");
  }
  j->set_preemptions(j->preemptions() + 1);
  return "attempt " + std::to_string(rec->attempt().number()) + " preempted by " + by + " (" + why +
         "); queued again, to resume from " + (j->latest_checkpoint().empty() ? std::string("the start") : "its latest checkpoint");
}

std::string Restored(v1::JobRecord* rec, const std::string& why, int64_t now_ms) {
  RequireRunning(*rec, "void the attempt of");
  EndAttempt(rec, now_ms);
  auto* j = rec->mutable_job();
  j->set_state(v1::JOB_QUEUED);
  return "attempt " + std::to_string(rec->attempt().number()) + " void (" + why + "); queued again, to resume from " +
         (j->latest_checkpoint().empty() ? std::string("the start") : j->latest_checkpoint());
}

std::map<std::string, int> SlotsHeld(const v1::JobRecord& rec) {
  std::map<std::string, int> n;
  if (!rec.attempt().active()) return n;
  for (const auto& p : rec.attempt().placement()) n[p.worker_id()] += p.ranks_size();
  return n;
}

}  // namespace trm::coordinator
