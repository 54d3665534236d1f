// Elastic world sizes (spec.min_world_size): a job runs on the largest of its sizes that fits,
// shrinks when a worker is lost, and grows back onto free slots by saving and stopping itself
// (charged to nothing), on a fake clock.
#include <gtest/gtest.h>

#include "coordinator_fixture.h"
#include "job_lifecycle.h"

namespace trm::coordinator {
namespace {

class ElasticTest : public CoordinatorTest {
 protected:
  void SetUp() override {
    CoordinatorTest::SetUp();
    c_.reset();
    options_.elastic_grow_after_ms = 60 * 1000;
    Open();
  }
  v1::JobSpec Elastic(int world, int min, int max_restarts = 0) {
    v1::JobSpec s = Spec(world);
    s.set_min_world_size(min);
    s.set_max_restarts(max_restarts);
    return s;
  }
  v1::JobState State(const std::string& id) { return c_->GetJob(id).state(); }
  // The assignment of `job` a worker's heartbeat brings, if any.
  static const v1::Assignment* StartOf(const v1::HeartbeatResponse& hb, const std::string& job) {
    for (const auto& a : hb.start())
      if (a.job_id() == job) return &a;
    return nullptr;
  }
};

TEST_F(ElasticTest, WorldSizesAreTheDivisorsOfTheGlobalBatchDownToTheMinimum) {
  EXPECT_EQ(ElasticWorldSizes(4, 1, 8), (std::vector<int>{4, 2, 1}));
  EXPECT_EQ(ElasticWorldSizes(4, 0, 8), (std::vector<int>{4}));
  EXPECT_EQ(ElasticWorldSizes(6, 2, 12), (std::vector<int>{6, 4, 3, 2}));
  EXPECT_EQ(ElasticWorldSizes(3, 3, 12), (std::vector<int>{3}));
}

TEST_F(ElasticTest, SubmissionChecksTheMinimumAndHoldsTheJobToIt) {
  AddWorker("w1", 2);
  Code code{};
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(Elastic(2, 3)); }, &code).find("spec.min_world_size: 3 ranks; expected 1 to world_size (2)"),
            std::string::npos);
  EXPECT_EQ(code, Code::kInvalidArgument);
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(Elastic(4, 3)); }).find("spec.min_world_size: global_batch_size 4 is not divisible by 3"),
            std::string::npos);
  // 4 ranks cannot run on 2 slots; elastic down to 2 they can.
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(Spec(4)); }, &code).find("spec.world_size: 4 ranks, but the live workers have 2 slots"),
            std::string::npos);
  EXPECT_EQ(code, Code::kFailedPrecondition);
  const std::string id = c_->SubmitJob(Elastic(4, 2));
  const v1::Job j = c_->GetJob(id);
  EXPECT_EQ(std::vector<int>(j.world_sizes().begin(), j.world_sizes().end()), (std::vector<int>{4, 2}));
  EXPECT_EQ(j.world_size(), 0);  // no attempt yet
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(Elastic(4, 4)); }).find("spec.world_size: 4 ranks, but the live workers have 2"),
            std::string::npos);
}

