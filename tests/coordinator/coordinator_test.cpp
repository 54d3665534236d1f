// The coordinator's logic driven as workers and users would drive it, without a server: a fake
// clock, a real SQLite database in a temporary directory, real files for checkpoints.
#include "trm/coordinator/coordinator.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <limits>
#include <memory>
#include <tuple>
#include <vector>

#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/coordinator/metrics.h"
#include "trm/data/dataset_reader.h"
#include "trm/data/npy.h"
#include "trm/rpc/transfer.h"
#include "coordinator_fixture.h"

namespace fs = std::filesystem;

namespace trm::coordinator {
namespace {


TEST_F(CoordinatorTest, BadSubmissionsNameTheProblem) {
  AddWorker("w1", 2);
  Code code{};
  auto bad_key = Spec(1);
  bad_key.add_overrides("arch.hiden_size=8");
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(bad_key); }, &code).find("hiden_size"), std::string::npos);
  EXPECT_EQ(code, Code::kInvalidArgument);

  auto bad_yaml = Spec(1);
  bad_yaml.set_config_yaml("lr: [1, 2\nepochs: 3\n");
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(bad_yaml); }, &code).find("spec.config_yaml"), std::string::npos);
  EXPECT_EQ(code, Code::kInvalidArgument);

  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(Spec(3)); }, &code).find("not divisible"), std::string::npos);
  EXPECT_EQ(code, Code::kInvalidArgument);
  auto big = Spec(4);
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(big); }, &code).find("2 slots"), std::string::npos);
  EXPECT_EQ(code, Code::kFailedPrecondition);
  auto neg = Spec(-1);
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(neg); }, &code).find("spec.world_size"), std::string::npos);

  auto huge = Spec(1);
  huge.add_overrides("arch.hidden_size=655360");  // a typo for 65536
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(huge); }, &code).find("arch.hidden_size"), std::string::npos);
  EXPECT_EQ(code, Code::kInvalidArgument);
  auto batch = Spec(1);
  batch.add_overrides("global_batch_size=4000000");
  batch.add_overrides("arch.hidden_size=1024");
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(batch); }, &code).find("activations"), std::string::npos);

  auto no_data = Spec(1);
  no_data.clear_data_path();
  no_data.set_dataset("chat");
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(no_data); }, &code).find("no dataset"), std::string::npos);
  EXPECT_EQ(code, Code::kNotFound);
  no_data.set_dataset("../etc");
  ErrorOf([&] { c_->SubmitJob(no_data); }, &code);
  EXPECT_EQ(code, Code::kInvalidArgument);

  EXPECT_NE(ErrorOf([&] { c_->GetJob("job-999999"); }, &code).find("does not exist"), std::string::npos);
  EXPECT_EQ(code, Code::kNotFound);
  EXPECT_TRUE(c_->ListJobs({}, 0).empty());  // nothing half-submitted
}

TEST_F(CoordinatorTest, ShippedConfigsPassTheChecks) {
  AddWorker("w1", 8);
  for (const char* name : {"cfg_tiny", "cfg_chat", "cfg_language"}) {
    v1::JobSpec s;
    s.set_config_name(name);
    s.set_data_path("/data/chat");
    s.set_world_size(8);
    EXPECT_NO_THROW(c_->SubmitJob(s)) << name;
  }
}

