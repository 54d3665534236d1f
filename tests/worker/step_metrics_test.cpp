// The metrics.jsonl schema (trm/worker/step_metrics.h), torch-free like the readers that use it.
#include "trm/worker/step_metrics.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <string>

#include "trm/common/error.h"

namespace trm::worker {
namespace {

using nlohmann::json;

StepMetrics Sample() {
  StepMetrics m;
  m.step = 12;
  m.total_steps = 300;
  m.epoch = 1.25;
  m.lr = 3e-4;
  m.lm_loss = 2.5;
  m.q_halt_loss = 0.125;
  m.q_continue_loss = 0.0625;
  m.accuracy = 0.5;
  m.exact_accuracy = 0.25;
  m.q_halt_accuracy = 0.75;
  m.act_steps = 2.5;
  m.grad_norm = 1.5;
  m.tokens_per_s = 1234.5;
  m.step_s = 0.2;
  m.allreduce_s = 0.05;
  m.allreduce_overlapped = 3;
  m.skipped = true;
  return m;
}

void ExpectSameWritten(const StepMetrics& a, const StepMetrics& b) {
  EXPECT_EQ(a.step, b.step);
  EXPECT_EQ(a.total_steps, b.total_steps);
  EXPECT_EQ(a.epoch, b.epoch);
  EXPECT_EQ(a.lr, b.lr);
  EXPECT_EQ(a.lm_loss, b.lm_loss);
  EXPECT_EQ(a.q_halt_loss, b.q_halt_loss);
  EXPECT_EQ(a.q_continue_loss, b.q_continue_loss);
  EXPECT_EQ(a.accuracy, b.accuracy);
  EXPECT_EQ(a.exact_accuracy, b.exact_accuracy);
  EXPECT_EQ(a.q_halt_accuracy, b.q_halt_accuracy);
  EXPECT_EQ(a.act_steps, b.act_steps);
  EXPECT_EQ(a.grad_norm, b.grad_norm);
  EXPECT_EQ(a.tokens_per_s, b.tokens_per_s);
  EXPECT_EQ(a.step_s, b.step_s);
  EXPECT_EQ(a.allreduce_s, b.allreduce_s);
  EXPECT_EQ(a.allreduce_overlapped, b.allreduce_overlapped);
  EXPECT_EQ(a.skipped, b.skipped);
}

std::string ErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kInvalidArgument) << e.what();
    return e.what();
  }
  ADD_FAILURE() << "no error";
  return "";
}

TEST(StepMetrics, RoundTripsThroughItsLine) {
  const StepMetrics m = Sample();
  const std::string line = m.ToJson().dump();
  // The readers' name -> number form gives the same numbers (`skipped` is not a number there).
  const MetricsLine l = ParseMetricsLine(line, "line");
  EXPECT_EQ(l.step, m.step);
  EXPECT_EQ(l.total_steps, m.total_steps);
  EXPECT_FALSE(l.eval);
  StepMetrics v = StepMetrics::FromValues(l.values);
  EXPECT_FALSE(v.skipped);
  v.skipped = m.skipped;
  ExpectSameWritten(v, m);
}

// The bytes trm-train wrote before the schema existed: the same keys, types and order.
TEST(StepMetrics, WritesTheKeysTheFileAlwaysHad) {
  StepMetrics m = Sample();
  m.halted_rows = 7;      // in-process only
  m.skipped_total = 4;    // in-process only
  EXPECT_EQ(m.ToJson().dump(),
            "{\"accuracy\":0.5,\"act_steps\":2.5,\"allreduce_overlapped\":3,\"allreduce_s\":0.05,\"epoch\":1.25,"
            "\"exact_accuracy\":0.25,\"grad_norm\":1.5,\"lm_loss\":2.5,\"lr\":0.0003,\"q_continue_loss\":0.0625,"
            "\"q_halt_accuracy\":0.75,\"q_halt_loss\":0.125,\"skipped\":true,\"step\":12,\"step_s\":0.2,"
            "\"tokens_per_s\":1234.5,\"total_steps\":300}");
}

// Readers forward keys they do not know (a newer trainer may write more).
TEST(StepMetrics, UnknownKeysAreTolerated) {
  json j = Sample().ToJson();
  j["new_metric"] = 42;
  j["note"] = "text";
  const MetricsLine l = ParseMetricsLine(j.dump(), "x");
  StepMetrics v = StepMetrics::FromValues(l.values);
  v.skipped = true;  // not a number in the readers' form
  ExpectSameWritten(v, Sample());
  EXPECT_EQ(l.values.at("new_metric"), 42);
  EXPECT_EQ(l.values.count("note"), 0u);  // not a number
}