TEST_F(ElasticTest, RunsShrunkThenGrowsBackOntoFreedSlotsWithoutUsingARestart) {
  AddWorker("w1", 1);
  Beat("w1");
  const std::string id = c_->SubmitJob(Elastic(2, 1));
  v1::HeartbeatResponse hb = Beat("w1");
  c_->Tick();
  v1::Job j = c_->GetJob(id);
  ASSERT_EQ(j.state(), v1::JOB_RUNNING) << j.queue_reason();
  EXPECT_EQ(j.world_size(), 1);
  EXPECT_NE(j.message().find("1 of 2 ranks: elastic"), std::string::npos) << j.message();
  hb = Beat("w1");
  const v1::Assignment* a = StartOf(hb, id);
  ASSERT_NE(a, nullptr);
  EXPECT_EQ(a->world_size(), 1);
  EXPECT_EQ(a->ranks_size(), 1);
  // A second worker joins; the attempt is young: it keeps running on one rank.
  AddWorker("w2", 1);
  now_ += 30 * 1000;
  Beat("w1", {{id, 1}});
  Beat("w2");
  c_->Tick();
  EXPECT_EQ(c_->GetJob(id).message().find("resizing"), std::string::npos);
  // Past elastic_grow_after_ms with nothing waiting: its ranks are told to save and stop.
  now_ += 31 * 1000;
  Beat("w1", {{id, 1}});
  Beat("w2");
  c_->Tick();
  EXPECT_NE(c_->GetJob(id).message().find("resizing: attempt 1 runs on 1 of 2 ranks and 2 can run now"), std::string::npos)
      << c_->GetJob(id).message();
  hb = Beat("w1", {{id, 1}});
  ASSERT_EQ(hb.stop_size(), 1);
  EXPECT_TRUE(hb.stop(0).preempt());
  EXPECT_EQ(hb.stop(0).reason(), "resizing onto more ranks");
  c_->Tick();  // one resize at a time, and no second order
  // Meanwhile the free slot stays the resizing job's: a job of its priority submitted now waits.
  const std::string newcomer = c_->SubmitJob(Spec(1));
  Beat("w2");
  c_->Tick();
  EXPECT_EQ(State(newcomer), v1::JOB_QUEUED);
  EXPECT_EQ(c_->GetJob(newcomer).queue_reason(), "waiting while " + id + " stops to resize onto the free slots");
  Report("w1", id, 1, {Exit(0, 130)});
  j = c_->GetJob(id);
  EXPECT_EQ(j.state(), v1::JOB_QUEUED);
  EXPECT_EQ(j.resizes(), 1);
  EXPECT_EQ(j.preemptions(), 0);
  EXPECT_EQ(j.restarts(), 0);
  EXPECT_NE(j.message().find("stopped to resize"), std::string::npos) << j.message();
  Beat("w1");
  Beat("w2");
  c_->Tick();
  j = c_->GetJob(id);
  ASSERT_EQ(j.state(), v1::JOB_RUNNING);
  EXPECT_EQ(j.attempt(), 2);
  EXPECT_EQ(j.world_size(), 2);
  EXPECT_EQ(j.placement_size(), 2);
  EXPECT_EQ(State(newcomer), v1::JOB_QUEUED);  // it kept its place ahead of the newcomer
  c_->CancelJob(newcomer);
  // At its full size it never resizes again.
  now_ += 10 * 60 * 1000;
  Beat("w1", {{id, 2}});
  Beat("w2", {{id, 2}});
  c_->Tick();
  EXPECT_EQ(c_->GetJob(id).attempt(), 2);
  EXPECT_EQ(c_->GetJob(id).message().find("resizing"), std::string::npos);
  // Both ranks finish: succeeded on the attempt's two ranks.
  Report(j.placement(0).worker_id(), id, 2, {Exit(j.placement(0).rank(), 0)});
  Report(j.placement(1).worker_id(), id, 2, {Exit(j.placement(1).rank(), 0)});
  EXPECT_EQ(State(id), v1::JOB_SUCCEEDED);
}

TEST_F(ElasticTest, ALostWorkerShrinksTheJobOntoTheOthers) {
  AddWorker("w1", 1);
  AddWorker("w2", 1);
  Beat("w1");
  Beat("w2");
  const std::string id = c_->SubmitJob(Elastic(2, 1, /*max_restarts=*/1));
  c_->Tick();
  ASSERT_EQ(c_->GetJob(id).world_size(), 2);
  // w2 goes silent past the heartbeat timeout: the attempt fails (a restart), and the job
  // resumes on the one worker left.
  now_ += 16 * 1000;
  Beat("w1", {{id, 1}});
  c_->Tick();
  v1::Job j = c_->GetJob(id);
  EXPECT_EQ(j.restarts(), 1);
  EXPECT_EQ(j.failure_kind(), "lost_worker");
  Beat("w1");
  c_->Tick();
  j = c_->GetJob(id);
  ASSERT_EQ(j.state(), v1::JOB_RUNNING) << j.queue_reason();
  EXPECT_EQ(j.attempt(), 2);
  EXPECT_EQ(j.world_size(), 1);
  EXPECT_EQ(j.placement(0).worker_id(), "w1");
}