TEST_F(CoordinatorTest, JobRunsToCompletionAcrossTwoWorkers) {
  AddWorker("w1", 1);
  AddWorker("w2", 1);
  Beat("w1");
  Beat("w2");
  const std::string id = c_->SubmitJob(Spec(2));
  EXPECT_EQ(id, "job-000001");
  c_->Tick();
  ASSERT_EQ(c_->GetJob(id).state(), v1::JOB_RUNNING);
  auto r1 = Beat("w1"), r2 = Beat("w2");
  ASSERT_EQ(r1.start_size() + r2.start_size(), 2);
  const v1::Assignment& a0 = r1.start_size() ? r1.start(0) : r2.start(0);
  EXPECT_EQ(a0.world_size(), 2);
  EXPECT_EQ(a0.attempt(), 1);
  EXPECT_NE(a0.master_port(), 0u);
  EXPECT_NE(a0.config_json().find("\"global_batch_size\":4"), std::string::npos);
  // Re-sent until the worker lists the attempt, then not any more.
  EXPECT_EQ(Beat("w1").start_size(), 1);
  EXPECT_EQ(Beat("w1", {{id, 1}}).start_size(), 0);
  EXPECT_EQ(Beat("w1", {{id, 1}}).start_size(), 0);
  EXPECT_EQ(Beat("w2", {{id, 1}}).stop_size(), 0);

  Report("w1", id, 1, {Metrics(1, 5.0), Metrics(2, 4.0)});
  Upload(id, 1, 2);
  Report("w1", id, 1, {Exit(0, 0)});
  EXPECT_EQ(c_->GetJob(id).state(), v1::JOB_RUNNING);
  Report("w2", id, 1, {Exit(1, 0)});
  v1::Job j = c_->GetJob(id);
  EXPECT_EQ(j.state(), v1::JOB_SUCCEEDED);
  EXPECT_EQ(j.step(), 2);
  EXPECT_DOUBLE_EQ(j.loss(), 4.0);
  EXPECT_EQ(j.latest_checkpoint(), "step_2");

  auto events = c_->ReadEvents(id, 0, true, 1000);
  ASSERT_GE(events.size(), 6u);
  for (size_t i = 0; i < events.size(); ++i) EXPECT_EQ(events[i].seq(), i + 1);  // no gaps
  EXPECT_TRUE(events.back().has_state());
  EXPECT_EQ(events.back().state().state(), v1::JOB_SUCCEEDED);
  EXPECT_EQ(c_->ReadEvents(id, 3, true, 1000).front().seq(), 4u);  // a watcher resumes exactly
  EXPECT_FALSE(c_->WaitForEvents(id, events.back().seq(), std::chrono::milliseconds(1)));
  EXPECT_EQ(c_->GetMetrics(id, 0, 0).size(), 2u);
  // The finished attempt's leftovers are told to stop.
  EXPECT_EQ(Beat("w1", {{id, 1}}).stop_size(), 1);
}

TEST_F(CoordinatorTest, FailedRankRestartsFromTheLatestCheckpointThenFails) {
  AddWorker("w1", 2);
  Beat("w1");
  auto spec = Spec(2);
  spec.set_max_restarts(1);
  const std::string id = c_->SubmitJob(spec);
  c_->Tick();
  Upload(id, 1, 3);
  bool stop = false;
  Report("w1", id, 1, {Exit(1, 137)}, &stop);
  EXPECT_TRUE(stop);
  v1::Job j = c_->GetJob(id);
  EXPECT_EQ(j.state(), v1::JOB_QUEUED);
  EXPECT_EQ(j.restarts(), 1);
  EXPECT_NE(j.message().find("rank 1"), std::string::npos);
  // The worker still runs attempt 1: its slots are not free until it stops.
  auto hb = Beat("w1", {{id, 1}});
  EXPECT_EQ(hb.stop_size(), 1);
  c_->Tick();
  EXPECT_EQ(c_->GetJob(id).state(), v1::JOB_QUEUED);
  hb = Beat("w1");  // stopped
  c_->Tick();
  hb = Beat("w1");
  ASSERT_EQ(hb.start_size(), 1);
  EXPECT_EQ(hb.start(0).attempt(), 2);
  EXPECT_EQ(hb.start(0).resume_checkpoint(), "step_3");
  // Late news from attempt 1 is ignored and told to stop.
  Report("w1", id, 1, {Metrics(9, 1.0)}, &stop);
  EXPECT_TRUE(stop);
  EXPECT_EQ(c_->GetJob(id).step(), 0);
  Report("w1", id, 2, {Exit(0, 3)});
  j = c_->GetJob(id);
  EXPECT_EQ(j.state(), v1::JOB_FAILED);
  EXPECT_EQ(j.failure_kind(), "exit_code");
  EXPECT_NE(j.message().find("boom"), std::string::npos);
}

TEST_F(CoordinatorTest, SilentWorkerIsLostAndItsJobRequeued) {
  AddWorker("w1", 1);
  AddWorker("w2", 1);
  Beat("w1");
  Beat("w2");
  auto spec = Spec(1);
  spec.set_max_restarts(2);
  const std::string id = c_->SubmitJob(spec);
  const std::string where = c_->GetJob(id).placement(0).worker_id();
  const std::string other = where == "w1" ? "w2" : "w1";
  now_ += 10000;
  Beat(other);
  c_->Tick();
  EXPECT_EQ(c_->GetJob(id).state(), v1::JOB_RUNNING);
  now_ += 6000;  // `where` silent for 16 s > 15 s
  Beat(other);
  c_->Tick();
  v1::Job j = c_->GetJob(id);
  EXPECT_EQ(j.failure_kind(), "lost_worker");
  EXPECT_EQ(j.state(), v1::JOB_RUNNING);  // rescheduled at once on the other worker
  EXPECT_EQ(j.attempt(), 2);
  EXPECT_EQ(j.placement(0).worker_id(), other);
}

