// trm_agent against a fake coordinator, with real trm-train ranks on tiny runs (each a second or
// two on a CPU).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "../common/host_addresses.h"
#include "fake_coordinator.h"
#include "manual_clock.h"
#include "trm/common/oom_counter.h"
#include "trm/agent/agent.h"
#include "trm/agent/options.h"
#include "trm/common/error.h"
#include "trm/common/exit_codes.h"
#include "trm/common/file_util.h"
#include "trm/common/yaml_config.h"
#include "trm/rpc/transfer.h"

namespace trm::agent {
namespace {
namespace fs = std::filesystem;
using testing::FakeCoordinatorClient;
using testing::ManualClock;

std::string Binary(const std::string& name) {
  // This build's binaries, else the main build's (the agent only needs them to exist).
  for (const std::string dir : {std::string(TRM_BIN_DIR), std::string(TRM_SOURCE_DIR) + "/build/bin"}) {
    if (::access((dir + "/" + name).c_str(), X_OK) == 0) return dir + "/" + name;
  }
  return std::string(TRM_BIN_DIR) + "/" + name;
}

class AgentTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = new std::string(fs::temp_directory_path() / ("trm_agent_test_" + std::to_string(::getpid())));
    fs::remove_all(*root_);
    fs::create_directories(*root_);
    const std::string cmd = Binary("trm-data") + " build --input " + std::string(TRM_SOURCE_DIR) +
                            "/examples/chat_example.json --format sharegpt --tokenizer byte --max-length 64 "
                            "--train-split 1.0 --no-progress --output-dir " + *root_ + "/ds > " + *root_ +
                            "/data.log 2>&1";
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    hash_ = new std::string(rpc::ContentHash(rpc::BuildManifest(*root_ + "/ds", "ds")));
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*root_, ec);
  }

  void SetUp() override {
    dir_ = *root_ + "/" + ::testing::UnitTest::GetInstance()->current_test_info()->name();
    fake_ = std::make_shared<FakeCoordinatorClient>(dir_ + "/coordinator");
    fake_->ServeDataset(*hash_, *root_ + "/ds");
  }

  std::unique_ptr<Agent> MakeAgent(int64_t heartbeat_ms = 100, std::shared_ptr<Clock> clock = nullptr) {
    AgentOptions o;
    o.clock = std::move(clock);
    o.worker_id = "test-worker";
    o.work_dir = dir_ + "/worker";
    o.train_binary = Binary("trm-train");
    o.heartbeat_ms = heartbeat_ms;
    o.grace_ms = 3000;
    o.upload_retry_max_ms = 500;
    o.report_interval_ms = 100;
    return std::make_unique<Agent>(o, fake_);
  }

  static std::string Config(const std::vector<std::string>& overrides) {
    nlohmann::json j = LoadComposedConfig(std::string(TRM_SOURCE_DIR) + "/configs", "cfg_tiny");
    ApplyOverrides(&j, {"global_batch_size=4", "arch.hidden_size=32", "arch.num_heads=2", "threads=1",
                        "log_interval=1", "device=cpu"});
    ApplyOverrides(&j, overrides);
    return j.dump();
  }

  v1::Assignment Assignment(const std::string& job, int attempt, const std::vector<std::string>& overrides) {
    v1::Assignment a;
    a.set_job_id(job);
    a.set_attempt(attempt);
    a.set_world_size(1);
    a.add_ranks(0);
    a.set_master_addr("127.0.0.1");
    a.set_master_port(29500 + (::getpid() % 1000));
    a.set_config_json(Config(overrides));
    a.set_dataset_hash(*hash_);
    return a;
  }

  // With a manual clock: lets agent time pass in steps until pred() holds (bounded in real time,
  // each step waiting for the agent's threads to react).
  bool Pump(ManualClock& clock, const std::function<bool()>& pred, int timeout_ms) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!pred() && std::chrono::steady_clock::now() < until) {
      clock.Advance(std::chrono::milliseconds(50));
      fake_->WaitFor(pred, 5);
    }
    return pred();
  }

  const v1::RankExit* ExitOf(const std::vector<v1::WorkerEvent>& ev, int rank) {
    for (const auto& e : ev) {
      if (e.has_exit() && e.exit().rank() == rank) {
        exit_ = e.exit();
        return &exit_;
      }
    }
    return nullptr;
  }

  static std::string* root_;
  static std::string* hash_;
  std::string dir_;
  std::shared_ptr<FakeCoordinatorClient> fake_;
  v1::RankExit exit_;
};
std::string* AgentTest::root_ = nullptr;
std::string* AgentTest::hash_ = nullptr;

