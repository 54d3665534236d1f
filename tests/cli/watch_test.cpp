// trmctl watch / logs against a fake coordinator whose event stream breaks mid-way: every event
// is shown exactly once, in order, and the exit status follows the job's final state.
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <memory>
#include <sstream>
#include <thread>

#include "fake_coordinator.h"
#include "trm/cli/commands.h"

namespace trm::cli {
namespace {

v1::JobEvent State(uint64_t seq, v1::JobState s, int attempt, const std::string& msg = "") {
  v1::JobEvent e;
  e.set_seq(seq);
  e.set_time_unix_ms(1700000000000 + static_cast<int64_t>(seq) * 1000);
  e.mutable_state()->set_state(s);
  e.mutable_state()->set_attempt(attempt);
  e.mutable_state()->set_message(msg);
  return e;
}

// queued, running, 10 steps of metrics (a log line among them), a checkpoint, then `last`.
std::vector<v1::JobEvent> JobHistory(v1::JobState last = v1::JOB_SUCCEEDED, const std::string& last_msg = "") {
  std::vector<v1::JobEvent> ev = {State(1, v1::JOB_QUEUED, 0), State(2, v1::JOB_RUNNING, 1)};
  for (int step = 1; step <= 10; ++step) {
    v1::JobEvent e;
    e.set_seq(ev.size() + 1);
    e.set_time_unix_ms(1700000000000 + static_cast<int64_t>(e.seq()) * 1000);
    if (step == 5) {
      e.mutable_log()->set_rank(1);
      e.mutable_log()->set_text("hello from rank 1\n");
    } else {
      auto* m = e.mutable_metrics();
      m->set_step(step);
      m->set_total_steps(10);
      (*m->mutable_values())["lm_loss"] = 3.0 - 0.1 * step;
      (*m->mutable_values())["tokens_per_s"] = 1234;
    }
    ev.push_back(e);
  }
  v1::JobEvent cp;
  cp.set_seq(ev.size() + 1);
  cp.mutable_checkpoint()->set_name("step_10");
  cp.mutable_checkpoint()->set_step(10);
  cp.mutable_checkpoint()->set_size_bytes(4096);
  ev.push_back(cp);
  ev.push_back(State(ev.size() + 1, last, 1, last_msg));
  return ev;
}

std::vector<uint64_t> SeqsWithoutLogs(const std::vector<v1::JobEvent>& events) {
  std::vector<uint64_t> seqs;
  for (const auto& e : events)
    if (!e.has_log()) seqs.push_back(e.seq());
  return seqs;
}

class CliWatch : public ::testing::Test {
 protected:
  void SetUp() override { server_.jobs.events = JobHistory(); }
  int RunCli(std::vector<std::string> args) {
    args.push_back("--coordinator");
    args.push_back(server_.address());
    return cli::Run(args, server_.Connect(), Io{&out_, &err_, false});
  }
  Stubs stubs() { return server_.Connect()(server_.address()); }