TEST_F(CoordinatorTest, RestartedWorkerFailsItsAttempts) {
  AddWorker("w1", 1);
  Beat("w1");
  auto spec = Spec(1);
  spec.set_max_restarts(1);
  const std::string id = c_->SubmitJob(spec);
  c_->Tick();
  AddWorker("w1", 1);  // registered again before it took the attempt up: nothing lost
  EXPECT_EQ(c_->GetJob(id).attempt(), 1);
  EXPECT_EQ(c_->GetJob(id).restarts(), 0);
  Beat("w1", {{id, 1}});
  AddWorker("w1", 1);  // a new worker process: attempt 1's rank died with the old one
  v1::Job j = c_->GetJob(id);
  EXPECT_EQ(j.failure_kind(), "lost_worker");
  EXPECT_EQ(j.restarts(), 1);
}

TEST_F(CoordinatorTest, RestartedCoordinatorKnowsEverything) {
  AddWorker("w1", 1);
  Beat("w1");
  const std::string id = c_->SubmitJob(Spec(1));
  c_->Tick();
  Report("w1", id, 1, {Metrics(1, 3.5)});
  Upload(id, 1, 1);
  const auto before = c_->ReadEvents(id, 0, true, 1000);
  c_.reset();
  Open();
  v1::Job j = c_->GetJob(id);
  EXPECT_EQ(j.state(), v1::JOB_RUNNING);
  EXPECT_EQ(j.latest_checkpoint(), "step_1");
  EXPECT_EQ(c_->ReadEvents(id, 0, true, 1000).size(), before.size());
  EXPECT_EQ(c_->ListCheckpoints(id).size(), 1u);
  EXPECT_EQ(c_->GetMetrics(id, 0, 0).size(), 1u);
  ASSERT_EQ(c_->ListWorkers().size(), 1u);
  // The worker carries on: no re-assignment, events continue the numbering.
  EXPECT_EQ(Beat("w1", {{id, 1}}).start_size(), 0);
  Report("w1", id, 1, {Exit(0, 0)});
  EXPECT_EQ(c_->GetJob(id).state(), v1::JOB_SUCCEEDED);
  EXPECT_EQ(c_->ReadEvents(id, 0, true, 1000).back().seq(), before.size() + 1);
  EXPECT_EQ(c_->SubmitJob(Spec(1)), "job-000002");
}

TEST_F(CoordinatorTest, RetentionKeepsTheLastAndTheBest) {
  AddWorker("w1", 1);
  Beat("w1");
  const std::string id = c_->SubmitJob(Spec(1));
  c_->Tick();
  Upload(id, 1, 10, 2.0);
  Upload(id, 1, 20, 1.0);  // best
  Upload(id, 1, 30, 3.0);
  Upload(id, 1, 40, 4.0);
  std::vector<std::string> names;
  for (const auto& c : c_->ListCheckpoints(id)) names.push_back(c.name());
  EXPECT_EQ(names, (std::vector<std::string>{"step_20", "step_30", "step_40"}));
  EXPECT_FALSE(fs::exists(root_ / "state" / "checkpoints" / id / "step_10"));
  EXPECT_EQ(c_->ResolveCheckpoint(id, "best:eval_lm_loss").manifest.name(), "step_20");
  EXPECT_EQ(c_->ResolveCheckpoint(id, "latest").manifest.name(), "step_40");
  EXPECT_EQ(c_->ResolveCheckpoint(id, "step:30").manifest.name(), "step_30");
  Code code{};
  ErrorOf([&] { c_->ResolveCheckpoint(id, "../../etc/passwd"); }, &code);
  EXPECT_EQ(code, Code::kInvalidArgument);
  ErrorOf([&] { c_->ResolveCheckpoint(id, "step:10"); }, &code);
  EXPECT_EQ(code, Code::kNotFound);
  ErrorOf([&] { c_->ResolveCheckpoint(id, "best:nope"); }, &code);
  EXPECT_EQ(code, Code::kNotFound);
}

TEST_F(CoordinatorTest, AttemptWithoutProgressFailsAsHang) {
  AddWorker("w1", 1);
  Beat("w1");
  auto spec = Spec(1);
  spec.set_max_restarts(1);
  const std::string id = c_->SubmitJob(spec);
  c_->Tick();
  now_ += 100000;  // within the start budget (120 s)
  Beat("w1", {{id, 1}});
  c_->Tick();
  EXPECT_EQ(c_->GetJob(id).attempt(), 1);
  Report("w1", id, 1, {Metrics(1, 5.0)});
  now_ += 50000;
  Report("w1", id, 1, {Metrics(2, 4.0)});  // progress resets the clock
  now_ += 50000;
  Beat("w1", {{id, 1}});
  c_->Tick();
  EXPECT_EQ(c_->GetJob(id).attempt(), 1);
  now_ += 11000;  // 61 s after step 2
  Beat("w1", {{id, 1}});
  c_->Tick();
  v1::Job j = c_->GetJob(id);
  EXPECT_EQ(j.failure_kind(), "hang");
  EXPECT_EQ(j.restarts(), 1);
  EXPECT_EQ(j.attempt(), 2);  // rescheduled at once
  std::string why;
  for (const auto& e : c_->ReadEvents(id, 0, false, 1000))
    if (e.has_state() && e.state().message().find("(hang)") != std::string::npos) why = e.state().message();
  EXPECT_NE(why.find("no step after step 2 for 61 s"), std::string::npos) << why;
  EXPECT_NE(why.find("PHASE_COMPUTE"), std::string::npos) << why;
}