TEST_F(AgentTest, RunsAnAssignmentAndReportsMetricsCheckpointsThenExit) {
  auto agent = MakeAgent();
  fake_->BreakNextFetchAfter(1000);  // the dataset download resumes after a broken stream
  fake_->Assign(Assignment("job-a", 1, {"max_steps=6", "checkpoint_interval_steps=3"}));
  agent->Start();
  ASSERT_TRUE(fake_->WaitFor([&] { return ExitOf(fake_->Events("job-a", 1), 0) != nullptr; }, 60000))
      << "no exit reported";
  const v1::RankExit ex = exit_;
  EXPECT_EQ(ex.exit_code(), 0);
  EXPECT_EQ(ex.failure_kind(), "");

  const auto events = fake_->Events("job-a", 1);
  std::vector<int64_t> steps;
  bool logs = false;
  for (const auto& e : events) {
    if (e.has_metrics() && !e.metrics().eval()) {
      steps.push_back(e.metrics().step());
      EXPECT_GT(e.metrics().values().count("lm_loss"), 0u);
      EXPECT_GT(e.metrics().total_steps(), 0);
    }
    logs = logs || e.has_log();
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{1, 2, 3, 4, 5, 6}));
  EXPECT_TRUE(logs);

  const auto uploads = fake_->Uploads();
  ASSERT_EQ(uploads.size(), 2u);
  EXPECT_EQ(uploads[0].info().name(), "step_3");
  EXPECT_EQ(uploads[1].info().name(), "step_6");
  for (const auto& u : uploads) {
    EXPECT_EQ(u.worker_id(), "test-worker");
    EXPECT_EQ(u.attempt(), 1);
    EXPECT_EQ(u.manifest().content_sha256(), rpc::ContentHash(u.manifest()));
    EXPECT_EQ(u.info().metrics().at("step"), u.info().step());
    EXPECT_GT(u.info().metrics().count("lm_loss"), 0u);
    EXPECT_TRUE(fs::exists(dir_ + "/coordinator/job-a/" + u.info().name() + "/model.safetensors"));
  }
  // Rank 0's exit comes after the final checkpoint: the job's success implies it is there.
  const auto journal = fake_->Journal();
  const auto up = std::find(journal.begin(), journal.end(), "upload step_6");
  const auto done = std::find(journal.begin(), journal.end(), "exit 0 0");
  ASSERT_NE(up, journal.end());
  ASSERT_NE(done, journal.end());
  EXPECT_LT(up - journal.begin(), done - journal.begin());

  EXPECT_TRUE(fs::exists(dir_ + "/worker/cache/datasets/" + *hash_ + "/train"));
  EXPECT_TRUE(fs::exists(dir_ + "/worker/jobs/job-a/attempt_1/config/job.yaml"));
  EXPECT_NE(ReadFile(dir_ + "/worker/jobs/job-a/attempt_1/rank_0.log").find("step 6"), std::string::npos);
  EXPECT_GE(fake_->registers(), 1);
  // The rank's phase file reached the heartbeats (100 ms apart: at least the long phases).
  const auto phases = fake_->ReportedPhases();
  EXPECT_FALSE(phases.empty());
  for (v1::RankPhase p : phases) EXPECT_NE(p, v1::PHASE_UNSPECIFIED);
  EXPECT_TRUE(fs::exists(dir_ + "/worker/jobs/job-a/attempt_1/rank_0.phase"));

  // The attempt is dropped once a heartbeat showed it finished and its events are out.
  EXPECT_TRUE(fake_->WaitFor([&] { return agent->Attempts().empty(); }, 5000));
  agent->Shutdown();
}

