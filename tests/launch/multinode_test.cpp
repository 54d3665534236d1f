// Two nodes simulated on one machine: two trm-launch processes with --nnodes 2, distinct
// --node-rank and the same --rdzv-endpoint on loopback.
#include <gtest/gtest.h>
#include <signal.h>

#include "launch_test_util.h"

namespace trm::launch {
namespace {

using testing::Launch;
using testing::Outcome;
using testing::ReadEnvFile;
using testing::Survivors;
using testing::TempDir;
namespace fs = std::filesystem;

bool Contains(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// Two ranks per node; `nnodes` "2", or a range such as "1:2" (elastic).
std::vector<std::string> NodeArgs(int node_rank, int port, std::vector<std::string> rest,
                                  const std::vector<std::string>& extra = {}, const std::string& nnodes = "2") {
  std::vector<std::string> args{"--nnodes", nnodes, "--nproc-per-node", "2", "--node-rank", std::to_string(node_rank),
                                "--rdzv-endpoint", "127.0.0.1:" + std::to_string(port), "--rdzv-id", "twonodes"};
  args.insert(args.end(), extra.begin(), extra.end());
  args.push_back("trm_launch_test_child");
  args.insert(args.end(), rest.begin(), rest.end());
  return args;
}

TEST(MultiNode, TwoLaunchersRunFourRanksTogether) {
  TempDir tmp;
  const int port = testing::FreePort();
  const std::vector<std::string> child{"--out", tmp.path().string(), "--sleep-ms", "200"};
  // Node 1 first: it waits for node 0's store.
  Launch node1(NodeArgs(1, port, child), tmp, "node1");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  Launch node0(NodeArgs(0, port, child), tmp, "node0");
  const Outcome r0 = node0.Wait();
  const Outcome r1 = node1.Wait();
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  std::string master_port;
  for (int rank = 0; rank < 4; ++rank) {
    const auto env = ReadEnvFile(tmp.path() / ("env_rank" + std::to_string(rank) + "_attempt0.txt"));
    ASSERT_FALSE(env.empty()) << "rank " << rank << " did not run";
    EXPECT_EQ(env.at("RANK"), std::to_string(rank));
    EXPECT_EQ(env.at("LOCAL_RANK"), std::to_string(rank % 2));
    EXPECT_EQ(env.at("GROUP_RANK"), std::to_string(rank / 2));
    EXPECT_EQ(env.at("WORLD_SIZE"), "4");
    EXPECT_EQ(env.at("LOCAL_WORLD_SIZE"), "2");
    EXPECT_EQ(env.at("MASTER_ADDR"), "127.0.0.1");
    EXPECT_EQ(env.at("TORCHELASTIC_RUN_ID"), "twonodes");
    if (rank == 0) master_port = env.at("MASTER_PORT");
    EXPECT_EQ(env.at("MASTER_PORT"), master_port);
  }
  EXPECT_NE(master_port, std::to_string(port));  // the ranks' store is not the rendezvous
}

TEST(MultiNode, FailureOnOneNodeRestartsBoth) {
  TempDir tmp;
  const int port = testing::FreePort();
  // Rank 3 (node 1) fails in the first attempt while node 0's ranks would run for a minute;
  // the second attempt finishes quickly.
  const std::vector<std::string> child{"--out", tmp.path().string(), "--sleep-ms", "60000", "--restart-sleep-ms",
                                       "300", "--fail-rank", "3", "--fail-after-ms", "300", "--fail-first-attempt"};
  Launch node0(NodeArgs(0, port, child, {"--max-restarts", "1"}), tmp, "node0");
  Launch node1(NodeArgs(1, port, child, {"--max-restarts", "1"}), tmp, "node1");
  const Outcome r0 = node0.Wait();
  const Outcome r1 = node1.Wait();
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  EXPECT_TRUE(Contains(r0.err, "attempt 1 failed (rank 3 on node 1 exited with code 3)")) << r0.err;
  EXPECT_TRUE(Contains(r1.err, "attempt 1 failed (rank 3 on node 1 exited with code 3)")) << r1.err;
  std::string master_port;
  for (int rank = 0; rank < 4; ++rank) {
    const auto env = ReadEnvFile(tmp.path() / ("env_rank" + std::to_string(rank) + "_attempt1.txt"));
    ASSERT_FALSE(env.empty()) << "rank " << rank << " was not restarted";
    EXPECT_EQ(env.at("TRM_RESTART_COUNT"), "1");
    if (rank == 0) master_port = env.at("MASTER_PORT");
    EXPECT_EQ(env.at("MASTER_PORT"), master_port);
  }
  EXPECT_EQ(Survivors(tmp.path()), std::vector<pid_t>{});
}

TEST(MultiNode, FailureWithoutRestartsStopsBothNodes) {
  TempDir tmp;
  const int port = testing::FreePort();
  const std::vector<std::string> child{"--out", tmp.path().string(), "--sleep-ms", "60000", "--grandchild",
                                       "--fail-rank", "0", "--fail-after-ms", "300", "--fail-signal", "KILL"};
  Launch node0(NodeArgs(0, port, child), tmp, "node0");
  Launch node1(NodeArgs(1, port, child), tmp, "node1");
  const Outcome r0 = node0.Wait();
  const Outcome r1 = node1.Wait();
  EXPECT_EQ(r0.exit_code, 1) << r0.err;
  EXPECT_EQ(r1.exit_code, 1) << r1.err;
  EXPECT_LT(std::max(r0.seconds, r1.seconds), 30);
  // Both name the same first failure, with its tail.
  for (const Outcome* r : {&r0, &r1}) {
    EXPECT_TRUE(Contains(r->err, "error: rank 0 (local rank 0 on node 0) failed first: killed by SIGKILL")) << r->err;
    EXPECT_TRUE(Contains(r->err, "  | rank 0 fails now (attempt 0)")) << r->err;
  }
  EXPECT_EQ(testing::RecordedPids(tmp.path()).size(), 8u);
  EXPECT_EQ(Survivors(tmp.path()), std::vector<pid_t>{});
}

TEST(MultiNode, SignalledLauncherStopsTheRunWithoutRestart) {
  TempDir tmp;
  const int port = testing::FreePort();
  const std::vector<std::string> child{"--out", tmp.path().string(), "--sleep-ms", "60000"};
  Launch node0(NodeArgs(0, port, child, {"--max-restarts", "3"}), tmp, "node0");
  Launch node1(NodeArgs(1, port, child, {"--max-restarts", "3"}), tmp, "node1");
  ASSERT_TRUE(testing::WaitForFile(tmp.path() / "env_rank3_attempt0.txt"));
  ASSERT_TRUE(testing::WaitForFile(tmp.path() / "env_rank0_attempt0.txt"));
  node1.Signal(SIGTERM);
  const Outcome r1 = node1.Wait();
  const Outcome r0 = node0.Wait();
  EXPECT_EQ(r1.exit_code, 128 + SIGTERM) << r1.err;
  EXPECT_EQ(r0.exit_code, 1) << r0.err;
  EXPECT_TRUE(Contains(r0.err, "error: the launcher of node 1 got SIGTERM")) << r0.err;
  EXPECT_FALSE(fs::exists(tmp.path() / "env_rank0_attempt1.txt"));
  EXPECT_EQ(Survivors(tmp.path()), std::vector<pid_t>{});
}

TEST(MultiNode, LostLauncherIsAFailureNotAHang) {
  TempDir tmp;
  const int port = testing::FreePort();
  const std::vector<std::string> child{"--out", tmp.path().string(), "--sleep-ms", "60000"};
  // A short --rdzv-timeout-s: it is also how long a silent launcher is given.
  Launch node1(NodeArgs(1, port, child, {"--rdzv-timeout-s", "2"}), tmp, "node1");
  Launch node0(NodeArgs(0, port, child, {"--rdzv-timeout-s", "2"}), tmp, "node0");
  ASSERT_TRUE(testing::WaitForFile(tmp.path() / "env_rank3_attempt0.txt"));
  ASSERT_TRUE(testing::WaitForFile(tmp.path() / "env_rank0_attempt0.txt"));
  node1.Signal(SIGKILL);  // its ranks die with it (PR_SET_PDEATHSIG)
  EXPECT_EQ(node1.Wait().exit_code, 128 + SIGKILL);
  const Outcome r0 = node0.Wait();
  EXPECT_EQ(r0.exit_code, 1) << r0.err;
  EXPECT_LT(r0.seconds, 15);
  EXPECT_TRUE(Contains(r0.err, "the launcher of node 1 stopped answering")) << r0.err;
  EXPECT_EQ(Survivors(tmp.path(), std::chrono::milliseconds(3000)), std::vector<pid_t>{});
}

TEST(MultiNode, LostNodeZeroEndsTheOtherNodes) {
  TempDir tmp;
  const int port = testing::FreePort();
  const std::vector<std::string> child{"--out", tmp.path().string(), "--sleep-ms", "60000"};
  Launch node0(NodeArgs(0, port, child), tmp, "node0");
  Launch node1(NodeArgs(1, port, child), tmp, "node1");
  ASSERT_TRUE(testing::WaitForFile(tmp.path() / "env_rank3_attempt0.txt"));
  ASSERT_TRUE(testing::WaitForFile(tmp.path() / "env_rank0_attempt0.txt"));
  node0.Signal(SIGKILL);
  EXPECT_EQ(node0.Wait().exit_code, 128 + SIGKILL);
  const Outcome r1 = node1.Wait();
  EXPECT_EQ(r1.exit_code, 1) << r1.err;
  EXPECT_LT(r1.seconds, 15);
  EXPECT_TRUE(Contains(r1.err, "lost the rendezvous")) << r1.err;
  EXPECT_EQ(Survivors(tmp.path(), std::chrono::milliseconds(3000)), std::vector<pid_t>{});
}

std::vector<std::string> ElasticArgs(int node_rank, int port, std::vector<std::string> rest,
                                     const std::vector<std::string>& extra = {}) {
  return NodeArgs(node_rank, port, std::move(rest), extra, "1:2");
}

TEST(MultiNode, ElasticRunStartsOnTheNodesPresentAfterTheLastCall) {
  TempDir tmp;
  const int port = testing::FreePort();
  Launch node0(ElasticArgs(0, port, {"--out", tmp.path().string(), "--sleep-ms", "200"}, {"--rdzv-last-call-s", "0.3"}),
               tmp, "node0");
  const Outcome r0 = node0.Wait();
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  for (int rank = 0; rank < 2; ++rank) {
    const auto env = ReadEnvFile(tmp.path() / ("env_rank" + std::to_string(rank) + "_attempt0.txt"));
    ASSERT_FALSE(env.empty()) << "rank " << rank << " did not run";
    EXPECT_EQ(env.at("WORLD_SIZE"), "2");
    EXPECT_EQ(env.at("GROUP_WORLD_SIZE"), "1");
    EXPECT_EQ(env.at("GROUP_RANK"), "0");
  }
  EXPECT_FALSE(fs::exists(tmp.path() / "env_rank2_attempt0.txt"));
}

// A node whose launcher dies (machine lost) is declared lost after --rdzv-timeout-s; the run
// restarts on the node left (one restart), renumbered: WORLD_SIZE 2.
TEST(MultiNode, ElasticRunRestartsOnTheNodesLeftWhenOneIsLost) {
  TempDir tmp;
  const int port = testing::FreePort();
  const std::vector<std::string> child{"--out", tmp.path().string(), "--sleep-ms", "60000", "--restart-sleep-ms", "300"};
  const std::vector<std::string> extra{"--rdzv-timeout-s", "2", "--rdzv-last-call-s", "30", "--max-restarts", "1"};
  // Node 1 first: it polls for node 0's store, so it joins at once when node 0 serves.
  Launch node1(ElasticArgs(1, port, child, extra), tmp, "node1");
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  Launch node0(ElasticArgs(0, port, child, extra), tmp, "node0");
  ASSERT_TRUE(testing::WaitForFile(tmp.path() / "env_rank3_attempt0.txt"));
  ASSERT_TRUE(testing::WaitForFile(tmp.path() / "env_rank0_attempt0.txt"));
  EXPECT_EQ(ReadEnvFile(tmp.path() / "env_rank0_attempt0.txt").at("WORLD_SIZE"), "4");  // both, without the last call
  node1.Signal(SIGKILL);  // its ranks die with it (PR_SET_PDEATHSIG)
  EXPECT_EQ(node1.Wait().exit_code, 128 + SIGKILL);
  const Outcome r0 = node0.Wait();
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  EXPECT_TRUE(Contains(r0.err, "the launcher of node 1 stopped answering")) << r0.err;
  EXPECT_TRUE(Contains(r0.err, "the run goes on with 1 node")) << r0.err;
  EXPECT_TRUE(Contains(r0.err, "(restart 1 of 1)")) << r0.err;
  const auto env = ReadEnvFile(tmp.path() / "env_rank1_attempt1.txt");
  ASSERT_FALSE(env.empty());
  EXPECT_EQ(env.at("WORLD_SIZE"), "2");
  EXPECT_EQ(env.at("GROUP_WORLD_SIZE"), "1");
  EXPECT_FALSE(fs::exists(tmp.path() / "env_rank2_attempt1.txt"));
  EXPECT_EQ(Survivors(tmp.path(), std::chrono::milliseconds(3000)), std::vector<pid_t>{});
}

// A node that joins a run going on below MAX nodes: every rank is restarted with it (not one of
// --max-restarts, here 0), and the next attempt has all four ranks.
TEST(MultiNode, ElasticRunGrowsWhenANodeJoinsWithoutUsingARestart) {
  TempDir tmp;
  const int port = testing::FreePort();
  const std::vector<std::string> child{"--out", tmp.path().string(), "--sleep-ms", "60000", "--restart-sleep-ms", "300"};
  const std::vector<std::string> extra{"--rdzv-last-call-s", "0.2", "--grace-period-s", "2"};
  Launch node0(ElasticArgs(0, port, child, extra), tmp, "node0");
  ASSERT_TRUE(testing::WaitForFile(tmp.path() / "env_rank1_attempt0.txt"));
  EXPECT_EQ(ReadEnvFile(tmp.path() / "env_rank1_attempt0.txt").at("WORLD_SIZE"), "2");
  Launch node1(ElasticArgs(1, port, child, extra), tmp, "node1");
  const Outcome r0 = node0.Wait(), r1 = node1.Wait();
  ASSERT_EQ(r0.exit_code, 0) << r0.err;
  ASSERT_EQ(r1.exit_code, 0) << r1.err;
  EXPECT_TRUE(Contains(r0.err, "node 1 joined the run (1 of 1..2 nodes were running)")) << r0.err;
  EXPECT_TRUE(Contains(r0.err, "not counted as a restart")) << r0.err;
  for (int rank = 0; rank < 4; ++rank) {
    const auto env = ReadEnvFile(tmp.path() / ("env_rank" + std::to_string(rank) + "_attempt1.txt"));
    ASSERT_FALSE(env.empty()) << "rank " << rank << " did not run in the grown attempt";
    EXPECT_EQ(env.at("WORLD_SIZE"), "4");
    EXPECT_EQ(env.at("GROUP_RANK"), std::to_string(rank / 2));
    EXPECT_EQ(env.at("TRM_RESTART_COUNT"), "1");  // node 1 joins a run already going: it resumes too
  }
  EXPECT_FALSE(fs::exists(tmp.path() / "env_rank2_attempt0.txt"));
  EXPECT_EQ(Survivors(tmp.path(), std::chrono::milliseconds(3000)), std::vector<pid_t>{});
}

TEST(MultiNode, InconsistentLaunchersAreRejected) {
  TempDir tmp;
  const int port = testing::FreePort();
  const std::vector<std::string> child{"--sleep-ms", "60000"};
  Launch node0(NodeArgs(0, port, child), tmp, "node0");
  // Another --nproc-per-node on node 1 (the later flag wins).
  const Outcome r1 = Launch(NodeArgs(1, port, child, {"--nproc-per-node", "3"}), tmp, "node1").Wait();
  EXPECT_EQ(r1.exit_code, 2) << r1.err;
  EXPECT_TRUE(Contains(r1.err, "error: --nproc-per-node: this launcher has 3, node 0's at 127.0.0.1:" +
                                   std::to_string(port) + " has 2"))
      << r1.err;
  node0.Signal(SIGTERM);  // still waiting for a node 1 (covered by MissingNodesTimeOut)
  EXPECT_EQ(node0.Wait().exit_code, 128 + SIGTERM);
}

TEST(MultiNode, DuplicateNodeRankIsRejected) {
  TempDir tmp;
  const int port = testing::FreePort();
  const std::vector<std::string> child{"--out", tmp.path().string(), "--sleep-ms", "60000"};
  Launch node0(NodeArgs(0, port, child), tmp, "node0");
  Launch node1(NodeArgs(1, port, child), tmp, "node1");
  ASSERT_TRUE(testing::WaitForFile(tmp.path() / "env_rank3_attempt0.txt"));
  const Outcome dup = Launch(NodeArgs(1, port, child), tmp, "dup").Wait();
  EXPECT_EQ(dup.exit_code, 2) << dup.err;
  EXPECT_TRUE(Contains(dup.err, "--node-rank 1: another launcher already joined run 'twonodes'")) << dup.err;
  // The run itself is untouched: stop it.
  node0.Signal(SIGTERM);
  EXPECT_EQ(node0.Wait().exit_code, 128 + SIGTERM);
  EXPECT_EQ(node1.Wait().exit_code, 1);
  EXPECT_EQ(Survivors(tmp.path()), std::vector<pid_t>{});
}

TEST(MultiNode, MissingNodesTimeOut) {
  TempDir tmp;
  Launch lonely1(NodeArgs(1, testing::FreePort(), {}, {"--rdzv-timeout-s", "1"}), tmp, "node1");
  Launch lonely0(NodeArgs(0, testing::FreePort(), {}, {"--rdzv-timeout-s", "1"}), tmp, "node0");
  const Outcome r1 = lonely1.Wait();
  const Outcome r0 = lonely0.Wait();
  EXPECT_EQ(r1.exit_code, 1) << r1.err;
  EXPECT_LT(r1.seconds, 10);
  EXPECT_TRUE(Contains(r1.err, "the node-rank-0 launcher did not come up within 1 s (--rdzv-timeout-s)")) << r1.err;
  EXPECT_EQ(r0.exit_code, 1) << r0.err;
  EXPECT_LT(r0.seconds, 10);
  EXPECT_TRUE(Contains(r0.err, "only 1 of 2 nodes joined within 1 s (--rdzv-timeout-s)")) << r0.err;
}

TEST(MultiNode, TakenEndpointIsAClearError) {
  TempDir tmp;
  const int port = testing::FreePort();
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_ANY);
  a.sin_port = htons(static_cast<uint16_t>(port));
  ASSERT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(::listen(fd, 1), 0);
  const Outcome r = Launch(NodeArgs(0, port, {}), tmp, "node0").Wait();
  ::close(fd);
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_TRUE(Contains(r.err, "error: rendezvous store 127.0.0.1:" + std::to_string(port) + ": cannot serve")) << r.err;
}

}  // namespace
}  // namespace trm::launch