// A rank whose peer died fails at once, before the peer's worker stops counting as alive: the
// retry waits until every worker of the ended attempt has reported since, or is lost.
TEST_F(ElasticTest, ARetryWaitsForTheWorkersOfTheEndedAttempt) {
  AddWorker("w1", 1);
  AddWorker("w2", 1);
  Beat("w1");
  Beat("w2");
  const std::string elastic = c_->SubmitJob(Elastic(2, 1, 1));
  c_->Tick();
  ASSERT_EQ(c_->GetJob(elastic).world_size(), 2);
  now_ += 1000;
  const v1::Job j = c_->GetJob(elastic);
  const std::string head = j.placement(0).worker_id(), other = head == "w1" ? "w2" : "w1";
  Report(head, elastic, 1, {Exit(0, 1)});
  ASSERT_EQ(State(elastic), v1::JOB_QUEUED);
  Beat(head);
  c_->Tick();
  // Not placed on what is free now (it would shrink, or land on a dead worker).
  EXPECT_EQ(State(elastic), v1::JOB_QUEUED);
  EXPECT_EQ(c_->GetJob(elastic).queue_reason(),
            "waiting for " + other + " to report after attempt 1 ended (a worker that died is lost after --heartbeat-timeout-s)");
  // The other worker is silent past the heartbeat timeout: lost; the job runs on the one left.
  now_ += 15 * 1000;
  Beat(head);
  c_->Tick();
  v1::Job retry = c_->GetJob(elastic);
  ASSERT_EQ(retry.state(), v1::JOB_RUNNING) << retry.queue_reason();
  EXPECT_EQ(retry.world_size(), 1);
  EXPECT_EQ(retry.placement(0).worker_id(), head);
  // The same failure with both workers alive: the retry starts once both reported, on 2 ranks.
  c_->CancelJob(elastic);
  AddWorker(other, 1);
  Beat(head);
  Beat(other);
  const std::string again = c_->SubmitJob(Elastic(2, 1, 1));
  c_->Tick();
  ASSERT_EQ(c_->GetJob(again).world_size(), 2);
  now_ += 1000;
  const v1::Job f = c_->GetJob(again);
  Report(f.placement(0).worker_id(), again, 1, {Exit(0, 1)});
  Beat(f.placement(0).worker_id());
  c_->Tick();
  EXPECT_EQ(State(again), v1::JOB_QUEUED);
  Beat(f.placement(1).worker_id());
  c_->Tick();
  EXPECT_EQ(State(again), v1::JOB_RUNNING);
  EXPECT_EQ(c_->GetJob(again).world_size(), 2);
}

TEST_F(ElasticTest, NoGrowthWhileATrainingJobWaitsAndQuotasCapTheSize) {
  AddWorker("w1", 1);
  Beat("w1");
  const std::string id = c_->SubmitJob(Elastic(2, 1));
  c_->Tick();
  ASSERT_EQ(c_->GetJob(id).world_size(), 1);
  AddWorker("w2", 1);
  const std::string waiting = c_->SubmitJob(Spec(2));  // 1 slot free: waits
  now_ += 61 * 1000;
  Beat("w1", {{id, 1}});
  Beat("w2");
  c_->Tick();
  EXPECT_EQ(State(waiting), v1::JOB_QUEUED);
  EXPECT_EQ(c_->GetJob(id).message().find("resizing"), std::string::npos) << c_->GetJob(id).message();
  const v1::GetQueueResponse q = c_->GetQueue();
  ASSERT_EQ(q.entries_size(), 1);
  EXPECT_EQ(q.entries(0).slots(), 2);
  EXPECT_EQ(q.entries(0).min_slots(), 2);
  c_->CancelJob(waiting);
  c_->CancelJob(id);

  // With a quota of 1 slot, an elastic job runs on 1 rank of 2 slots free, and does not grow.
  c_.reset();
  options_.default_quota_slots = 1;
  Open();
  Beat("w1");
  Beat("w2");
  const std::string capped = c_->SubmitJob(Elastic(2, 1), Principal{"bob", Role::kSubmit});
  c_->Tick();
  ASSERT_EQ(c_->GetJob(capped).world_size(), 1);
  now_ += 61 * 1000;
  Beat("w1", {{capped, 1}});
  Beat("w2", {{capped, 1}});
  c_->Tick();
  EXPECT_EQ(c_->GetJob(capped).message().find("resizing"), std::string::npos);
}

}  // namespace
}  // namespace trm::coordinator