TEST_F(AgentTest, ResumesFromAFetchedCheckpoint) {
  // A finished run's step_3 served as the resume point of attempt 2.
  auto agent = MakeAgent();
  fake_->Assign(Assignment("job-r", 1, {"max_steps=3", "checkpoint_interval_steps=3"}));
  agent->Start();
  ASSERT_TRUE(fake_->WaitFor([&] { return ExitOf(fake_->Events("job-r", 1), 0) != nullptr; }, 60000));
  fake_->ServeCheckpoint("job-r", "step_3", dir_ + "/coordinator/job-r/step_3");
  auto a = Assignment("job-r", 2, {"max_steps=5", "checkpoint_interval_steps=0"});
  a.set_resume_checkpoint("step_3");
  fake_->Assign(a);
  ASSERT_TRUE(fake_->WaitFor([&] { return ExitOf(fake_->Events("job-r", 2), 0) != nullptr; }, 60000));
  EXPECT_EQ(exit_.exit_code(), 0) << exit_.message();
  std::vector<int64_t> steps;
  for (const auto& e : fake_->Events("job-r", 2)) {
    if (e.has_metrics() && !e.metrics().eval()) steps.push_back(e.metrics().step());
  }
  EXPECT_EQ(steps, (std::vector<int64_t>{4, 5}));
  EXPECT_TRUE(fs::exists(dir_ + "/worker/cache/checkpoints/job-r/step_3/model.safetensors"));
  const auto uploads = fake_->Uploads();
  ASSERT_FALSE(uploads.empty());
  EXPECT_EQ(uploads.back().info().name(), "step_5");
  EXPECT_EQ(fake_->fetches(), 2);  // the dataset once (cached for attempt 2), the checkpoint once
  agent->Shutdown();
}

TEST_F(AgentTest, StopOrderKillsTheRanksPromptly) {
  auto agent = MakeAgent();
  fake_->Assign(Assignment("job-s", 1, {"max_steps=0", "epochs=100000"}));
  agent->Start();
  pid_t pid = 0;
  ASSERT_TRUE(fake_->WaitFor(
      [&] {
        for (const auto& e : fake_->Events("job-s", 1)) {
          if (e.has_metrics()) return true;
        }
        return false;
      },
      60000));
  for (const auto& st : agent->Attempts()) {
    if (st.job_id() == "job-s") {
      pid = st.ranks(0).pid();
      EXPECT_EQ(st.ranks(0).phase(), v1::PHASE_COMPUTE);
      EXPECT_GT(st.ranks(0).rss_bytes(), 0);
      EXPECT_GT(st.ranks(0).step(), 0);
    }
  }
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::kill(pid, 0), 0);
  const auto t0 = std::chrono::steady_clock::now();
  fake_->OrderStop("job-s", 1);
  ASSERT_TRUE(fake_->WaitFor([&] { return ::kill(pid, 0) != 0 && errno == ESRCH; }, 10000)) << "rank still alive";
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(6));
  EXPECT_NE(::kill(-pid, 0), 0);  // nothing left of its process group
  ASSERT_TRUE(fake_->WaitFor([&] { return ExitOf(fake_->Events("job-s", 1), 0) != nullptr; }, 5000));
  EXPECT_NE(exit_.message().find("stopped by the worker"), std::string::npos) << exit_.message();
  agent->Shutdown();
}

TEST_F(AgentTest, ShutdownStopsRunningRanks) {
  auto agent = MakeAgent();
  fake_->Assign(Assignment("job-t", 1, {"max_steps=0", "epochs=100000"}));
  agent->Start();
  pid_t pid = 0;
  ASSERT_TRUE(fake_->WaitFor(
      [&] {
        for (const auto& st : agent->Attempts()) {
          if (st.ranks_size() && st.ranks(0).pid() > 0) pid = st.ranks(0).pid();
        }
        return pid > 0;
      },
      30000));
  const auto t0 = std::chrono::steady_clock::now();
  agent->Shutdown();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(8));
  EXPECT_NE(::kill(pid, 0), 0);
}

TEST_F(AgentTest, FailingRankIsReportedWithItsLogTailEvenAcrossAnOutage) {
  auto clock = std::make_shared<ManualClock>();
  auto agent = MakeAgent(100, clock);
  auto a = Assignment("job-f", 1, {"+no_such_key=1"});
  a.clear_dataset_hash();  // a path every worker reads: nothing to fetch while the coordinator is down
  a.set_data_path(*root_ + "/ds");
  fake_->Assign(a);
  agent->Start();
  // The coordinator goes away once the assignment is taken; the exit must still arrive.
  ASSERT_TRUE(Pump(*clock, [&] { return !agent->Attempts().empty(); }, 10000));
  fake_->SetDown(true);
  ASSERT_TRUE(fake_->WaitFor(
      [&] {
        auto a = agent->Attempts();
        return !a.empty() && a[0].ranks(0).phase() == v1::PHASE_EXITED;
      },
      30000));
  // The agent keeps trying to report the exit (report intervals, then backoff, on the manual
  // clock) and none of it gets through while the coordinator is down.
  const int refused = fake_->refused_exit_reports();
  ASSERT_TRUE(Pump(*clock, [&] { return fake_->refused_exit_reports() >= refused + 3; }, 30000));
  EXPECT_EQ(ExitOf(fake_->Events("job-f", 1), 0), nullptr);
  fake_->SetDown(false);
  ASSERT_TRUE(Pump(*clock, [&] { return ExitOf(fake_->Events("job-f", 1), 0) != nullptr; }, 15000));
  EXPECT_EQ(exit_.exit_code(), 2);
  EXPECT_EQ(exit_.failure_kind(), "bad_input");  // trm-train exit code 2
  EXPECT_NE(exit_.message().find("no_such_key"), std::string::npos) << exit_.message();
  agent->Shutdown();
}

