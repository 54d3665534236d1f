// The launcher's internal pieces, without running trm-launch.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>


#include "failure.h"
#include "kv_store.h"
#include "launch_test_util.h"
#include "net.h"
#include "program_path.h"
#include "rank_output.h"
#include "trm/common/error.h"

namespace trm::launch {
namespace {

using testing::TempDir;

TEST(ResolveProgram, LooksNextToTheLauncherThenOnPath) {
  const std::string self = testing::BinDir() + "/trm-launch";
  EXPECT_EQ(ResolveProgram("trm_launch_test_child", self), testing::BinDir() + "/trm_launch_test_child");
  const std::string sh = ResolveProgram("sh", self);
  EXPECT_EQ(sh.substr(sh.size() - 3), "/sh");
  EXPECT_EQ(ResolveProgram("/bin/sh", self), "/bin/sh");
  try {
    ResolveProgram("no-such-program-xyz", self);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kNotFound);
    EXPECT_NE(std::string(e.what()).find("PROGRAM 'no-such-program-xyz': not found in " + testing::BinDir()),
              std::string::npos)
        << e.what();
  }
  TempDir tmp;
  testing::fs::create_directories(tmp.path() / "dir");
  EXPECT_THROW(ResolveProgram(tmp / "dir", self), Error);          // a directory
  EXPECT_THROW(ResolveProgram(tmp / "missing", self), Error);      // no such file
}

TEST(Failure, DescribesExitsAndSignals) {
  Failure f;
  DescribeStatus(3 << 8, f);
  EXPECT_EQ(f.what, "exited with code 3");
  EXPECT_EQ(f.exit_code, 3);
  Failure k;
  DescribeStatus(SIGKILL, k);
  EXPECT_EQ(k.what, "killed by SIGKILL");
  EXPECT_EQ(k.signal, SIGKILL);
  Failure s;
  DescribeStatus(SIGSEGV | 0x80, s);
  EXPECT_EQ(s.what, "killed by SIGSEGV (core dumped)");
}

TEST(Failure, RoundTripsThroughJson) {
  Failure f;
  f.generation = 2;
  f.node_rank = 1;
  f.global_rank = 5;
  f.local_rank = 1;
  f.exit_code = 7;
  f.what = "exited with code 7";
  f.log_path = "/l/rank_5.log";
  f.log_tail = {"a", "b \xff"};  // not UTF-8: replaced, not fatal
  f.abort = true;
  const Failure g = FailureFromJson(FailureToJson(f));
  EXPECT_EQ(g.generation, 2);
  EXPECT_EQ(g.node_rank, 1);
  EXPECT_EQ(g.global_rank, 5);
  EXPECT_EQ(g.local_rank, 1);
  EXPECT_EQ(g.exit_code, 7);
  EXPECT_EQ(g.what, f.what);
  EXPECT_EQ(g.log_path, f.log_path);
  ASSERT_EQ(g.log_tail.size(), 2u);
  EXPECT_EQ(g.log_tail[0], "a");
  EXPECT_TRUE(g.abort);
  EXPECT_THROW(FailureFromJson("{\"generation\": 1}"), Error);
}

TEST(KvStore, ServerAndClientShareKeysAndFirstWriterWins) {
  const int port = PickFreePort();
  const std::chrono::milliseconds timeout(5000);
  auto server = ServeKvStore("127.0.0.1", port, timeout);
  ASSERT_TRUE(CanConnect("127.0.0.1", port, 1000));
  auto client = ConnectKvStore("127.0.0.1", port, timeout);
  EXPECT_FALSE(client->TryGet("k").has_value());
  server->Set("k", "v");
  EXPECT_EQ(client->TryGet("k").value(), "v");
  EXPECT_EQ(client->SetIfAbsent("first", "client"), "client");
  EXPECT_EQ(server->SetIfAbsent("first", "server"), "client");
  EXPECT_EQ(server->Add("n", 2), 2);
  EXPECT_EQ(client->Add("n", 1), 3);
  EXPECT_EQ(client->Add("n", 0), 3);
  // The server gone: calls fail promptly instead of hanging.
  server.reset();
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(
      {
        client->Add("n", 1);
        client->Add("n", 1);
      },
      Error);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, timeout);
}

TEST(Net, FreePortIsFreeAndRefusesConnections) {
  const int port = PickFreePort();
  EXPECT_GT(port, 0);
  EXPECT_FALSE(CanConnect("127.0.0.1", port, 1000));
}

TEST(RankOutput, KeepsABoundedTailAndWritesTheLog) {
  TempDir tmp;
  int out[2], err[2];
  ASSERT_EQ(::pipe(out), 0);
  ASSERT_EQ(::pipe(err), 0);
  OutputRoute route;
  route.log_path = tmp / "rank.log";
  route.console = false;
  RankOutput sink(route);
  // The lines are split and the tail kept by trm_common's OutputCapture; RankOutput is its sink.
  OutputLimits limits;
  limits.tail_lines = 3;
  OutputCapture output(UniqueFd(out[0]), UniqueFd(err[0]), limits, sink.Sink());
  const std::string text = "one\ntwo\nthree\nfour\npartial";
  ASSERT_EQ(::write(out[1], text.data(), text.size()), static_cast<ssize_t>(text.size()));
  ASSERT_EQ(::write(err[1], "err\n", 4), 4);
  ::close(out[1]);
  ::close(err[1]);
  output.ReadAvailable();
  output.Close();
  EXPECT_FALSE(output.open());
  EXPECT_EQ(output.Tail(), (std::vector<std::string>{"four", "partial", "err"}));
  EXPECT_EQ(testing::ReadText(route.log_path), "one\ntwo\nthree\nfour\npartial\nerr\n");
}

TEST(RankOutput, UnwritableLogIsAnIoErrorNamingTheFlag) {
  OutputRoute route;
  route.log_path = "/proc/no/such/dir/rank_0.log";
  try {
    RankOutput output(route);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kIoError);
    EXPECT_NE(std::string(e.what()).find("--log-dir"), std::string::npos);
  }
}

}  // namespace
}  // namespace trm::launch
