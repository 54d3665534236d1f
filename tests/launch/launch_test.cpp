// trm-launch on one node, with real processes: environment, failures, restarts, escalation,
// logs, signals and bad input.
#include <gtest/gtest.h>
#include <signal.h>

#include "launch_test_util.h"

namespace trm::launch {
namespace {

using testing::Launch;
using testing::Outcome;
using testing::ReadEnvFile;
using testing::RunLaunch;
using testing::Survivors;
using testing::TempDir;
namespace fs = std::filesystem;

bool Contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

TEST(Launch, TwoRanksGetTorchrunsEnvironment) {
  TempDir tmp;
  const Outcome r = RunLaunch({"--standalone", "--nproc-per-node", "2", "--rdzv-id", "job1", "trm_launch_test_child",
                               "--out", tmp.path().string(), "--lines", "1"},
                              tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto e0 = ReadEnvFile(tmp.path() / "env_rank0_attempt0.txt");
  const auto e1 = ReadEnvFile(tmp.path() / "env_rank1_attempt0.txt");
  for (const auto* e : {&e0, &e1}) {
    EXPECT_EQ(e->at("WORLD_SIZE"), "2");
    EXPECT_EQ(e->at("LOCAL_WORLD_SIZE"), "2");
    EXPECT_EQ(e->at("GROUP_RANK"), "0");
    EXPECT_EQ(e->at("GROUP_WORLD_SIZE"), "1");
    EXPECT_EQ(e->at("MASTER_ADDR"), "127.0.0.1");
    EXPECT_EQ(e->at("TRM_RESTART_COUNT"), "0");
    EXPECT_EQ(e->at("TORCHELASTIC_RUN_ID"), "job1");
    EXPECT_EQ(e->at("OMP_NUM_THREADS"), "1");  // unset in the launcher's environment: torchrun's default
  }
  EXPECT_EQ(e0.at("RANK"), "0");
  EXPECT_EQ(e0.at("LOCAL_RANK"), "0");
  EXPECT_EQ(e1.at("RANK"), "1");
  EXPECT_EQ(e1.at("LOCAL_RANK"), "1");
  EXPECT_EQ(e0.at("MASTER_PORT"), e1.at("MASTER_PORT"));
  const int port = std::stoi(e0.at("MASTER_PORT"));
  EXPECT_GT(port, 0);
  EXPECT_LT(port, 65536);
  // Without --log-dir the ranks' output reaches the console as it is.
  EXPECT_TRUE(Contains(r.out, "line 0 of rank 0\n")) << r.out;
  EXPECT_TRUE(Contains(r.out, "line 0 of rank 1\n")) << r.out;
  EXPECT_TRUE(Contains(r.err, "OMP_NUM_THREADS=1")) << r.err;
}

TEST(Launch, InheritedOmpNumThreadsAndRankVariablesAreHandled) {
  TempDir tmp;
  ::setenv("OMP_NUM_THREADS", "3", 1);
  ::setenv("RANK", "77", 1);  // a stale value from an outer launcher must not leak through
  Launch launch({"--nproc-per-node", "1", "trm_launch_test_child", "--out", tmp.path().string()}, tmp, "launch", {});
  const Outcome r = launch.Wait();
  ::unsetenv("OMP_NUM_THREADS");
  ::unsetenv("RANK");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto e0 = ReadEnvFile(tmp.path() / "env_rank0_attempt0.txt");
  EXPECT_EQ(e0.at("OMP_NUM_THREADS"), "3");
  EXPECT_EQ(e0.at("RANK"), "0");
  EXPECT_FALSE(Contains(r.err, "OMP_NUM_THREADS")) << r.err;
}

TEST(Launch, FailingRankStopsTheOthersAndIsReported) {
  TempDir tmp;
  // Rank 0 (and a helper process it forked) would run for a minute; rank 1 fails.
  const Outcome r = RunLaunch({"--nproc-per-node", "2", "trm_launch_test_child", "--out", tmp.path().string(),
                               "--lines", "60", "--sleep-ms", "60000", "--grandchild", "--fail-rank", "1",
                               "--fail-after-ms", "200", "--fail-exit", "7"},
                              tmp);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_LT(r.seconds, 10);
  EXPECT_TRUE(Contains(r.err, "error: rank 1 (local rank 1 on node 0) failed first: exited with code 7")) << r.err;
  EXPECT_TRUE(Contains(r.err, "no restart left, --max-restarts 0")) << r.err;
  // The tail: the last 40 lines, the failing rank's own stderr included.
  EXPECT_TRUE(Contains(r.err, "last 40 line(s) of rank 1's output:")) << r.err;
  EXPECT_TRUE(Contains(r.err, "  | line 59 of rank 1\n")) << r.err;
  EXPECT_TRUE(Contains(r.err, "  | line 21 of rank 1\n")) << r.err;
  EXPECT_FALSE(Contains(r.err, "  | line 20 of rank 1\n")) << r.err;
  EXPECT_TRUE(Contains(r.err, "  | rank 1 fails now (attempt 0)")) << r.err;
  EXPECT_EQ(testing::RecordedPids(tmp.path()).size(), 4u);  // 2 ranks + 2 helpers
  EXPECT_EQ(Survivors(tmp.path()), std::vector<pid_t>{});
}

TEST(Launch, SigkilledRankWithoutRestartsEndsTheRunWithin30s) {
  TempDir tmp;
  const Outcome r = RunLaunch({"--nproc-per-node", "2", "--max-restarts", "0", "trm_launch_test_child", "--out",
                               tmp.path().string(), "--sleep-ms", "60000", "--grandchild", "--fail-rank", "1",
                               "--fail-after-ms", "300", "--fail-signal", "KILL"},
                              tmp);
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_LT(r.seconds, 30);
  EXPECT_TRUE(Contains(r.err, "rank 1 (local rank 1 on node 0) failed first: killed by SIGKILL")) << r.err;
  EXPECT_EQ(Survivors(tmp.path()), std::vector<pid_t>{});
}

TEST(Launch, SegfaultIsNamed) {
  TempDir tmp;
  const Outcome r = RunLaunch({"--nproc-per-node", "1", "trm_launch_test_child", "--fail-rank", "0", "--fail-signal",
                               "SEGV"},
                              tmp);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.err, "rank 0 (local rank 0 on node 0) failed first: killed by SIGSEGV")) << r.err;
}

TEST(Launch, RestartRunsTheWholeGroupAgainWithTheRestartCount) {
  TempDir tmp;
  // Rank 0 would run for a minute in the first attempt: the restart must have stopped it.
  const Outcome r = RunLaunch({"--nproc-per-node", "2", "--max-restarts", "1", "trm_launch_test_child", "--out",
                               tmp.path().string(), "--sleep-ms", "60000", "--restart-sleep-ms", "200", "--fail-rank",
                               "1", "--fail-after-ms", "100", "--fail-first-attempt"},
                              tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_LT(r.seconds, 20);
  EXPECT_TRUE(Contains(r.err, "attempt 1 failed (rank 1 on node 0 exited with code 3); restarting every rank "
                              "(restart 1 of 1)"))
      << r.err;
  for (int rank : {0, 1}) {
    const auto first = ReadEnvFile(tmp.path() / ("env_rank" + std::to_string(rank) + "_attempt0.txt"));
    const auto second = ReadEnvFile(tmp.path() / ("env_rank" + std::to_string(rank) + "_attempt1.txt"));
    EXPECT_EQ(first.at("TRM_RESTART_COUNT"), "0");
    EXPECT_EQ(second.at("TRM_RESTART_COUNT"), "1");
    EXPECT_EQ(second.at("RANK"), std::to_string(rank));
  }
  EXPECT_FALSE(fs::exists(tmp.path() / "env_rank0_attempt2.txt"));
  EXPECT_EQ(Survivors(tmp.path()), std::vector<pid_t>{});
}

TEST(Launch, RestartsRunOutThenTheLauncherFails) {
  TempDir tmp;
  const Outcome r = RunLaunch({"--nproc-per-node", "2", "--max-restarts", "2", "trm_launch_test_child", "--out",
                               tmp.path().string(), "--sleep-ms", "60000", "--fail-rank", "0", "--fail-after-ms", "100"},
                              tmp);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_LT(r.seconds, 20);
  EXPECT_TRUE(Contains(r.err, "rank 0 (local rank 0 on node 0) failed first: exited with code 3 (attempt 3 of 3: no "
                              "restart left, --max-restarts 2)"))
      << r.err;
  EXPECT_TRUE(fs::exists(tmp.path() / "env_rank1_attempt2.txt"));
  EXPECT_FALSE(fs::exists(tmp.path() / "env_rank1_attempt3.txt"));
  EXPECT_EQ(Survivors(tmp.path()), std::vector<pid_t>{});
}

TEST(Launch, RankIgnoringSigtermIsKilledAfterTheGracePeriod) {
  TempDir tmp;
  const Outcome r = RunLaunch({"--nproc-per-node", "2", "--grace-period-s", "1", "trm_launch_test_child", "--out",
                               tmp.path().string(), "--sleep-ms", "60000", "--ignore-sigterm", "--fail-rank", "1",
                               "--fail-after-ms", "200"},
                              tmp);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_GT(r.seconds, 1.0);  // waited for the grace period ...
  EXPECT_LT(r.seconds, 10);   // ... not for the rank
  EXPECT_TRUE(Contains(r.err, "rank 0 (local rank 0, node 0) did not exit within 1000 ms of SIGTERM: SIGKILL")) << r.err;
  EXPECT_EQ(Survivors(tmp.path()), std::vector<pid_t>{});
}

TEST(Launch, LogDirHoldsOneLogPerRankAndAttempt) {
  TempDir tmp;
  const std::string logs = tmp / "logs";
  const Outcome r = RunLaunch({"--nproc-per-node", "2", "--max-restarts", "1", "--log-dir", logs,
                               "trm_launch_test_child", "--lines", "2", "--stderr", "to stderr", "--fail-rank", "1",
                               // Late enough that rank 0 has written its lines before the group is stopped.
                               "--fail-after-ms", "500", "--fail-first-attempt"},
                              tmp);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  for (int attempt : {0, 1}) {
    for (int rank : {0, 1}) {
      const fs::path log = fs::path(logs) / ("attempt_" + std::to_string(attempt)) / ("rank_" + std::to_string(rank) + ".log");
      const std::string text = testing::ReadText(log);
      EXPECT_TRUE(Contains(text, "line 1 of rank " + std::to_string(rank) + "\n")) << log;
      EXPECT_TRUE(Contains(text, "to stderr\n")) << log;
    }
  }
  EXPECT_TRUE(Contains(testing::ReadText(fs::path(logs) / "attempt_0/rank_1.log"), "rank 1 fails now (attempt 0)"));
  // Without --tee nothing of the ranks reaches the console.
  EXPECT_FALSE(Contains(r.out, "line 1 of rank")) << r.out;
  EXPECT_FALSE(Contains(r.err, "to stderr")) << r.err;
}

TEST(Launch, TeePrefixesConsoleLinesAndFailureNamesTheLog) {
  TempDir tmp;
  const std::string logs = tmp / "logs";
  const Outcome r = RunLaunch({"--nproc-per-node", "2", "--log-dir", logs, "--tee", "trm_launch_test_child", "--lines",
                               "2", "--stderr", "to stderr", "--fail-rank", "0", "--fail-after-ms", "100"},
                              tmp);
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_TRUE(Contains(r.out, "[rank 0] line 1 of rank 0\n")) << r.out;
  EXPECT_TRUE(Contains(r.out, "[rank 1] line 0 of rank 1\n")) << r.out;
  EXPECT_TRUE(Contains(r.err, "[rank 1] to stderr\n")) << r.err;
  EXPECT_TRUE(Contains(r.err, "log: " + logs + "/attempt_0/rank_0.log")) << r.err;
}

TEST(Launch, SigtermToTheLauncherStopsEveryRank) {
  TempDir tmp;
  Launch launch({"--nproc-per-node", "2", "trm_launch_test_child", "--out", tmp.path().string(), "--sleep-ms", "60000",
                 "--grandchild"},
                tmp);
  ASSERT_TRUE(testing::WaitForFile(tmp.path() / "env_rank1_attempt0.txt"));
  launch.Signal(SIGTERM);
  const Outcome r = launch.Wait(std::chrono::milliseconds(15000));
  EXPECT_EQ(r.exit_code, 128 + SIGTERM) << r.err;
  EXPECT_TRUE(Contains(r.err, "the launcher of node 0 got SIGTERM")) << r.err;
  EXPECT_EQ(Survivors(tmp.path()), std::vector<pid_t>{});
}

TEST(Launch, SecondSigintSkipsTheGracePeriod) {
  TempDir tmp;
  Launch launch({"--nproc-per-node", "1", "--grace-period-s", "30", "trm_launch_test_child", "--out",
                 tmp.path().string(), "--sleep-ms", "60000", "--ignore-sigterm"},
                tmp);
  ASSERT_TRUE(testing::WaitForFile(tmp.path() / "env_rank0_attempt0.txt"));
  launch.Signal(SIGINT);
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  launch.Signal(SIGINT);
  const Outcome r = launch.Wait(std::chrono::milliseconds(15000));
  EXPECT_EQ(r.exit_code, 128 + SIGINT) << r.err;
  EXPECT_LT(r.seconds, 10);
  EXPECT_EQ(Survivors(tmp.path()), std::vector<pid_t>{});
}

TEST(Launch, SigkilledLauncherTakesItsRanksWithIt) {
  TempDir tmp;
  Launch launch({"--nproc-per-node", "2", "trm_launch_test_child", "--out", tmp.path().string(), "--sleep-ms", "60000"},
                tmp);
  ASSERT_TRUE(testing::WaitForFile(tmp.path() / "env_rank1_attempt0.txt"));
  launch.Signal(SIGKILL);
  EXPECT_EQ(launch.Wait().exit_code, 128 + SIGKILL);
  EXPECT_EQ(Survivors(tmp.path(), std::chrono::milliseconds(3000)), std::vector<pid_t>{});
}

TEST(Launch, ProgramIsFoundNextToTheLauncherOnPathOrByPath) {
  TempDir tmp;
  const Outcome by_path = RunLaunch({testing::BinDir() + "/trm_launch_test_child"}, tmp);
  EXPECT_EQ(by_path.exit_code, 0) << by_path.err;
  const Outcome on_path = RunLaunch({"sh", "-c", "test \"$RANK\" = 0 && echo from-sh"}, tmp);
  EXPECT_EQ(on_path.exit_code, 0) << on_path.err;
  EXPECT_EQ(on_path.out, "from-sh\n");
  const Outcome missing = RunLaunch({"no-such-program-xyz"}, tmp);
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_TRUE(Contains(missing.err, "error: PROGRAM 'no-such-program-xyz': not found")) << missing.err;
}

TEST(Launch, BadFlagsExitWithStatus2NamingTheFlag) {
  // Every message is checked in options_test.cpp; here: how the binary reports them.
  TempDir tmp;
  const std::pair<std::vector<std::string>, std::string> cases[] = {
      {{"--bogus", "trm_launch_test_child"}, "error: unknown option '--bogus'"},
      {{"--nproc-per-node", "2"}, "error: PROGRAM: missing"},
      {{"--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "127.0.0.1:1", "x"}, "error: --node-rank:"},
  };
  for (const auto& [args, message] : cases) {
    const Outcome r = RunLaunch(args, tmp);
    EXPECT_EQ(r.exit_code, 2) << message;
    EXPECT_TRUE(Contains(r.err, message)) << r.err;
  }
  const Outcome help = RunLaunch({"--help"}, tmp);
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_TRUE(Contains(help.out, "usage: trm-launch")) << help.out;
}

}  // namespace
}  // namespace trm::launch
