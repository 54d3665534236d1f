// Evaluation runs on the agent against the fake coordinator, with a small shell script standing
// in for trm-eval (--eval-binary; the end-to-end test tests/e2e/eval_service.sh runs the real
// one): the weights-only fetch, the dataset, trm-eval's command line, its JSON line turned into
// an EvalResult before the exit, bad input and bad output as failures, a stop order.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "eval_run.h"
#include "fake_coordinator.h"
#include "trm/agent/agent.h"
#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/rpc/transfer.h"

namespace trm::agent {
namespace {
namespace fs = std::filesystem;
using testing::FakeCoordinatorClient;

TEST(EvalRun, CommandLines) {
  EvalLaunch l;
  l.eval_binary = "/bin/trm-eval";
  l.checkpoint_dir = "/c/step_3.weights";
  l.dataset_dir = "/d/h";
  l.split = "test";
  l.device_kind = "cuda";
  EXPECT_EQ(EvalCommand(l), (std::vector<std::string>{"/bin/trm-eval", "--checkpoint", "/c/step_3.weights", "--data",
                                                      "/d/h", "--split", "test", "--device", "cuda", "--no-progress"}));
  l.prompts_file = "/d/p/prompts.jsonl";
  l.output_file = "/a/completions.jsonl";
  EXPECT_EQ(EvalCommand(l), (std::vector<std::string>{"/bin/trm-eval", "generate", "--checkpoint", "/c/step_3.weights",
                                                      "--prompts", "/d/p/prompts.jsonl", "--output",
                                                      "/a/completions.jsonl", "--device", "cuda", "--no-progress"}));
}

TEST(EvalRun, OutputLines) {
  const v1::EvalResult r =
      ParseEvalOutput(R"({"checkpoint": "x", "rows": 4, "metrics": {"lm_loss": 2.5, "count": 4}})");
  EXPECT_EQ(r.metrics().at("lm_loss"), 2.5);
  EXPECT_EQ(r.metrics().at("count"), 4);
  for (const std::string bad : {"not json", R"({"rows": 1})", R"({"metrics": {"lm_loss": "2"}})", R"({"metrics": {}})"}) {
    EXPECT_THROW(ParseEvalOutput(bad), Error) << bad;
  }
  EvalOutput out;
  out.OnStdout("loading...");
  out.OnStdout(R"({"metrics": {"a": 1}})");
  out.OnStdout("done");
  EXPECT_EQ(out.last(), R"({"metrics": {"a": 1}})");
  v1::WorkerEvent exit;
  exit.mutable_exit()->set_exit_code(0);
  auto evs = EvalExitEvents(out.last(), exit);
  ASSERT_EQ(evs.size(), 2u);
  EXPECT_TRUE(evs[0].has_eval_result());
  EXPECT_EQ(evs[1].exit().exit_code(), 0);
  evs = EvalExitEvents("", exit);
  ASSERT_EQ(evs.size(), 1u);
  EXPECT_EQ(evs[0].exit().exit_code(), 1);
  EXPECT_EQ(evs[0].exit().failure_kind(), "bad_output");
}

class AgentEvalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("trm_agent_eval_" + std::to_string(::getpid()) + "_" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    // A checkpoint with optimizer state the evaluation must not fetch, and a dataset.
    const fs::path ckpt = dir_ / "server" / "step_3";
    fs::create_directories(ckpt / "tokenizer");
    for (const char* f : {"model.safetensors", "optimizer.safetensors", "state.json", "tokenizer/vocab.json"})
      std::ofstream(ckpt / f) << f;
    const fs::path ds = dir_ / "server" / "ds";
    fs::create_directories(ds / "test");
    std::ofstream(ds / "test" / "all__inputs.npy") << "rows";
    hash_ = rpc::ContentHash(rpc::BuildManifest(ds.string(), "ds"));
    fake_ = std::make_shared<FakeCoordinatorClient>((dir_ / "uploads").string());
    fake_->ServeCheckpoint("job-t", "step_3", ckpt.string());
    fake_->ServeDataset(hash_, ds.string());
  }
  void TearDown() override {
    agent_.reset();
    fs::remove_all(dir_);
  }
  // trm-eval's stand-in: records its arguments and what it was given, then `body`.
  void StartAgent(const std::string& body) {
    script_ = (dir_ / "fake-trm-eval").string();
    std::ofstream(script_) << "#!/bin/sh\n"
                           << "echo \"$@\" > " << dir_.string() << "/argv\n"
                           << "ls \"$2\" \"$2/tokenizer\" > " << dir_.string() << "/checkpoint_files\n"
                           << "echo 'progress: loading' >&2\n"
                           << body << "\n";
    ::chmod(script_.c_str(), 0755);
    AgentOptions o;
    o.worker_id = "eval-worker";
    o.work_dir = (dir_ / "worker").string();
    o.train_binary = "/bin/false";
    o.eval_binary = script_;
    o.heartbeat_ms = 50;
    o.report_interval_ms = 50;
    o.grace_ms = 2000;
    agent_ = std::make_unique<Agent>(o, fake_);
    agent_->Start();
    v1::Assignment a;
    a.set_job_id("job-e");
    a.set_attempt(1);
    a.set_world_size(1);
    a.add_ranks(0);
    a.set_dataset_hash(hash_);
    a.mutable_eval()->set_source_job("job-t");
    a.mutable_eval()->set_checkpoint("step_3");
    a.mutable_eval()->set_split("test");
    fake_->Assign(a);
  }
  std::vector<v1::WorkerEvent> WaitForExit() {
    EXPECT_TRUE(fake_->WaitFor(
        [&] {
          for (const auto& e : fake_->Events("job-e", 1))
            if (e.has_exit()) return true;
          return false;
        },
        30000));
    return fake_->Events("job-e", 1);
  }