// Ranks that report their phase are judged by that phase's budget, not by the step clock: a
// long evaluation is fine, a rank stuck in the all-reduce is not.
TEST_F(CoordinatorTest, RankLongerInAPhaseThanItsBudgetFailsAsHang) {
  c_.reset();
  CoordinatorOptions o;
  o.data_dir = (root_ / "state").string();
  o.config_dir = std::string(TRM_SOURCE_DIR) + "/configs";
  o.hang_timeout_ms = 60000;
  o.start_timeout_ms = 120000;
  o.phase_budget_ms = {{"allreduce", 20000}, {"eval", 600000}};
  o.now_ms = [this] { return now_; };
  c_ = std::make_unique<Coordinator>(o);
  AddWorker("w1", 2);
  auto beat = [&](const std::string& job, std::vector<std::tuple<int, v1::RankPhase, int64_t, int64_t>> ranks) {
    v1::HeartbeatRequest h;
    h.set_worker_id("w1");
    h.add_free_ports(41000);
    auto* a = h.add_attempts();
    a->set_job_id(job);
    a->set_attempt(1);
    for (const auto& [rank, phase, elapsed, step] : ranks) {
      auto* r = a->add_ranks();
      r->set_rank(rank);
      r->set_phase(phase);
      r->set_phase_elapsed_ms(elapsed);
      r->set_step(step);
      if (step > 0) r->mutable_last_step()->set_step(step - 1);
    }
    c_->Heartbeat(h);
    c_->Tick();
  };
  Beat("w1");
  auto spec = Spec(2);
  spec.set_max_restarts(1);
  const std::string id = c_->SubmitJob(spec);
  c_->Tick();
  // Starting has the start budget (120 s), however long ago the rank began.
  now_ += 10000;
  beat(id, {{0, v1::PHASE_STARTING, 110000, 0}, {1, v1::PHASE_STARTING, 110000, 0}});
  EXPECT_EQ(c_->GetJob(id).attempt(), 1);
  // An evaluation 5 min long: past the step clock's 60 s, within the eval budget.
  Report("w1", id, 1, {Metrics(3, 5.0)});
  for (int i = 1; i <= 5; ++i) {
    now_ += 60000;
    beat(id, {{0, v1::PHASE_EVAL, i * 60000, 3}, {1, v1::PHASE_EVAL, i * 60000, 3}});
  }
  EXPECT_EQ(c_->GetJob(id).attempt(), 1);
  EXPECT_EQ(c_->GetJob(id).failure_kind(), "");
  // Rank 0 moves on; rank 1 sits in the all-reduce, reported 15 s in: within its 20 s budget...
  now_ += 15000;
  beat(id, {{0, v1::PHASE_COMPUTE, 1000, 4}, {1, v1::PHASE_ALLREDUCE, 15000, 3}});
  EXPECT_EQ(c_->GetJob(id).attempt(), 1);
  now_ += 4000;
  v1::Job j = c_->GetJob(id);  // each rank as last reported, its time in phase on the coordinator's clock
  ASSERT_EQ(j.ranks_size(), 2);
  EXPECT_EQ(j.ranks(0).rank(), 0);
  EXPECT_EQ(j.ranks(0).phase(), v1::PHASE_COMPUTE);
  EXPECT_EQ(j.ranks(0).phase_elapsed_ms(), 5000);
  EXPECT_EQ(j.ranks(0).last_step().step(), 3);
  EXPECT_EQ(j.ranks(1).phase(), v1::PHASE_ALLREDUCE);
  EXPECT_EQ(j.ranks(1).phase_elapsed_ms(), 19000);
  EXPECT_EQ(j.ranks(1).step(), 3);
  Report("w1", id, 1, {Metrics(4, 4.0)});  // a step's metrics move the step clock, not the ranks' reports
  EXPECT_EQ(c_->GetJob(id).ranks_size(), 2);
  // ...and 6 s after that heartbeat (none in between: the coordinator's clock counts on) past it.
  now_ += 2000;
  c_->Tick();
  j = c_->GetJob(id);
  EXPECT_EQ(j.failure_kind(), "hang");
  EXPECT_EQ(j.ranks_size(), 0) << "a queued job has no ranks";
  // The retry waits for a heartbeat from the worker after the failure (it could be dying).
  EXPECT_EQ(j.state(), v1::JOB_QUEUED);
  Beat("w1");
  c_->Tick();
  j = c_->GetJob(id);
  EXPECT_EQ(j.attempt(), 2);
  std::string why;
  for (const auto& e : c_->ReadEvents(id, 0, false, 1000))
    if (e.has_state() && e.state().message().find("(hang)") != std::string::npos) why = e.state().message();
  EXPECT_NE(why.find("rank 1 in PHASE_ALLREDUCE for 21.0 s at step 3 (budget 20 s)"), std::string::npos) << why;
}