TEST(StepMetrics, FromValuesReadsMissingKeysAsZero) {
  const std::map<std::string, double> values = {{"lm_loss", 1.5}, {"step_s", 0.25}, {"step", 9}};
  const StepMetrics m = StepMetrics::FromValues(values);
  EXPECT_EQ(m.lm_loss, 1.5);
  EXPECT_EQ(m.step_s, 0.25);
  EXPECT_EQ(m.step, 9);
  EXPECT_EQ(m.tokens_per_s, 0);
  EXPECT_EQ(m.allreduce_s, 0);
}

// trm-train's writer puts a NaN or an infinity as null: the readers see NaN (the coordinator's
// trm_job_loss, which TrmJobLossNotFinite watches), not a missing key (which reads 0).
TEST(MetricsLine, NullUnderAFloatKeyReadsNaN) {
  StepMetrics m = Sample();
  m.lm_loss = std::numeric_limits<double>::quiet_NaN();
  m.grad_norm = std::numeric_limits<double>::infinity();
  const std::string line = m.ToJson().dump();
  EXPECT_NE(line.find("\"lm_loss\":null"), std::string::npos) << line;
  const MetricsLine l = ParseMetricsLine(line, "x");
  ASSERT_EQ(l.values.count("lm_loss"), 1u);
  EXPECT_TRUE(std::isnan(l.values.at("lm_loss")));
  EXPECT_TRUE(std::isnan(l.values.at("grad_norm")));
  EXPECT_TRUE(std::isnan(StepMetrics::FromValues(l.values).lm_loss));
  EXPECT_EQ(l.values.at("tokens_per_s"), 1234.5);

  const MetricsLine n = ParseMetricsLine("{\"step\": 5, \"lm_loss\": null, \"note\": null}", "f");
  EXPECT_EQ(n.step, 5);
  ASSERT_EQ(n.values.count("lm_loss"), 1u);
  EXPECT_TRUE(std::isnan(n.values.at("lm_loss")));
  EXPECT_EQ(n.values.count("note"), 0u);  // not a known float key: left out as before
}

TEST(EvalMetrics, ValuesAreWrittenUnderTheEvalPrefixAndReadBack) {
  EXPECT_EQ(EvalKey(metric_key::kLmLoss), "eval_lm_loss");
  EvalMetrics em;
  em.step = 40;
  em.values = {{"lm_loss", 2.25}, {"count", 16}, {"rows", 16}};
  const json j = em.ToJson();
  EXPECT_EQ(j.dump(), "{\"eval\":true,\"eval_count\":16.0,\"eval_lm_loss\":2.25,\"eval_rows\":16.0,\"step\":40}");
  // As a follower sees the line: an evaluation, the prefixed keys, no total_steps.
  const MetricsLine l = ParseMetricsLine(j.dump(), "x");
  EXPECT_TRUE(l.eval);
  EXPECT_EQ(l.step, 40);
  EXPECT_EQ(l.total_steps, 0);
  EXPECT_EQ(l.values.at("eval_lm_loss"), 2.25);
  EXPECT_EQ(l.values.at("eval_count"), 16);
  EXPECT_EQ(l.values.at("eval_rows"), 16);
  EXPECT_EQ(l.values.count("lm_loss"), 0u);
}

TEST(MetricsLine, MalformedLinesNameWhatIsWrong) {
  std::string e = ErrorOf([] { ParseMetricsLine("{\"step\": 3, \"lm_lo", "run/metrics.jsonl"); });
  EXPECT_NE(e.find("run/metrics.jsonl: not JSON"), std::string::npos) << e;
  e = ErrorOf([] { ParseMetricsLine("[1, 2]", "f"); });
  EXPECT_NE(e.find("f: expected a JSON object"), std::string::npos) << e;
  e = ErrorOf([] { ParseMetricsLine("{\"step\": \"three\"}", "f"); });
  EXPECT_NE(e.find("f: step: expected an integer"), std::string::npos) << e;
  e = ErrorOf([] { ParseMetricsLine("{\"step\": 3, \"total_steps\": null}", "f"); });
  EXPECT_NE(e.find("f: total_steps: expected an integer"), std::string::npos) << e;
  e = ErrorOf([] { ParseMetricsLine("{\"step\": 3, \"eval\": \"yes\"}", "f"); });
  EXPECT_NE(e.find("f: eval: expected true or false"), std::string::npos) << e;
  // The keys a follower needs may be missing.
  const MetricsLine l = ParseMetricsLine("{\"lm_loss\": 1}", "f");
  EXPECT_EQ(l.step, 0);
  EXPECT_FALSE(l.eval);
  EXPECT_EQ(l.values.at("lm_loss"), 1);
}

}  // namespace
}  // namespace trm::worker
