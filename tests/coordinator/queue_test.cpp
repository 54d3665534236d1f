// The queue people read (trmctl queue / Job.queue_reason) and fairness they can predict: FIFO
// within a priority, backfill only while the job ahead could not start anyway, and no
// starvation: a job that has waited past max_wait_ms keeps the slots that free up.
#include <gtest/gtest.h>

#include "coordinator_fixture.h"

namespace trm::coordinator {
namespace {

class QueueTest : public CoordinatorTest {
 protected:
  // Offers a rendezvous port (one placement per heartbeat) and runs a scheduling pass, `n` times.
  void Pass(const std::string& worker, int n = 1) {
    for (int i = 0; i < n; ++i) {
      Beat(worker);
      c_->Tick();
    }
  }
  v1::JobState State(const std::string& id) { return c_->GetJob(id).state(); }
  void Finish(const std::string& id) {
    const v1::Job j = c_->GetJob(id);
    std::vector<v1::WorkerEvent> exits;
    for (int r = 0; r < j.spec().world_size(); ++r) exits.push_back(Exit(r, 0));
    Report(j.placement(0).worker_id(), id, j.attempt(), exits);
    ASSERT_EQ(State(id), v1::JOB_SUCCEEDED);
  }
};

TEST_F(QueueTest, OrderPositionsAndReasons) {
  AddWorker("w1", 2);
  Pass("w1");
  v1::JobSpec top = Spec(2);
  top.set_priority(10);  // nothing below preempts it
  const std::string running = c_->SubmitJob(top);
  Pass("w1");
  ASSERT_EQ(State(running), v1::JOB_RUNNING);
  now_ += 1000;
  const std::string low = c_->SubmitJob(Spec(1));
  now_ += 1000;
  v1::JobSpec urgent = Spec(2);
  urgent.set_priority(5);
  const std::string high = c_->SubmitJob(urgent);
  now_ += 1000;
  const std::string later = c_->SubmitJob(Spec(1));
  c_->Tick();
  const v1::GetQueueResponse q = c_->GetQueue();
  ASSERT_EQ(q.entries_size(), 3);
  EXPECT_EQ(q.free_slots(), 0);
  EXPECT_EQ(q.live_workers(), 1);
  // Priority first, then first come first served.
  EXPECT_EQ(q.entries(0).job_id(), high);
  EXPECT_EQ(q.entries(1).job_id(), low);
  EXPECT_EQ(q.entries(2).job_id(), later);
  for (int i = 0; i < 3; ++i) EXPECT_EQ(q.entries(i).position(), i + 1);
  EXPECT_EQ(q.entries(0).slots(), 2);
  EXPECT_EQ(q.entries(0).priority(), 5);
  EXPECT_EQ(q.entries(0).owner(), "local");
  EXPECT_EQ(q.entries(0).reason(), "needs 2 slots; 0 free on 0 of 1 live worker");
  EXPECT_EQ(c_->GetJob(low).queue_reason(), "needs 1 slot; 0 free on 0 of 1 live worker");
  EXPECT_EQ(c_->GetJob(running).queue_reason(), "");
  // Where workers have --data-root, a data-path job says which workers it waits for.
  v1::RegisterRequest rooted_worker;
  rooted_worker.set_worker_id("w2");
  rooted_worker.set_host("127.0.0.1");
  rooted_worker.set_slots(1);
  rooted_worker.set_device_kind("cpu");
  rooted_worker.add_data_roots("/elsewhere");
  rooted_worker.add_data_roots("/elsewhere");
  c_->Register(rooted_worker);
  c_->Tick();
  EXPECT_NE(c_->GetJob(low).queue_reason().find("needs 1 slot that may read /data/chat"), std::string::npos)
      << c_->GetJob(low).queue_reason();
}

TEST_F(QueueTest, SmallJobsBackfillUntilTheBigOneHasWaitedTooLong) {
  c_.reset();
  options_.max_wait_ms = 60 * 1000;
  Open();
  AddWorker("w1", 2);
  Pass("w1");
  const std::string s1 = c_->SubmitJob(Spec(1));
  Pass("w1");
  ASSERT_EQ(State(s1), v1::JOB_RUNNING);
  const std::string big = c_->SubmitJob(Spec(2));  // 1 slot free: waits
  const std::string s2 = c_->SubmitJob(Spec(1));   // fits in the free slot: backfills
  Pass("w1");
  EXPECT_EQ(State(big), v1::JOB_QUEUED);
  EXPECT_EQ(State(s2), v1::JOB_RUNNING);
  // Before max_wait: a freed slot still goes to the next small job.
  now_ += 30 * 1000;
  Finish(s1);
  const std::string s3 = c_->SubmitJob(Spec(1));
  Pass("w1");
  EXPECT_EQ(State(s3), v1::JOB_RUNNING);
  EXPECT_EQ(State(big), v1::JOB_QUEUED);
  // Past max_wait the big job keeps what frees up: the next small job waits behind it...
  now_ += 31 * 1000;
  Finish(s2);
  const std::string s4 = c_->SubmitJob(Spec(1));
  Pass("w1");
  EXPECT_EQ(State(s4), v1::JOB_QUEUED);
  EXPECT_NE(c_->GetJob(s4).queue_reason().find("behind " + big), std::string::npos) << c_->GetJob(s4).queue_reason();
  EXPECT_NE(c_->GetJob(big).queue_reason().find("keeps the slots that free up"), std::string::npos);
  // ... and it starts as soon as enough have freed.
  Finish(s3);
  Pass("w1");
  EXPECT_EQ(State(big), v1::JOB_RUNNING);
  EXPECT_EQ(State(s4), v1::JOB_QUEUED);
  Finish(big);
  Pass("w1");
  EXPECT_EQ(State(s4), v1::JOB_RUNNING);
}

TEST_F(QueueTest, WithoutMaxWaitSmallJobsAlwaysBackfill) {
  c_.reset();
  options_.max_wait_ms = 0;
  Open();
  AddWorker("w1", 2);
  Pass("w1");
  const std::string s1 = c_->SubmitJob(Spec(1));
  Pass("w1");
  const std::string big = c_->SubmitJob(Spec(2));
  now_ += 24 * 3600 * 1000;
  const std::string s2 = c_->SubmitJob(Spec(1));
  Pass("w1");
  EXPECT_EQ(State(s2), v1::JOB_RUNNING);
  EXPECT_EQ(State(big), v1::JOB_QUEUED);
  (void)s1;
}

}  // namespace
}  // namespace trm::coordinator