// The series the alert rules (deploy/prometheus/rules/) read: whether a job runs, its latest
// checkpoint's step and its interval, each rank's time in its phase, the data directory's free
// space, and RPC errors by code.
TEST_F(CoordinatorTest, ExportsWhatTheAlertRulesRead) {
  c_.reset();
  CoordinatorMetrics metrics;
  CoordinatorOptions o;
  o.data_dir = (root_ / "state").string();
  o.config_dir = std::string(TRM_SOURCE_DIR) + "/configs";
  o.now_ms = [this] { return now_; };
  o.metrics = &metrics;
  c_ = std::make_unique<Coordinator>(o);
  AddWorker("w1", 1);
  Beat("w1");
  auto spec = Spec(1);
  spec.add_overrides("checkpoint_interval_steps=5");
  const std::string id = c_->SubmitJob(spec);
  c_->Tick();
  const std::string job = "job=\"" + id + "\"";
  std::string text = metrics.Text();
  EXPECT_NE(text.find("trm_job_running{" + job + "} 1"), std::string::npos) << text;
  EXPECT_NE(text.find("trm_job_checkpoint_step{" + job + "} 0"), std::string::npos) << text;
  EXPECT_NE(text.find("trm_job_checkpoint_interval_steps{" + job + "} 5"), std::string::npos) << text;
  EXPECT_NE(text.find("trm_coordinator_disk_free_bytes "), std::string::npos) << text;
  EXPECT_NE(text.find("trm_coordinator_disk_size_bytes "), std::string::npos) << text;

  v1::HeartbeatRequest h;
  h.set_worker_id("w1");
  auto* a = h.add_attempts();
  a->set_job_id(id);
  a->set_attempt(1);
  auto* r = a->add_ranks();
  r->set_rank(0);
  r->set_phase(v1::PHASE_ALLREDUCE);
  r->set_phase_elapsed_ms(1000);
  c_->Heartbeat(h);
  Upload(id, 1, 5);
  text = metrics.Text();
  EXPECT_NE(text.find("trm_rank_phase_seconds{" + job + ",rank=\"0\",phase=\"allreduce\"}"), std::string::npos) << text;
  EXPECT_NE(text.find("trm_job_checkpoint_step{" + job + "} 5"), std::string::npos) << text;
  // A diverged loss (null on the metrics line, NaN from the worker) stays NaN: TrmJobLossNotFinite.
  Report("w1", id, 1, {Metrics(6, std::numeric_limits<double>::quiet_NaN())});
  text = metrics.Text();
  EXPECT_NE(text.find("trm_job_loss{" + job + "} Nan"), std::string::npos) << text;  // prometheus-cpp's spelling
  // An exited rank has no phase time; an ended attempt none at all.
  r->set_phase(v1::PHASE_EXITED);
  c_->Heartbeat(h);
  EXPECT_EQ(metrics.Text().find("trm_rank_phase_seconds{"), std::string::npos);
  r->set_phase(v1::PHASE_COMPUTE);
  c_->Heartbeat(h);
  EXPECT_NE(metrics.Text().find("trm_rank_phase_seconds{"), std::string::npos);
  c_->CancelJob(id);
  text = metrics.Text();
  EXPECT_NE(text.find("trm_job_running{" + job + "} 0"), std::string::npos) << text;
  EXPECT_EQ(text.find("trm_rank_phase_seconds{"), std::string::npos) << text;

  // An ended job's series stay for an hour (the default linger), then go, and a coordinator
  // started later does not bring them back.
  now_ += 3600 * 1000 - 1;
  c_->Tick();
  EXPECT_NE(metrics.Text().find("trm_job_running{" + job + "}"), std::string::npos);
  now_ += 2;
  c_->Tick();
  text = metrics.Text();
  for (const char* series : {"trm_job_running{", "trm_job_checkpoint_step{", "trm_job_checkpoint_interval_steps{",
                             "trm_job_step{", "trm_job_loss{", "trm_job_restarts{", "trm_job_checkpoint_age_seconds{",
                             "trm_job_preemptions_total{"})
    EXPECT_EQ(text.find(std::string(series) + job), std::string::npos) << series << "\n" << text;
  c_.reset();
  CoordinatorMetrics fresh;
  o.metrics = &fresh;
  c_ = std::make_unique<Coordinator>(o);
  c_->Tick();
  EXPECT_EQ(fresh.Text().find(job), std::string::npos) << fresh.Text();

  metrics.ObserveRpc("GetJob", 0.001);
  metrics.ObserveRpc("GetJob", 0.001, "NOT_FOUND");
  text = metrics.Text();
  EXPECT_NE(text.find("trm_rpc_errors_total{code=\"NOT_FOUND\",method=\"GetJob\"} 1"), std::string::npos) << text;
  EXPECT_EQ(text.find("trm_rpc_errors_total{code=\"OK\""), std::string::npos);
}