  fs::path dir_;
  std::string hash_, script_;
  std::shared_ptr<FakeCoordinatorClient> fake_;
  std::unique_ptr<Agent> agent_;
};

TEST_F(AgentEvalTest, RunsTrmEvalOnTheWeightsAndReportsItsResultBeforeTheExit) {
  StartAgent(R"(echo '{"checkpoint": "c", "data": "d", "split": "test", "rows": 3, "metrics": {"lm_loss": 1.25, "accuracy": 0.5}}')");
  const auto events = WaitForExit();
  int result_at = -1, exit_at = -1;
  for (int i = 0; i < static_cast<int>(events.size()); ++i) {
    if (events[i].has_eval_result()) result_at = i;
    if (events[i].has_exit()) exit_at = i;
  }
  ASSERT_GE(result_at, 0);
  EXPECT_LT(result_at, exit_at);
  EXPECT_EQ(events[result_at].eval_result().metrics().at("lm_loss"), 1.25);
  EXPECT_EQ(events[result_at].eval_result().metrics().at("accuracy"), 0.5);
  EXPECT_EQ(events[exit_at].exit().exit_code(), 0);
  const std::string ckpt = (dir_ / "worker" / "cache" / "checkpoints" / "job-t" / "step_3.weights").string();
  const std::string ds = (dir_ / "worker" / "cache" / "datasets" / hash_).string();
  EXPECT_EQ(ReadFile((dir_ / "argv").string()),
            "--checkpoint " + ckpt + " --data " + ds + " --split test --device cpu --no-progress\n");
  const std::string files = ReadFile((dir_ / "checkpoint_files").string());
  EXPECT_NE(files.find("model.safetensors"), std::string::npos) << files;
  EXPECT_NE(files.find("vocab.json"), std::string::npos) << files;
  EXPECT_EQ(files.find("optimizer"), std::string::npos) << files;  // weights only
  EXPECT_TRUE(fs::exists(ds + "/test/all__inputs.npy"));
}

TEST_F(AgentEvalTest, BadInputIsAFailureWithItsMessageAndNoResult) {
  StartAgent("echo 'error: vocab_size 300 of the dataset does not match the checkpoint (259)' >&2; exit 2");
  const auto events = WaitForExit();
  for (const auto& e : events) EXPECT_FALSE(e.has_eval_result());
  const v1::RankExit& x = events.back().exit();
  EXPECT_EQ(x.exit_code(), 2);
  EXPECT_EQ(x.failure_kind(), "bad_input");
  EXPECT_NE(x.message().find("vocab_size 300"), std::string::npos) << x.message();
}

TEST_F(AgentEvalTest, AZeroExitWithoutItsJsonLineFailsAsBadOutput) {
  StartAgent("echo 'no json here'; exit 0");
  const auto events = WaitForExit();
  for (const auto& e : events) EXPECT_FALSE(e.has_eval_result());
  EXPECT_EQ(events.back().exit().exit_code(), 1);
  EXPECT_EQ(events.back().exit().failure_kind(), "bad_output");
}

TEST_F(AgentEvalTest, AStopOrderEndsTheRun) {
  StartAgent("exec sleep 60");
  ASSERT_TRUE(fake_->WaitFor([&] { return fs::exists(dir_ / "argv"); }, 30000));
  fake_->OrderStop("job-e", 1);
  const auto events = WaitForExit();
  EXPECT_NE(events.back().exit().exit_code(), 0);
  for (const auto& e : events) EXPECT_FALSE(e.has_eval_result());
}

}  // namespace
}  // namespace trm::agent