  testing::FakeServer server_;
  std::ostringstream out_, err_;
};

TEST_F(CliWatch, ReconnectsAfterBrokenStreamsWithoutDuplicatesOrGaps) {
  server_.jobs.watch_break_after = 5;  // the first two streams die after 5 events each
  server_.jobs.watch_breaks = 2;
  ASSERT_EQ(RunCli({"watch", "job-1", "--events"}), 0);

  std::vector<uint64_t> seen;
  std::istringstream lines(out_.str());
  for (std::string line; std::getline(lines, line);) {
    const nlohmann::json j = nlohmann::json::parse(line);
    ASSERT_TRUE(j.at("seq").is_number()) << line;
    seen.push_back(j.at("seq").get<uint64_t>());
  }
  EXPECT_EQ(seen, SeqsWithoutLogs(server_.jobs.events));
  // Each reconnect asked for what came after the last event shown (seq 7 is a log: skipped).
  ASSERT_EQ(server_.jobs.watch_requests.size(), 3u);
  EXPECT_EQ(server_.jobs.watch_requests[0].after_seq(), 0u);
  EXPECT_EQ(server_.jobs.watch_requests[1].after_seq(), 5u);
  EXPECT_EQ(server_.jobs.watch_requests[2].after_seq(), 11u);
  for (const auto& r : server_.jobs.watch_requests) {
    EXPECT_TRUE(r.follow());
    EXPECT_FALSE(r.include_logs());
  }
  EXPECT_NE(out_.str().find("\"state\":\"JOB_SUCCEEDED\""), std::string::npos);
}

// The coordinator process goes away mid-stream and comes back on the same address.
TEST(CliWatchRestart, SurvivesACoordinatorRestart) {
  auto first = std::make_unique<testing::FakeServer>();
  const int port = first->port();
  first->jobs.events = JobHistory();
  first->jobs.watch_hang_after = 6;
  std::ostringstream out, err;
  int code = -1;
  std::string error;
  std::thread watcher([&] {
    try {
      code = cli::Run({"watch", "job-1", "--events", "--coordinator", first->address()}, first->Connect(),
                      Io{&out, &err, false});
    } catch (const std::exception& e) {
      error = e.what();
    }
  });
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (first->jobs.watch_sent < 6 && std::chrono::steady_clock::now() < give_up)
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  ASSERT_EQ(first->jobs.watch_sent, 6) << "the watcher never got its first events";
  first.reset();
  testing::FakeServer second(port);
  second.jobs.events = JobHistory();
  watcher.join();
  ASSERT_EQ(code, 0) << error;
  std::vector<uint64_t> seen;
  std::istringstream lines(out.str());
  for (std::string line; std::getline(lines, line);) seen.push_back(nlohmann::json::parse(line).at("seq"));
  EXPECT_EQ(seen, SeqsWithoutLogs(second.jobs.events));
  ASSERT_GE(second.jobs.watch_requests.size(), 1u);
  EXPECT_EQ(second.jobs.watch_requests.back().after_seq(), 6u);
}

TEST_F(CliWatch, IgnoresEventsResentAfterAReconnect) {
  server_.jobs.watch_break_after = 4;
  server_.jobs.watch_resend_seen = true;
  ASSERT_EQ(RunCli({"watch", "job-1", "--events", "--logs"}), 0);
  std::vector<uint64_t> seen;
  std::istringstream lines(out_.str());
  for (std::string line; std::getline(lines, line);) seen.push_back(nlohmann::json::parse(line).at("seq"));
  std::vector<uint64_t> all;
  for (const auto& e : server_.jobs.events) all.push_back(e.seq());
  EXPECT_EQ(seen, all);
}

TEST_F(CliWatch, FailedJobExitsOneWithItsMessage) {
  server_.jobs.events = JobHistory(v1::JOB_FAILED, "rank 1 exited with code 3");
  server_.jobs.watch_break_after = 3;
  EXPECT_EQ(RunCli({"watch", "job-1"}), 1);
  EXPECT_NE(err_.str().find("job job-1 failed: rank 1 exited with code 3"), std::string::npos) << err_.str();
}

TEST_F(CliWatch, HumanOutputThrottlesProgressOffATerminal) {
  WatchOptions o;
  o.job_id = "job-1";
  o.progress_interval = std::chrono::hours(1);  // so only the first and the held-back last print
  o.follow.include_logs = true;
  ASSERT_EQ(Watch(stubs().jobs.get(), o, Io{&out_, &err_, false}), 0);
  const std::string text = out_.str();
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) lines.push_back(l);
  ASSERT_EQ(lines.size(), 7u) << text;
  EXPECT_NE(lines[0].find("queued"), std::string::npos);
  EXPECT_NE(lines[1].find("running (attempt 1)"), std::string::npos);
  EXPECT_EQ(lines[2], "step 1/10 (10%)  loss 2.9  1234 tok/s");
  EXPECT_EQ(lines[3], "[rank 1] hello from rank 1");
  // The newest progress line comes out before the next notable line, with an ETA from the rate.
  EXPECT_EQ(lines[4], "step 10/10 (100%)  loss 2  1234 tok/s");
  EXPECT_NE(lines[5].find("checkpoint step_10 (4.0 KiB)"), std::string::npos) << lines[5];
  EXPECT_NE(lines[6].find("succeeded"), std::string::npos);
  EXPECT_EQ(text.find('\r'), std::string::npos);
}

TEST_F(CliWatch, ProgressIsRedrawnOnATerminal) {
  WatchOptions o;
  o.job_id = "job-1";
  ASSERT_EQ(Watch(stubs().jobs.get(), o, Io{&out_, &err_, true}), 0);
  const std::string text = out_.str();
  EXPECT_NE(text.find("\rstep 4/10 (40%)  loss 2.6  1234 tok/s  ETA 6s\033[K"), std::string::npos) << text;
  EXPECT_EQ(text.find("[rank 1]"), std::string::npos);  // no --logs
}

TEST_F(CliWatch, GivesUpAfterTheReconnectWindow) {
  server_.jobs.watch_break_after = 0;
  server_.jobs.watch_breaks = 1000000;
  WatchOptions o;
  o.job_id = "job-1";
  o.follow.reconnect = std::chrono::seconds(1);
  o.follow.initial_backoff = std::chrono::milliseconds(50);
  o.follow.max_backoff = std::chrono::milliseconds(200);
  const auto start = std::chrono::steady_clock::now();
  try {
    Watch(stubs().jobs.get(), o, Io{&out_, &err_, false});
    FAIL() << "expected an error";
  } catch (const RpcError& e) {
    EXPECT_EQ(e.code(), Code::kUnavailable);
    EXPECT_NE(std::string(e.what()).find("coordinator restarting"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(5));
  EXPECT_GE(server_.jobs.watch_requests.size(), 3u);
}

TEST_F(CliWatch, UnknownJobIsNotRetried) {
  try {
    RunCli({"watch", "job-9"});
    FAIL() << "expected an error";
  } catch (const RpcError& e) {
    EXPECT_EQ(e.code(), Code::kNotFound);
  }
  EXPECT_EQ(server_.jobs.watch_requests.size(), 1u);
}

TEST_F(CliWatch, LogsPrintsOnlyLogLines) {
  server_.jobs.watch_break_after = 6;
  ASSERT_EQ(RunCli({"logs", "job-1"}), 0);
  EXPECT_EQ(out_.str(), "[rank 1] hello from rank 1\n");
  ASSERT_EQ(server_.jobs.watch_requests.size(), 2u);
  EXPECT_FALSE(server_.jobs.watch_requests[0].follow());
  EXPECT_TRUE(server_.jobs.watch_requests[0].include_logs());

  out_.str("");
  ASSERT_EQ(RunCli({"logs", "-f", "job-1"}), 0);
  EXPECT_EQ(out_.str(), "[rank 1] hello from rank 1\n");
  EXPECT_TRUE(server_.jobs.watch_requests.back().follow());
}

// Off a terminal, one progress line per multiple of the job's log_interval (from its resolved
// config), however fast the events come; the newest held-back one is printed before the
// checkpoint line, so the last step is never lost.
TEST_F(CliWatch, OffATerminalPrintsALineEveryLogInterval) {
  server_.jobs.resolved_config_json = R"({"log_interval": 4, "max_steps": 10})";
  ASSERT_EQ(RunCli({"watch", "job-1"}), 0) << err_.str();
  std::vector<std::string> steps;
  std::istringstream in(out_.str());
  for (std::string line; std::getline(in, line);) {
    const size_t at = line.find("step ");
    if (at != std::string::npos && line.find("checkpoint") == std::string::npos)
      steps.push_back(line.substr(at, line.find(' ', at + 5) - at));
  }
  EXPECT_EQ(steps, (std::vector<std::string>{"step 4/10", "step 8/10", "step 10/10"})) << out_.str();
  EXPECT_NE(out_.str().find("checkpoint step_10"), std::string::npos) << out_.str();
}

}  // namespace
}  // namespace trm::cli