// A run that reads only part of the training split sends each worker the rows its ranks read
// (and nothing else of the split); a run over the whole data sends the whole dataset.
TEST_F(CoordinatorTest, ShortRunsFetchOnlyTheirRanksRowsOfTheDataset) {
  const fs::path src = root_ / "ds";
  for (const auto& [split, rows] : {std::pair<std::string, int64_t>{"train", 64}, {"test", 4}}) {
    fs::create_directories(src / split);
    for (const char* name : {"all__inputs.npy", "all__labels.npy"}) {
      data::NpyInt32Writer w((src / split / name).string(), {rows, 8});
      for (int64_t r = 0; r < rows * 8; ++r) {
        const int32_t v = static_cast<int32_t>(r / 8);
        w.Write(&v, 1);
      }
      w.Close();
    }
    WriteFileAtomic((src / split / "dataset.json").string(),
                    R"({"seq_len": 8, "vocab_size": 266, "pad_id": 0, "ignore_label_id": -100})");
  }
  Push(src, "rows64");
  AddWorker("w1", 1);
  AddWorker("w2", 1);
  Beat("w1");
  Beat("w2");
  auto spec = [&](std::vector<std::string> overrides) {
    v1::JobSpec s;
    s.set_config_name("cfg_tiny");
    s.set_dataset("rows64");
    s.set_world_size(2);
    for (auto& o : overrides) s.add_overrides(o);
    return s;
  };
  // 3 steps of 8 rows: each worker's rank reads 12 of the 64 rows.
  const std::string short_job = c_->SubmitJob(spec({"global_batch_size=8", "max_steps=3"}));
  c_->Tick();
  std::map<std::string, v1::ShardSpec> shards;
  for (const char* w : {"w1", "w2"}) {
    const auto resp = Beat(w);
    ASSERT_EQ(resp.start_size(), 1) << w;
    ASSERT_TRUE(resp.start(0).has_shard()) << w;
    shards[w] = resp.start(0).shard();
    EXPECT_EQ(resp.start(0).shard().batches(), 3);
    EXPECT_EQ(resp.start(0).shard().world_size(), 2);
    EXPECT_EQ(resp.start(0).shard().ranks_size(), 1);
  }
  const v1::ShardSpec& s1 = shards["w1"];
  const FileSet part = c_->DatasetShardFiles(c_->GetJob(short_job).dataset_hash(), s1);
  EXPECT_NE(part.dir.find("/shards/"), std::string::npos);
  data::DatasetSplit train = data::DatasetSplit::Open(part.dir, "train");
  EXPECT_EQ(train.rows(), 64);
  EXPECT_EQ(train.present_rows(), 12);
  EXPECT_FALSE(data::DatasetSplit::Open(part.dir, "test").is_shard());
  // The same spec again is the same files (a resumed download sees the same bytes).
  EXPECT_EQ(rpc::ContentHash(c_->DatasetShardFiles(c_->GetJob(short_job).dataset_hash(), s1).manifest),
            rpc::ContentHash(part.manifest));
  v1::ShardSpec bad = s1;
  bad.add_ranks(7);
  Code code;
  ErrorOf([&] { c_->DatasetShardFiles(c_->GetJob(short_job).dataset_hash(), bad); }, &code);
  EXPECT_EQ(code, Code::kInvalidArgument);
  c_->CancelJob(short_job);

  // The default schedule (many epochs) reads every row on both workers: the whole dataset.
  now_ += 1000;
  const std::string long_job = c_->SubmitJob(spec({"global_batch_size=8"}));
  for (int i = 0; i < 5 && c_->GetJob(long_job).attempt() == 0; ++i) {
    Beat("w1");
    Beat("w2");
    c_->Tick();
  }
  ASSERT_EQ(c_->GetJob(long_job).attempt(), 1);
  for (const char* w : {"w1", "w2"}) {
    const auto resp = Beat(w);
    for (const auto& a : resp.start())
      if (a.job_id() == long_job) EXPECT_FALSE(a.has_shard()) << w;
  }
}