TEST_F(AgentTest, ReSentAssignmentRunsOnce) {
  auto clock = std::make_shared<ManualClock>();
  auto agent = MakeAgent(/*heartbeat_ms=*/30, clock);
  fake_->Assign(Assignment("job-d", 1, {"+no_such_key=1"}), /*resend_always=*/true);
  agent->Start();
  ASSERT_TRUE(Pump(*clock, [&] { return ExitOf(fake_->Events("job-d", 1), 0) != nullptr; }, 30000));
  const int hb = fake_->heartbeats();
  ASSERT_TRUE(Pump(*clock, [&] { return fake_->heartbeats() >= hb + 20 && agent->Attempts().empty(); }, 15000));
  int exits = 0;
  for (const auto& e : fake_->Events("job-d", 1)) exits += e.has_exit();
  EXPECT_EQ(exits, 1);
  agent->Shutdown();

  // A new worker process over the same work dir does not run it again either: reported lost.
  auto again = MakeAgent(30, clock);
  again->Start();
  ASSERT_TRUE(Pump(
      *clock,
      [&] {
        int n = 0;
        for (const auto& e : fake_->Events("job-d", 1)) n += e.has_exit();
        return n == 2;
      },
      10000));
  const auto ev = fake_->Events("job-d", 1);
  const v1::RankExit* last = nullptr;
  for (const auto& e : ev) {
    if (e.has_exit()) last = &e.exit();
  }
  ASSERT_NE(last, nullptr);
  EXPECT_EQ(last->failure_kind(), "lost_worker");
  again->Shutdown();
}

TEST_F(AgentTest, AnUploadRefusedForGoodIsNotRetriedAndFailsTheAttempt) {
  auto agent = MakeAgent();
  // What the coordinator answers an attempt that is no longer the current one.
  fake_->FailNextUploads(1000, Code::kFailedPrecondition);
  fake_->Assign(Assignment("job-u", 1, {"max_steps=3", "checkpoint_interval_steps=3"}));
  agent->Start();
  ASSERT_TRUE(fake_->WaitFor([&] { return ExitOf(fake_->Events("job-u", 1), 0) != nullptr; }, 60000));
  EXPECT_EQ(fake_->upload_calls(), 1);
  EXPECT_TRUE(fake_->Uploads().empty());
  // Without its checkpoint the job must not succeed: rank 0's exit is a failure naming the
  // upload (kind "upload" when rank 0 had exited 0 already, else it was stopped for it).
  EXPECT_NE(exit_.exit_code(), 0);
  EXPECT_NE(exit_.message().find("checkpoint step_3 cannot be uploaded"), std::string::npos) << exit_.message();
  agent->Shutdown();
}

TEST_F(AgentTest, AnUploadTheCoordinatorCannotTakeYetIsRetriedAfterTheBackoff) {
  auto clock = std::make_shared<ManualClock>();
  auto agent = MakeAgent(100, clock);
  fake_->FailNextUploads(2, Code::kUnavailable);
  fake_->Assign(Assignment("job-b", 1, {"max_steps=3", "checkpoint_interval_steps=3"}));
  agent->Start();
  // The backoff passes on the manual clock only: a retry comes when the test lets time pass.
  ASSERT_TRUE(Pump(*clock, [&] { return ExitOf(fake_->Events("job-b", 1), 0) != nullptr; }, 60000));
  EXPECT_EQ(exit_.exit_code(), 0) << exit_.message();
  EXPECT_EQ(fake_->upload_calls(), 3);
  ASSERT_EQ(fake_->Uploads().size(), 1u);
  EXPECT_EQ(fake_->Uploads()[0].info().name(), "step_3");
  agent->Shutdown();
}

