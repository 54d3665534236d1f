// trmctl eval, checkpoints' evaluation entries and pull --weights-only against the fake
// coordinator: the requests sent and what is printed.
#include <gtest/gtest.h>

#include <sstream>

#include "fake_coordinator.h"
#include "trm/cli/commands.h"

namespace trm::cli {
namespace {

v1::CheckpointInfo Checkpoint(const std::string& name) {
  v1::CheckpointInfo c;
  c.set_name(name);
  return c;
}

TEST(CliEval, OneRunPerCheckpointAndKind) {
  EvalOptions o;
  o.job_id = "job-1";
  o.selector = "all";
  o.dataset = "second";
  o.prompts = "qa";
  const auto reqs = BuildEvalRequests(o, {Checkpoint("step_10"), Checkpoint("step_20")});
  ASSERT_EQ(reqs.size(), 4u);
  EXPECT_EQ(reqs[0].spec().eval().checkpoint(), "step_10");
  EXPECT_EQ(reqs[0].spec().eval().dataset(), "second");
  EXPECT_EQ(reqs[0].spec().eval().split(), "test");
  EXPECT_TRUE(reqs[0].spec().eval().prompts().empty());
  EXPECT_EQ(reqs[1].spec().eval().prompts(), "qa");
  EXPECT_TRUE(reqs[1].spec().eval().dataset().empty());
  EXPECT_EQ(reqs[3].spec().eval().checkpoint(), "step_20");
  EXPECT_EQ(reqs[3].spec().eval().source_job(), "job-1");
  EXPECT_EQ(reqs[3].spec().max_restarts(), 2);

  o.selector = "best:eval[second]:lm_loss";
  o.prompts.clear();
  o.split = "train";
  const auto one = BuildEvalRequests(o, {});
  ASSERT_EQ(one.size(), 1u);
  EXPECT_EQ(one[0].spec().eval().checkpoint(), "best:eval[second]:lm_loss");  // resolved by the coordinator
  EXPECT_EQ(one[0].spec().eval().split(), "train");

  o.dataset.clear();
  EXPECT_THROW(BuildEvalRequests(o, {}), UsageError);
  o.dataset = "second";
  o.selector = "all";
  EXPECT_THROW(BuildEvalRequests(o, {}), RpcError);  // no checkpoint to evaluate
}

TEST(CliEval, SubmitsAndPrintsTheRunIds) {
  testing::FakeServer server;
  server.jobs.checkpoints = {Checkpoint("step_10"), Checkpoint("step_20")};
  std::ostringstream out, err;
  ASSERT_EQ(cli::Run({"eval", "job-1", "--select", "all", "--dataset", "second", "--coordinator", server.address()},
                server.Connect(), Io{&out, &err, false}),
            0)
      << err.str();
  EXPECT_EQ(out.str(), "job-1\njob-2\n");
  ASSERT_EQ(server.jobs.submits.size(), 2u);
  EXPECT_EQ(server.jobs.submits[1].spec().eval().checkpoint(), "step_20");
}

TEST(CliEval, CheckpointsShowEvalEntries) {
  testing::FakeServer server;
  v1::CheckpointInfo c = Checkpoint("step_10");
  c.set_step(10);
  auto* r = c.add_evals();
  r->set_dataset("second");
  r->set_split("test");
  (*r->mutable_metrics())["lm_loss"] = 2.5;
  (*r->mutable_metrics())["count"] = 7;
  server.jobs.checkpoints = {c};
  std::ostringstream out, err;
  ASSERT_EQ(cli::Run({"checkpoints", "job-1", "--coordinator", server.address()}, server.Connect(), Io{&out, &err, false}),
            0);
  EXPECT_NE(out.str().find("eval[second]:lm_loss=2.5"), std::string::npos) << out.str();
  EXPECT_EQ(out.str().find("count"), std::string::npos) << out.str();  // headline metrics only
  std::ostringstream json;
  ASSERT_EQ(cli::Run({"checkpoints", "job-1", "--json", "--coordinator", server.address()}, server.Connect(),
                Io{&json, &err, false}),
            0);
  EXPECT_NE(json.str().find("\"count\":7"), std::string::npos) << json.str();
}

TEST(CliEval, SubmitSendsTheEvalDataset) {
  SubmitOptions o;
  o.config_name = "cfg_tiny";
  o.config_dir = std::string(TRM_SOURCE_DIR) + "/configs";
  o.dataset = "chat";
  o.eval_dataset = "second";
  EXPECT_EQ(BuildSubmitRequest(o).spec().eval_dataset(), "second");
}

}  // namespace
}  // namespace trm::cli