TEST_F(CoordinatorTest, CancelStopsTheAttempt) {
  AddWorker("w1", 1);
  Beat("w1");
  const std::string id = c_->SubmitJob(Spec(1));
  c_->Tick();
  EXPECT_EQ(Beat("w1", {{id, 1}}).stop_size(), 0);
  EXPECT_EQ(c_->CancelJob(id).state(), v1::JOB_CANCELLED);
  EXPECT_EQ(Beat("w1", {{id, 1}}).stop_size(), 1);
  EXPECT_EQ(c_->CancelJob(id).state(), v1::JOB_CANCELLED);  // idempotent
}

// What the gRPC adapters pass on unchecked is checked here, before anything is read or stored.
TEST_F(CoordinatorTest, RequestsAreValidatedBeforeAnythingIsRead) {
  AddWorker("w1", 1);
  Beat("w1");
  const std::string id = c_->SubmitJob(Spec(1));
  c_->Tick();
  Code code{};
  EXPECT_NE(ErrorOf([&] { c_->GetJob(""); }, &code).find("job_id is required"), std::string::npos);
  EXPECT_EQ(code, Code::kInvalidArgument);
  for (const std::string bad : {"", "../x", "a/b"}) {
    code = Code::kInternal;
    ErrorOf([&] { c_->GetJob(bad); }, &code);
    EXPECT_EQ(code, Code::kInvalidArgument) << bad;
    code = Code::kInternal;
    ErrorOf([&] { c_->CancelJob(bad); }, &code);
    EXPECT_EQ(code, Code::kInvalidArgument) << bad;
    code = Code::kInternal;
    ErrorOf([&] { c_->GetMetrics(bad, 0, 0); }, &code);
    EXPECT_EQ(code, Code::kInvalidArgument) << bad;
    code = Code::kInternal;
    ErrorOf([&] { c_->ListCheckpoints(bad); }, &code);
    EXPECT_EQ(code, Code::kInvalidArgument) << bad;
    code = Code::kInternal;
    ErrorOf([&] { c_->ResolveCheckpoint(bad, "latest"); }, &code);
    EXPECT_EQ(code, Code::kInvalidArgument) << bad;
    code = Code::kInternal;
    ErrorOf([&] { c_->CheckpointFiles(bad, "step_1"); }, &code);
    EXPECT_EQ(code, Code::kInvalidArgument) << bad;
  }
  EXPECT_NE(ErrorOf([&] { c_->GetMetrics(id, 0, -1); }, &code).find("limit"), std::string::npos);
  EXPECT_EQ(code, Code::kInvalidArgument);
  EXPECT_NE(ErrorOf([&] { c_->ListJobs({}, -1); }, &code).find("limit"), std::string::npos);
  EXPECT_EQ(code, Code::kInvalidArgument);
  ErrorOf([&] { c_->ListJobs({}, 10001); }, &code);
  EXPECT_EQ(code, Code::kInvalidArgument);
  EXPECT_EQ(c_->ListJobs({}, 10000).size(), 1u);
  EXPECT_NE(ErrorOf([&] { c_->ResolveCheckpoint(id, std::string(257, 'a')); }, &code).find("256"), std::string::npos);
  EXPECT_EQ(code, Code::kInvalidArgument);
  // A worker's fetch names a checkpoint; a user's selector may be empty (latest).
  ErrorOf([&] { c_->CheckpointFiles(id, ""); }, &code);
  EXPECT_EQ(code, Code::kInvalidArgument);
  Upload(id, 1, 1);
  EXPECT_EQ(c_->CheckpointFiles(id, "step_1").manifest.name(), "step_1");
  EXPECT_EQ(c_->ResolveCheckpoint(id, "").manifest.name(), "step_1");

  v1::ReportEventsRequest flood;
  flood.set_worker_id("w1");
  flood.set_job_id(id);
  flood.set_attempt(1);
  for (int i = 0; i < 10001; ++i) *flood.add_events() = Metrics(i + 1, 1.0);
  EXPECT_NE(ErrorOf([&] { c_->ReportEvents(flood); }, &code).find("10000"), std::string::npos);
  EXPECT_EQ(code, Code::kInvalidArgument);
  EXPECT_EQ(c_->GetMetrics(id, 0, 0).size(), 0u);  // nothing of it stored
  flood.mutable_events()->RemoveLast();
  EXPECT_NO_THROW(c_->ReportEvents(flood));
  EXPECT_EQ(c_->GetJob(id).step(), 10000);
}