TEST(WorkerCommandLine, DefaultsAndPersistentId) {
  const std::string dir = fs::temp_directory_path() / ("trm_agent_cl_" + std::to_string(::getpid()));
  const auto a = ParseWorkerCommandLine({"--coordinator", "h:1", "--work-dir", dir, "--cpu-slots", "3",
                                         "--train-binary", Binary("trm-train")});
  EXPECT_EQ(a.agent.devices.size(), 3u);
  EXPECT_EQ(a.agent.device_kind, "cpu");
  EXPECT_EQ(a.agent.host, "127.0.0.1");
  const auto b = ParseWorkerCommandLine({"--coordinator=h:1", "--work-dir", dir, "--gpus", "0,2",
                                         "--train-binary", Binary("trm-train")});
  EXPECT_EQ(a.agent.worker_id, b.agent.worker_id);  // persisted in work-dir/worker_id
  EXPECT_EQ(b.agent.device_kind, "cuda");
  EXPECT_EQ(b.agent.devices, (std::vector<std::string>{"0", "2"}));
  // Without --host: the address this machine reaches the coordinator from (what ranks of other
  // machines connect to when rank 0 runs here); loopback for a local coordinator; --host wins.
  const auto local = ParseWorkerCommandLine({"--coordinator", "127.0.0.1:50051", "--work-dir", dir,
                                             "--train-binary", Binary("trm-train")});
  EXPECT_EQ(local.agent.host, "127.0.0.1");
  const auto given = ParseWorkerCommandLine({"--coordinator", "127.0.0.1:50051", "--host", "10.1.2.3", "--work-dir",
                                             dir, "--train-binary", Binary("trm-train")});
  EXPECT_EQ(given.agent.host, "10.1.2.3");
  for (const std::string& own : NonLoopbackIpv4Addresses()) {
    const auto there = ParseWorkerCommandLine({"--coordinator", own + ":50051", "--work-dir", dir,
                                               "--train-binary", Binary("trm-train")});
    EXPECT_EQ(there.agent.host, own);
  }
  EXPECT_THROW(ParseWorkerCommandLine({"--work-dir", dir}), trm::Error);
  EXPECT_THROW(ParseWorkerCommandLine({"--coordinator", "h:1", "--bogus"}), trm::Error);
  EXPECT_THROW(ParseWorkerCommandLine({"--coordinator", "h:1", "--cpu-slots", "0"}), trm::Error);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace trm::agent

namespace trm::agent {
namespace {

// The OOM kill count comes from the process's memory cgroup (v2 or v1), else from /proc/vmstat.
TEST(OomKillCount, ReadsTheCgroupThenTheMachine) {
  const fs::path root = fs::temp_directory_path() / ("trm_oom_" + std::to_string(::getpid()));
  fs::remove_all(root);
  auto write = [&](const std::string& rel, const std::string& text) {
    fs::create_directories((root / rel).parent_path());
    WriteFileAtomic((root / rel).string(), text);
  };
  EXPECT_EQ(ReadOomKillCount(root.string()), -1);  // nothing readable
  write("proc/vmstat", "pgfault 100\noom_kill 7\nother 1\n");
  EXPECT_EQ(ReadOomKillCount(root.string()), 7);
  write("proc/self/cgroup", "4:memory:/jobs/a\n0::/\n");
  write("sys/fs/cgroup/memory/jobs/a/memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n");
  EXPECT_EQ(ReadOomKillCount(root.string()), 2);
  write("proc/self/cgroup", "0::/user.slice/x\n");
  write("sys/fs/cgroup/user.slice/x/memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
  EXPECT_EQ(ReadOomKillCount(root.string()), 1);
  fs::remove_all(root);
}

TEST(ExitCodes, TrainerExitCodesMapToFailureKinds) {
  EXPECT_EQ(FailureKindOfExitCode(kExitOutOfMemory), "oom");
  EXPECT_EQ(FailureKindOfExitCode(kExitDiskFull), "disk_full");
  EXPECT_EQ(FailureKindOfExitCode(kExitBadInput), "bad_input");
  EXPECT_EQ(FailureKindOfExitCode(kExitTimeout), "timeout");
  EXPECT_EQ(FailureKindOfExitCode(kExitError), "exit_code");
  EXPECT_EQ(FailureKindOfExitCode(139), "exit_code");
}

}  // namespace
}  // namespace trm::agent
