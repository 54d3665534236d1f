// trmctl for scripts: -o json on every listing / showing command (one JSON document with the
// API's field names, parsed back here into the response message), trmctl metrics as CSV / JSON,
// and checkpoints' chosen metric columns; against the fake coordinator.
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "fake_coordinator.h"
#include "trm/cli/commands.h"

namespace trm::cli {
namespace {

struct Output {
  int code;
  std::string out, err;
};

Output Trmctl(testing::FakeServer& server, std::vector<std::string> argv) {
  argv.insert(argv.end(), {"--coordinator", server.address()});
  std::ostringstream out, err;
  int code;
  try {  // as trmctl's main turns errors into exit codes
    code = cli::Run(argv, server.Connect(), Io{&out, &err, false});
  } catch (const std::exception& e) {
    err << e.what();
    code = ExitCodeFor(e);
  }
  return {code, out.str(), err.str()};
}

// One JSON document on one line, which parses back into `m` exactly (unknown fields refused).
template <typename M>
M ParseBack(const std::string& text) {
  EXPECT_EQ(std::count(text.begin(), text.end(), '\n'), 1) << text;
  M m;
  google::protobuf::util::JsonParseOptions opt;
  opt.ignore_unknown_fields = false;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(text, &m, opt).ok()) << text;
  return m;
}

v1::StepMetrics Point(int64_t step, std::map<std::string, double> values, bool eval = false) {
  v1::StepMetrics p;
  p.set_step(step);
  p.set_total_steps(100);
  p.set_eval(eval);
  for (const auto& [k, v] : values) (*p.mutable_values())[k] = v;
  return p;
}

TEST(CliOutput, EveryListingPrintsOneJsonDocumentWithTheApiFieldNames) {
  testing::FakeServer server;
  v1::Job j;
  j.set_id("job-1");
  j.set_state(v1::JOB_RUNNING);
  j.set_total_steps(100);
  server.jobs.jobs = {j};
  v1::WorkerInfo w;
  w.set_id("w1");
  w.set_free_slots(1);
  server.jobs.workers = {w};
  v1::CheckpointInfo c;
  c.set_name("step_10");
  c.set_size_bytes(123);
  server.jobs.checkpoints = {c};
  v1::DatasetInfo d;
  d.set_name("chat");
  d.set_content_sha256("ab12");
  server.datasets.listed = {d};

  Output list = Trmctl(server, {"list", "-o", "json"});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_NE(list.out.find("\"total_steps\""), std::string::npos) << list.out;  // snake_case, the proto's
  EXPECT_EQ(ParseBack<v1::ListJobsResponse>(list.out).jobs(0).id(), "job-1");

  Output status = Trmctl(server, {"status", "job-1", "--output", "json"});
  ASSERT_EQ(status.code, 0) << status.err;
  EXPECT_EQ(ParseBack<v1::Job>(status.out).step(), 7);

  Output workers = Trmctl(server, {"workers", "-o", "json"});
  ASSERT_EQ(workers.code, 0) << workers.err;
  EXPECT_EQ(ParseBack<v1::ListWorkersResponse>(workers.out).workers(0).free_slots(), 1);

  Output cps = Trmctl(server, {"checkpoints", "job-1", "-o", "json"});
  ASSERT_EQ(cps.code, 0) << cps.err;
  EXPECT_EQ(ParseBack<v1::ListCheckpointsResponse>(cps.out).checkpoints(0).size_bytes(), 123u);

  Output ds = Trmctl(server, {"dataset", "list", "-o", "json"});
  ASSERT_EQ(ds.code, 0) << ds.err;
  EXPECT_EQ(ParseBack<v1::ListDatasetsResponse>(ds.out).datasets(0).content_sha256(), "ab12");

  // The table stays the default; anything but table / json is bad usage (exit 2).
  EXPECT_NE(Trmctl(server, {"list"}).out.find("ID"), std::string::npos);
  Output bad = Trmctl(server, {"list", "-o", "yaml"});
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("expected table or json, got 'yaml'"), std::string::npos) << bad.err;
}

