// The job lifecycle's transitions on a bare record: every legal one and what it does to the job,
// its attempt and the slots it holds; illegal ones refused with the record left as it was.
#include "job_lifecycle.h"

#include <google/protobuf/util/message_differencer.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "trm/common/error.h"

namespace trm::coordinator {
namespace {

v1::JobRecord Submitted(int world, int max_restarts = 0) {
  v1::JobSpec spec;
  spec.set_config_name("cfg_tiny");
  spec.set_world_size(world);
  spec.set_max_restarts(max_restarts);
  v1::JobRecord rec;
  Submit(&rec, "job-000001", spec, R"({"lr": 0.001})", "abc", 1000);
  return rec;
}

// w1 gets ranks 0..1, w2 the rest.
std::vector<RankGroup> Groups(int world) {
  std::vector<RankGroup> g{{"w1", {}}};
  for (int r = 0; r < world; ++r) {
    if (r == 2) g.push_back({"w2", {}});
    g.back().ranks.push_back(r);
  }
  return g;
}

v1::JobRecord Running(int world, int max_restarts = 0) {
  v1::JobRecord rec = Submitted(world, max_restarts);
  Place(&rec, Groups(world), "10.0.0.1", 29500, 2000);
  return rec;
}

v1::RankExit Exit(int rank, int code, int signal = 0, const std::string& message = "", const std::string& kind = "") {
  v1::RankExit x;
  x.set_rank(rank);
  x.set_exit_code(code);
  x.set_signal(signal);
  x.set_message(message);
  x.set_failure_kind(kind);
  return x;
}

// The transition throws kInternal and leaves the record exactly as it was.
void ExpectIllegal(v1::JobRecord rec, const std::function<void(v1::JobRecord*)>& transition, const char* what) {
  const v1::JobRecord before = rec;
  try {
    transition(&rec);
    ADD_FAILURE() << what << ": accepted from " << StateName(before.job().state());
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kInternal) << what;
    EXPECT_NE(std::string(e.what()).find("job-000001"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(google::protobuf::util::MessageDifferencer::Equals(rec, before)) << what;
}

void ExpectNothingLegalBut(const v1::JobRecord& rec, const std::vector<std::string>& legal) {
  auto allowed = [&](const std::string& t) { return std::find(legal.begin(), legal.end(), t) != legal.end(); };
  const std::vector<std::pair<std::string, std::function<void(v1::JobRecord*)>>> all = {
      {"submit", [](v1::JobRecord* r) { Submit(r, "job-000001", v1::JobSpec(), "{}", "", 1); }},
      {"place", [](v1::JobRecord* r) { Place(r, Groups(r->job().spec().world_size()), "h", 1, 1); }},
      {"requeue", [](v1::JobRecord* r) { Requeue(r, "hang", "x", 1); }},
      {"fail", [](v1::JobRecord* r) { Fail(r, "hang", "x", 1); }},
      {"fail attempt", [](v1::JobRecord* r) { FailAttempt(r, "hang", "x", 1); }},
      {"succeed", [](v1::JobRecord* r) { Succeed(r, 1); }},
      {"cancel", [](v1::JobRecord* r) { Cancel(r, 1); }},
      {"rank exited", [](v1::JobRecord* r) { RankExited(r, Exit(0, 0), "w1", 1); }},
  };
  for (const auto& [name, t] : all)
    if (!allowed(name)) ExpectIllegal(rec, t, name.c_str());
}

TEST(JobLifecycleTest, SubmitQueuesAFreshRecord) {
  v1::JobSpec spec;
  spec.set_config_name("cfg_tiny");
  spec.set_world_size(3);
  v1::JobRecord rec;
  EXPECT_EQ(Submit(&rec, "job-000007", spec, "{}", "abc", 1234), "submitted: 3 ranks");
  EXPECT_EQ(rec.job().id(), "job-000007");
  EXPECT_EQ(rec.job().state(), v1::JOB_QUEUED);
  EXPECT_EQ(rec.job().spec().name(), "cfg_tiny");  // unnamed: named after its config
  EXPECT_EQ(rec.job().created_unix_ms(), 1234);
  EXPECT_EQ(rec.job().resolved_config_json(), "{}");
  EXPECT_EQ(rec.job().dataset_hash(), "abc");
  EXPECT_FALSE(rec.attempt().active());
  EXPECT_TRUE(SlotsHeld(rec).empty());

  spec.clear_config_name();
  v1::JobRecord inline_config;
  Submit(&inline_config, "job-000008", spec, "{}", "", 1);
  EXPECT_EQ(inline_config.job().spec().name(), "job-000008");
  spec.set_name("mine");
  v1::JobRecord named;
  Submit(&named, "job-000009", spec, "{}", "", 1);
  EXPECT_EQ(named.job().spec().name(), "mine");
}

TEST(JobLifecycleTest, QueuedJobMayBePlacedOrCancelledOnly) {
  ExpectNothingLegalBut(Submitted(2), {"place", "cancel"});
}

TEST(JobLifecycleTest, PlaceStartsAnAttemptThatHoldsItsSlots) {
  v1::JobRecord rec = Submitted(3);
  const std::string msg = Place(&rec, Groups(3), "10.0.0.1", 29500, 2000);
  EXPECT_EQ(msg, "attempt 1 on w1 (ranks 0-1), w2 (ranks 2-2), rendezvous 10.0.0.1:29500");
  EXPECT_EQ(rec.job().state(), v1::JOB_RUNNING);
  EXPECT_EQ(rec.job().attempt(), 1);
  EXPECT_EQ(rec.job().started_unix_ms(), 2000);
  const auto& a = rec.attempt();
  EXPECT_TRUE(a.active());
  EXPECT_EQ(a.number(), 1);
  EXPECT_EQ(a.master_addr(), "10.0.0.1");
  EXPECT_EQ(a.master_port(), 29500u);
  EXPECT_EQ(a.started_unix_ms(), 2000);
  EXPECT_EQ(a.resume_checkpoint(), "");
  ASSERT_EQ(a.placement_size(), 2);
  EXPECT_EQ(a.placement(1).worker_id(), "w2");
  ASSERT_EQ(rec.job().placement_size(), 3);
  EXPECT_EQ(rec.job().placement(2).rank(), 2);
  EXPECT_EQ(rec.job().placement(2).worker_id(), "w2");
  EXPECT_EQ(SlotsHeld(rec), (std::map<std::string, int>{{"w1", 2}, {"w2", 1}}));
}

TEST(JobLifecycleTest, PlaceRefusesAPlacementThatIsNotTheWholeWorld) {
  const v1::JobRecord rec = Submitted(3);
  ExpectIllegal(rec, [](v1::JobRecord* r) { Place(r, Groups(2), "h", 1, 1); }, "two of three ranks");
  ExpectIllegal(rec, [](v1::JobRecord* r) { Place(r, Groups(4), "h", 1, 1); }, "four of three ranks");
  ExpectIllegal(rec, [](v1::JobRecord* r) {
    auto g = Groups(3);
    g.push_back({"w3", {}});
    Place(r, g, "h", 1, 1);
  }, "an empty group");
}

TEST(JobLifecycleTest, RunningJobMayEndEveryWayButBeSubmittedOrPlacedAgain) {
  ExpectNothingLegalBut(Running(2, 1), {"requeue", "fail", "fail attempt", "cancel", "rank exited"});
  // Without a restart left, requeueing is refused too; succeeding needs every rank's exit.
  ExpectNothingLegalBut(Running(2, 0), {"fail", "fail attempt", "cancel", "rank exited"});
}

TEST(JobLifecycleTest, FailAttemptRequeuesWhileRestartsRemainThenFailsTheJob) {
  v1::JobRecord rec = Running(3, 1);
  rec.mutable_job()->set_latest_checkpoint("step_3");
  rec.mutable_attempt()->add_acked_workers("w1");
  std::string msg = FailAttempt(&rec, "hang", "no first step", 5000);
  EXPECT_EQ(msg, "attempt 1 failed (hang): no first step; restarting (1/1) from step_3");
  EXPECT_EQ(rec.job().state(), v1::JOB_QUEUED);
  EXPECT_EQ(rec.job().restarts(), 1);
  EXPECT_EQ(rec.job().failure_kind(), "hang");
  EXPECT_EQ(rec.job().finished_unix_ms(), 0);
  EXPECT_FALSE(rec.attempt().active());
  EXPECT_EQ(rec.attempt().ended_unix_ms(), 5000);
  EXPECT_EQ(rec.job().placement_size(), 0);
  EXPECT_TRUE(SlotsHeld(rec).empty());

  // The next attempt: a fresh record of its own, resuming from the latest checkpoint; the job
  // keeps its first start time.
  msg = Place(&rec, Groups(3), "10.0.0.2", 29501, 6000);
  EXPECT_NE(msg.find("attempt 2 on "), std::string::npos) << msg;
  EXPECT_NE(msg.find(", resuming from step_3"), std::string::npos) << msg;
  EXPECT_EQ(rec.attempt().number(), 2);
  EXPECT_EQ(rec.job().attempt(), 2);
  EXPECT_EQ(rec.attempt().resume_checkpoint(), "step_3");
  EXPECT_EQ(rec.attempt().acked_workers_size(), 0);
  EXPECT_EQ(rec.attempt().exits_size(), 0);
  EXPECT_EQ(rec.job().started_unix_ms(), 2000);
  EXPECT_EQ(rec.job().failure_kind(), "hang");  // the last failure stays visible

  msg = FailAttempt(&rec, "lost_worker", "worker w2 restarted", 7000);
  EXPECT_EQ(msg, "attempt 2 failed (lost_worker): worker w2 restarted");
  EXPECT_EQ(rec.job().state(), v1::JOB_FAILED);
  EXPECT_EQ(rec.job().restarts(), 1);
  EXPECT_EQ(rec.job().failure_kind(), "lost_worker");
  EXPECT_EQ(rec.job().finished_unix_ms(), 7000);
  EXPECT_EQ(rec.attempt().ended_unix_ms(), 7000);
  EXPECT_TRUE(SlotsHeld(rec).empty());
}

TEST(JobLifecycleTest, RequeueFromTheStartWithoutACheckpoint) {
  v1::JobRecord rec = Running(1, 2);
  EXPECT_EQ(Requeue(&rec, "oom", "rank 0 ran out of memory", 3000),
            "attempt 1 failed (oom): rank 0 ran out of memory; restarting (1/2) from the start");
  EXPECT_EQ(rec.job().state(), v1::JOB_QUEUED);
  v1::JobRecord failed = Running(1, 2);
  EXPECT_EQ(Fail(&failed, "bad_input", "bad config", 3000), "attempt 1 failed (bad_input): bad config");
  EXPECT_EQ(failed.job().state(), v1::JOB_FAILED);  // Fail ends the job whatever the budget
  EXPECT_EQ(failed.job().restarts(), 0);
}

TEST(JobLifecycleTest, RankExitsSucceedTheJobOnceEveryRankExitedCleanly) {
  v1::JobRecord rec = Running(2);
  rec.mutable_job()->set_step(7);
  ExpectIllegal(rec, [](v1::JobRecord* r) { Succeed(r, 1); }, "succeed with no exits");
  EXPECT_EQ(RankExited(&rec, Exit(0, 0), "w1", 8000), std::nullopt);
  EXPECT_EQ(rec.job().state(), v1::JOB_RUNNING);
  EXPECT_EQ(rec.attempt().exits_size(), 1);
  EXPECT_EQ(SlotsHeld(rec).at("w1"), 2);  // slots stay held until the attempt ends
  ExpectIllegal(rec, [](v1::JobRecord* r) { Succeed(r, 1); }, "succeed with one of two exits");
  rec.mutable_job()->set_latest_checkpoint("step_7");
  EXPECT_EQ(RankExited(&rec, Exit(1, 0), "w1", 9000), "finished at step 7, checkpoint step_7");
  EXPECT_EQ(rec.job().state(), v1::JOB_SUCCEEDED);
  EXPECT_EQ(rec.job().finished_unix_ms(), 9000);
  EXPECT_FALSE(rec.attempt().active());
  EXPECT_EQ(rec.attempt().ended_unix_ms(), 9000);
  EXPECT_EQ(rec.attempt().exits_size(), 2);
  EXPECT_EQ(rec.job().placement_size(), 0);
  EXPECT_TRUE(SlotsHeld(rec).empty());
  ExpectNothingLegalBut(rec, {});
}

TEST(JobLifecycleTest, SucceedDirectlyNeedsZeroExitCodes) {
  v1::JobRecord rec = Running(1);
  (*rec.mutable_attempt()->mutable_exits())[0] = Exit(0, 0);
  EXPECT_EQ(Succeed(&rec, 5), "finished at step 0");
  v1::JobRecord bad = Running(1);
  (*bad.mutable_attempt()->mutable_exits())[0] = Exit(0, 1);
  ExpectIllegal(bad, [](v1::JobRecord* r) { Succeed(r, 1); }, "succeed over a failed rank");
}

TEST(JobLifecycleTest, FailedRankFailsTheAttemptWithItsKindAndLogTail) {
  v1::JobRecord rec = Running(3, 3);
  auto msg = RankExited(&rec, Exit(2, 1, 0, "error: boom"), "w2", 100);
  ASSERT_TRUE(msg);
  EXPECT_EQ(*msg, "attempt 1 failed (exit_code): rank 2 on w2 exited with code 1: error: boom; restarting (1/3) from "
                  "the start");
  EXPECT_EQ(rec.attempt().exits().at(2).exit_code(), 1);
  EXPECT_EQ(rec.job().state(), v1::JOB_QUEUED);

  Place(&rec, Groups(3), "h", 1, 200);
  msg = RankExited(&rec, Exit(0, -1, 9), "w1", 300);
  EXPECT_NE(msg->find("(signal): rank 0 on w1 killed by signal 9;"), std::string::npos) << *msg;

  Place(&rec, Groups(3), "h", 1, 400);
  const std::string log = "start" + std::string(3000, 'x') + "the end";
  msg = RankExited(&rec, Exit(1, -1, 9, log, "oom"), "w1", 500);
  EXPECT_EQ(rec.job().failure_kind(), "oom");  // the worker's classification wins
  const std::string tail = "..." + log.substr(log.size() - 2000);
  EXPECT_NE(msg->find("killed by signal 9: " + tail + ";"), std::string::npos);
  EXPECT_EQ(msg->find("startx"), std::string::npos);  // only the end of the log
}

TEST(JobLifecycleTest, CancelEndsAQueuedOrRunningJob) {
  v1::JobRecord running = Running(3);
  EXPECT_EQ(Cancel(&running, 4000), "cancelled by the user");
  EXPECT_EQ(running.job().state(), v1::JOB_CANCELLED);
  EXPECT_EQ(running.job().finished_unix_ms(), 4000);
  EXPECT_FALSE(running.attempt().active());
  EXPECT_EQ(running.attempt().ended_unix_ms(), 4000);
  EXPECT_EQ(running.job().placement_size(), 0);
  EXPECT_TRUE(SlotsHeld(running).empty());
  ExpectNothingLegalBut(running, {});

  v1::JobRecord queued = Submitted(1);
  Cancel(&queued, 4000);
  EXPECT_EQ(queued.job().state(), v1::JOB_CANCELLED);
  EXPECT_EQ(queued.attempt().number(), 0);
}

TEST(JobLifecycleTest, FailedJobAllowsNothing) {
  v1::JobRecord rec = Running(1);
  FailAttempt(&rec, "exit_code", "x", 1);
  ASSERT_EQ(rec.job().state(), v1::JOB_FAILED);
  ExpectNothingLegalBut(rec, {});
}

TEST(JobLifecycleTest, TerminalStates) {
  EXPECT_FALSE(Terminal(v1::JOB_QUEUED));
  EXPECT_FALSE(Terminal(v1::JOB_RUNNING));
  EXPECT_TRUE(Terminal(v1::JOB_SUCCEEDED));
  EXPECT_TRUE(Terminal(v1::JOB_FAILED));
  EXPECT_TRUE(Terminal(v1::JOB_CANCELLED));
  EXPECT_EQ(StateName(v1::JOB_RUNNING), "running");
}

}  // namespace
}  // namespace trm::coordinator