namespace trm::coordinator {
namespace {

// A higher-priority job that does not fit stops the fewest lower-priority running jobs (lowest
// priority first, newest first among equals); they save, stop and queue again without using a
// restart, and the high one starts once their slots are free.
TEST_F(QueueTest, PreemptionStopsTheFewestLowerPriorityJobs) {
  AddWorker("w1", 4);
  auto submit = [&](int world, int priority, bool no_preempt = false) {
    v1::JobSpec s = Spec(world);
    s.set_priority(priority);
    s.set_no_preempt(no_preempt);
    const std::string id = c_->SubmitJob(s);
    now_ += 1000;
    Pass("w1");
    return id;
  };
  const std::string old_low = submit(1, 0), new_low = submit(2, 0), mid = submit(1, 1);
  for (const auto& id : {old_low, new_low, mid}) ASSERT_EQ(State(id), v1::JOB_RUNNING) << id;
  const std::string high = submit(2, 5);
  EXPECT_EQ(State(high), v1::JOB_QUEUED);
  EXPECT_EQ(c_->GetJob(high).queue_reason(), "preempting " + new_low);
  EXPECT_NE(c_->GetJob(new_low).message().find("preempting attempt 1 for " + high), std::string::npos);
  // Its worker is told to stop it gracefully, with the time left of the grace period.
  const v1::HeartbeatResponse hb = Beat("w1", {{old_low, 1}, {new_low, 1}, {mid, 1}});
  ASSERT_EQ(hb.stop_size(), 1);
  EXPECT_EQ(hb.stop(0).job_id(), new_low);
  EXPECT_TRUE(hb.stop(0).preempt());
  EXPECT_GT(hb.stop(0).grace_ms(), 0);
  EXPECT_LE(hb.stop(0).grace_ms(), 120 * 1000);
  // While it stops, nothing else is preempted for the same job.
  c_->Tick();
  EXPECT_NE(c_->GetJob(high).queue_reason().find("waiting for " + new_low), std::string::npos);
  EXPECT_EQ(State(old_low), v1::JOB_RUNNING);
  EXPECT_EQ(State(mid), v1::JOB_RUNNING);
  // Its ranks save and exit (trm-train's SIGTERM code): queued again, not a failure.
  Report("w1", new_low, 1, {Exit(0, 130), Exit(1, 130)});
  v1::Job preempted = c_->GetJob(new_low);
  EXPECT_EQ(preempted.state(), v1::JOB_QUEUED);
  EXPECT_EQ(preempted.preemptions(), 1);
  EXPECT_EQ(preempted.restarts(), 0);
  Pass("w1");
  EXPECT_EQ(State(high), v1::JOB_RUNNING);
  EXPECT_EQ(State(new_low), v1::JOB_QUEUED);
  // When the high one is done, the preempted job starts again (attempt 2).
  Finish(high);
  Pass("w1");
  EXPECT_EQ(State(new_low), v1::JOB_RUNNING);
  EXPECT_EQ(c_->GetJob(new_low).attempt(), 2);
}

// While the jobs it preempts stop, the high-priority job keeps the free slots it counts on: a
// lower-priority job must not backfill into them (it would be preempted next, and the victims
// re-placed, round after round).
TEST_F(QueueTest, APreemptingJobKeepsTheSlotsItCountsOn) {
  AddWorker("w1", 4);
  Pass("w1");
  const std::string b = c_->SubmitJob(Spec(2));
  Pass("w1");
  ASSERT_EQ(State(b), v1::JOB_RUNNING);  // 2 of 4 slots free
  v1::JobSpec wide = Spec(4);
  wide.set_priority(5);
  const std::string a = c_->SubmitJob(wide);
  EXPECT_EQ(c_->GetJob(a).queue_reason(), "preempting " + b);
  const std::string s = c_->SubmitJob(Spec(2));
  Pass("w1", 2);
  EXPECT_EQ(State(s), v1::JOB_QUEUED) << "backfilled into the preempting job's slots";
  Report("w1", b, 1, {Exit(0, 130), Exit(1, 130)});
  Pass("w1");
  EXPECT_EQ(State(a), v1::JOB_RUNNING);
  EXPECT_EQ(State(b), v1::JOB_QUEUED);
  EXPECT_EQ(State(s), v1::JOB_QUEUED);
}

// A coordinator restarted while a preemption is in flight carries on with it: the mark is in the
// attempt's record, the stop order goes out again, and the exits end it as a preemption.
TEST_F(QueueTest, APreemptionSurvivesACoordinatorRestart) {
  AddWorker("w1", 2);
  Pass("w1");
  const std::string low = c_->SubmitJob(Spec(2));
  Pass("w1");
  ASSERT_EQ(State(low), v1::JOB_RUNNING);
  v1::JobSpec urgent = Spec(2);
  urgent.set_priority(5);
  const std::string high = c_->SubmitJob(urgent);
  ASSERT_EQ(c_->GetJob(high).queue_reason(), "preempting " + low);
  c_.reset();
  Open();  // workers keep heartbeating: the reopened coordinator knows them from its store
  const v1::HeartbeatResponse hb = Beat("w1", {{low, 1}});
  bool told = false;
  for (const auto& s : hb.stop()) told = told || (s.job_id() == low && s.preempt());
  EXPECT_TRUE(told) << "no preempting stop order after the restart";
  c_->Tick();
  EXPECT_NE(c_->GetJob(high).queue_reason().find("waiting for " + low), std::string::npos)
      << c_->GetJob(high).queue_reason();
  Report("w1", low, 1, {Exit(0, 130), Exit(1, 130)});
  EXPECT_EQ(State(low), v1::JOB_QUEUED);
  EXPECT_EQ(c_->GetJob(low).preemptions(), 1);
  EXPECT_EQ(c_->GetJob(low).restarts(), 0);
  Pass("w1");
  EXPECT_EQ(State(high), v1::JOB_RUNNING);
}

TEST_F(QueueTest, PreemptionRespectsNoPreemptAndEndsOverdueStops) {
  c_.reset();
  options_.preempt_grace_ms = 10 * 1000;  // well inside the fixture's start and hang timeouts
  Open();
  AddWorker("w1", 2);
  Pass("w1");
  v1::JobSpec pinned = Spec(1);
  pinned.set_no_preempt(true);
  Code code{};
  ErrorOf([&] { c_->SubmitJob(pinned, Principal{"bob", Role::kSubmit}); }, &code);
  EXPECT_EQ(code, Code::kPermissionDenied);  // admins only
  const std::string kept = c_->SubmitJob(pinned);
  Pass("w1");
  const std::string low = c_->SubmitJob(Spec(1));
  Pass("w1");
  v1::JobSpec urgent = Spec(2);
  urgent.set_priority(9);
  const std::string high = c_->SubmitJob(urgent);
  // Only `low` can be preempted, and it alone does not make room: nothing is preempted.
  EXPECT_EQ(State(low), v1::JOB_RUNNING);
  EXPECT_EQ(c_->GetJob(low).message().find("preempting"), std::string::npos);
  EXPECT_EQ(c_->GetJob(high).queue_reason(), "needs 2 slots; 0 free on 0 of 1 live worker");
  // A 1-rank urgent job fits once `low` stops; `low` never reports: it ends as preempted after
  // the grace period (and the heartbeat timeout), and the urgent one starts.
  c_->CancelJob(high);
  v1::JobSpec small = Spec(1);
  small.set_priority(9);
  const std::string urgent1 = c_->SubmitJob(small);
  EXPECT_EQ(c_->GetJob(urgent1).queue_reason(), "preempting " + low);
  now_ += 10 * 1000 + 15000 + 1;  // the grace period plus the heartbeat timeout
  Beat("w1", {{kept, 1}});
  c_->Tick();
  EXPECT_EQ(State(low), v1::JOB_QUEUED);
  EXPECT_NE(c_->GetJob(low).message().find("did not all report an exit within the grace period"), std::string::npos)
      << c_->GetJob(low).message();
  EXPECT_EQ(c_->GetJob(low).preemptions(), 1);
  EXPECT_EQ(c_->GetJob(low).restarts(), 0);
  Pass("w1");
  EXPECT_EQ(State(urgent1), v1::JOB_RUNNING);
}

}  // namespace
}  // namespace trm::coordinator