TEST(CliOutput, MetricsAsCsvAndJson) {
  testing::FakeServer server;
  server.jobs.metrics = {Point(1, {{"lm_loss", 2.5}, {"lr", 1e-4}}), Point(2, {{"lm_loss", 2.25}}),
                         Point(2, {{"eval_lm_loss", 2.375}}, /*eval=*/true)};
  Output csv = Trmctl(server, {"metrics", "job-1"});
  ASSERT_EQ(csv.code, 0) << csv.err;
  EXPECT_EQ(csv.out,
            "step,total_steps,eval,eval_lm_loss,lm_loss,lr\n"
            "1,100,0,,2.5,0.0001\n"
            "2,100,0,,2.25,\n"
            "2,100,1,2.375,,\n");

  Output keys = Trmctl(server, {"metrics", "job-1", "--keys", "lm_loss", "--from-step", "2"});
  ASSERT_EQ(keys.code, 0) << keys.err;
  EXPECT_EQ(keys.out, "step,total_steps,eval,lm_loss\n2,100,0,2.25\n2,100,1,\n");

  Output json = Trmctl(server, {"metrics", "job-1", "--format", "json", "--keys", "lm_loss,eval_lm_loss"});
  ASSERT_EQ(json.code, 0) << json.err;
  const auto resp = ParseBack<v1::GetMetricsResponse>(json.out);
  ASSERT_EQ(resp.points_size(), 3);
  EXPECT_EQ(resp.points(0).values().size(), 1u);  // lr left out
  EXPECT_TRUE(resp.points(2).eval());
  EXPECT_EQ(resp.points(2).values().at("eval_lm_loss"), 2.375);

  EXPECT_EQ(Trmctl(server, {"metrics", "job-1", "--format", "xml"}).code, 2);
  EXPECT_EQ(Trmctl(server, {"metrics", "job-9"}).code, 1);  // the service's NOT_FOUND
}

TEST(CliOutput, CheckpointsShowChosenMetricColumns) {
  testing::FakeServer server;
  v1::CheckpointInfo c;
  c.set_name("step_10");
  c.set_step(10);
  (*c.mutable_metrics())["lm_loss"] = 2.5;
  (*c.mutable_metrics())["eval_lm_loss"] = 2.75;
  (*c.mutable_metrics())["tokens_per_s"] = 9000;
  server.jobs.checkpoints = {c};

  Output def = Trmctl(server, {"checkpoints", "job-1"});
  ASSERT_EQ(def.code, 0) << def.err;
  const std::string header = def.out.substr(0, def.out.find('\n'));
  EXPECT_NE(header.find("lm_loss  eval_lm_loss  eval_accuracy"), std::string::npos) << def.out;
  EXPECT_EQ(def.out.find("tokens_per_s"), std::string::npos) << def.out;  // not a default column
  EXPECT_NE(def.out.find("2.75"), std::string::npos) << def.out;

  Output chosen = Trmctl(server, {"checkpoints", "job-1", "--metrics", "tokens_per_s,grad_norm"});
  ASSERT_EQ(chosen.code, 0) << chosen.err;
  const std::string row = chosen.out.substr(chosen.out.find("step_10"));
  EXPECT_NE(row.find("9000"), std::string::npos) << chosen.out;
  EXPECT_NE(row.find(" - "), std::string::npos) << chosen.out;  // no grad_norm on this checkpoint
  EXPECT_EQ(chosen.out.find("2.75"), std::string::npos) << chosen.out;

  EXPECT_EQ(Trmctl(server, {"checkpoints", "job-1", "--metrics", "a,,b"}).code, 2);
}

// The completion script, run in a real bash: commands, two-word commands and each command's flags.
TEST(CliOutput, BashCompletionCompletesCommandsAndFlags) {
  const std::string script = ::testing::TempDir() + "/trmctl_completion.bash";
  std::ofstream(script) << BashCompletion();
  auto complete = [&](const std::string& words, int cword) {
    const std::string cmd = "bash -c 'source " + script + "; COMP_WORDS=(" + words + "); COMP_CWORD=" +
                            std::to_string(cword) + "; _trmctl; echo ${COMPREPLY[@]}'";
    FILE* p = ::popen(cmd.c_str(), "r");
    std::string out;
    char buf[512];
    for (size_t n; p && (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
    if (p) EXPECT_EQ(::pclose(p), 0) << cmd;
    return out.substr(0, out.find_last_not_of('\n') + 1);
  };
  EXPECT_EQ(complete("trmctl che", 1), "checkpoints");
  EXPECT_EQ(complete("trmctl me", 1), "metrics");
  EXPECT_EQ(complete("trmctl dataset p", 2), "push");
  EXPECT_EQ(complete("trmctl dataset push dir --pr", 4), "--prompts");
  EXPECT_EQ(complete("trmctl checkpoints job-1 --met", 3), "--metrics");
  EXPECT_EQ(complete("trmctl pull job-1 --weig", 3), "--weights-only");
  EXPECT_EQ(complete("trmctl list --coord", 2), "--coordinator");
}

}  // namespace
}  // namespace trm::cli