TEST_F(CoordinatorTest, CheckpointUploadsAreCheckedBeforeTheirData) {
  AddWorker("w1", 1);
  Beat("w1");
  const std::string id = c_->SubmitJob(Spec(1));
  c_->Tick();
  v1::CheckpointUploadHeader h;
  h.set_worker_id("w1");
  h.set_job_id(id);
  h.set_attempt(1);
  h.mutable_info()->set_name("step_5");
  h.mutable_info()->set_step(5);
  v1::CheckpointUpload header, chunk;
  *header.mutable_header() = h;
  chunk.mutable_chunk()->set_data("x");
  Code code{};
  EXPECT_NE(ErrorOf([&] { c_->UploadCheckpoint(Reader<v1::CheckpointUpload>({})); }, &code).find("header"),
            std::string::npos);
  EXPECT_EQ(code, Code::kInvalidArgument);
  ErrorOf([&] { c_->UploadCheckpoint(Reader<v1::CheckpointUpload>({chunk, header})); }, &code);
  EXPECT_EQ(code, Code::kInvalidArgument);
  EXPECT_NE(ErrorOf([&] { c_->UploadCheckpoint(Reader<v1::CheckpointUpload>({header, header})); }, &code)
                .find("only chunks"),
            std::string::npos);
  EXPECT_EQ(code, Code::kInvalidArgument);
  v1::CheckpointUpload misnamed = header;
  misnamed.mutable_header()->mutable_info()->set_step(6);
  EXPECT_NE(ErrorOf([&] { c_->UploadCheckpoint(Reader<v1::CheckpointUpload>({misnamed})); }, &code).find("step_6"),
            std::string::npos);
  EXPECT_EQ(code, Code::kInvalidArgument);
  v1::CheckpointUpload stale = header;
  stale.mutable_header()->set_attempt(2);
  ErrorOf([&] { c_->UploadCheckpoint(Reader<v1::CheckpointUpload>({stale})); }, &code);
  EXPECT_EQ(code, Code::kFailedPrecondition);
  v1::CheckpointUpload unknown = header;
  unknown.mutable_header()->set_job_id("job-999999");
  ErrorOf([&] { c_->UploadCheckpoint(Reader<v1::CheckpointUpload>({unknown})); }, &code);
  EXPECT_EQ(code, Code::kNotFound);
  EXPECT_TRUE(c_->ListCheckpoints(id).empty());
  EXPECT_EQ(c_->GetJob(id).warning(), "");  // none of these is a full disk

  v1::TransferMessage not_a_manifest;
  not_a_manifest.mutable_chunk()->set_data("x");
  EXPECT_NE(ErrorOf([&] { c_->PushDataset(Reader<v1::TransferMessage>({not_a_manifest})); }, &code).find("manifest"),
            std::string::npos);
  EXPECT_EQ(code, Code::kInvalidArgument);
  EXPECT_TRUE(c_->ListDatasets().empty());
}

// No room for a checkpoint (here: over the size limit, as a full disk would be) is the job's
// warning until an upload succeeds; the worker keeps the checkpoint and retries.
TEST_F(CoordinatorTest, UploadWithoutRoomIsTheJobsWarningUntilOneSucceeds) {
  c_.reset();
  CoordinatorOptions o;
  o.data_dir = (root_ / "state").string();
  o.config_dir = std::string(TRM_SOURCE_DIR) + "/configs";
  o.max_checkpoint_bytes = 14;  // "weights at 1" and "{}"
  o.now_ms = [this] { return now_; };
  c_ = std::make_unique<Coordinator>(o);
  AddWorker("w1", 1);
  Beat("w1");
  const std::string id = c_->SubmitJob(Spec(1));
  c_->Tick();
  Code code{};
  ErrorOf([&] { Upload(id, 1, 100); }, &code);  // 16 bytes
  EXPECT_EQ(code, Code::kResourceExhausted);
  const std::string warning = c_->GetJob(id).warning();
  EXPECT_NE(warning.find("checkpoint step_100 cannot be stored (the worker keeps it and retries)"), std::string::npos)
      << warning;
  EXPECT_NE(warning.find("exceeds the limit of 14"), std::string::npos) << warning;
  EXPECT_EQ(c_->ListJobs({}, 0).at(0).warning(), warning);
  EXPECT_EQ(Upload(id, 1, 1).size_bytes(), 14u);
  EXPECT_EQ(c_->GetJob(id).warning(), "");
  EXPECT_EQ(c_->GetJob(id).latest_checkpoint(), "step_1");
}

}  // namespace
}  // namespace trm::coordinator
