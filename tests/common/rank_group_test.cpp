// RankGroup, the one rank supervisor (trm/common/rank_group.h), over /bin/sh children. The
// results never depend on timing: the tests check which signal ended a child, which lines
// arrived and that calls returned; every wait is bounded and generous.
#include "trm/common/rank_group.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <functional>
#include <future>
#include <string>
#include <thread>
#include <vector>

#include "trm/common/error.h"

extern char** environ;

namespace trm {
namespace {

using std::chrono::milliseconds;
using Clock = std::chrono::steady_clock;

constexpr milliseconds kPatience{60000};  // far beyond what any child here needs

SpawnSpec Shell(const std::string& script) {
  SpawnSpec s;
  s.path = "/bin/sh";
  s.argv = {"/bin/sh", "-c", script};
  for (char** e = environ; e && *e; ++e) s.env.push_back(*e);
  return s;
}

struct Line {
  OutputStream stream;
  std::string text;
};

// Collects one child's lines.
struct Lines {
  std::vector<Line> all;
  LineSink Sink() {
    return [this](OutputStream s, const std::string& l) { all.push_back({s, l}); };
  }
  bool Has(const std::string& text) const {
    for (const auto& l : all) {
      if (l.text == text) return true;
    }
    return false;
  }
};

// Runs the group's loop until pred() holds (bounded); returns pred().
bool WaitUntil(RankGroup& g, const std::function<bool()>& pred) {
  const auto until = Clock::now() + kPatience;
  while (!pred() && Clock::now() < until) g.Wait();
  return pred();
}

// Alive and not a zombie (a container's init may not reap orphans).
bool IsAlive(pid_t pid) {
  if (::kill(pid, 0) != 0) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const auto close = stat.rfind(')');
  return close == std::string::npos || close + 2 >= stat.size() || stat[close + 2] != 'Z';
}

bool DiesWithin(pid_t pid, milliseconds d) {
  const auto until = Clock::now() + d;
  while (IsAlive(pid) && Clock::now() < until) std::this_thread::sleep_for(milliseconds(10));
  return !IsAlive(pid);
}

TEST(SignalName, NamesSignals) {
  EXPECT_EQ(SignalName(SIGTERM), "SIGTERM");
  EXPECT_EQ(SignalName(SIGKILL), "SIGKILL");
}

TEST(DescribeWaitStatus, ExitsAndSignals) {
  EXPECT_EQ(DescribeWaitStatus(3 << 8).what, "exited with code 3");
  EXPECT_EQ(DescribeWaitStatus(3 << 8).exit_code, 3);
  EXPECT_EQ(DescribeWaitStatus(SIGKILL).signal, SIGKILL);
  EXPECT_EQ(DescribeWaitStatus(SIGKILL).exit_code, -1);
  EXPECT_EQ(DescribeWaitStatus(SIGSEGV | 0x80).what, "killed by SIGSEGV (core dumped)");
}

TEST(RankGroup, ClassifiesExitsAndDeliversLinesPerStream) {
  RankGroup g;
  Lines a, b;
  g.Spawn(Shell("echo out; echo err >&2; printf partial; exit 3"), "a", a.Sink());
  g.Spawn(Shell("echo before; kill -s SEGV $$"), "b", b.Sink());
  ASSERT_TRUE(WaitUntil(g, [&] { return g.done(); }));
  g.Drain();
  EXPECT_EQ(g.exit(0).exit_code, 3);
  EXPECT_EQ(g.exit(0).what, "exited with code 3");
  EXPECT_FALSE(g.exit(0).signalled);
  EXPECT_EQ(g.exit(1).signal, SIGSEGV);
  EXPECT_EQ(g.exit(1).exit_code, -1);
  ASSERT_EQ(a.all.size(), 3u);
  EXPECT_EQ(a.all[0].text, "out");
  EXPECT_EQ(a.all[0].stream, OutputStream::kStdout);
  EXPECT_TRUE(a.Has("err"));
  EXPECT_TRUE(a.Has("partial"));  // flushed although it had no newline
  for (const auto& l : a.all) EXPECT_EQ(l.stream, l.text == "err" ? OutputStream::kStderr : OutputStream::kStdout);
  EXPECT_TRUE(b.Has("before"));
  EXPECT_EQ(g.Tail(0).size(), 3u);
}

TEST(RankGroup, EachExitIsReportedOnceWithItsLastWordsDelivered) {
  RankGroup g;
  Lines a;
  g.Spawn(Shell("echo last words; exit 0"), "a", a.Sink());
  int reported = 0;
  bool words_first = false;
  const auto until = Clock::now() + kPatience;
  while (!g.done() && Clock::now() < until) {
    for (size_t i : g.Wait()) {
      ++reported;
      words_first = a.Has("last words") && i == 0;
    }
  }
  ASSERT_TRUE(g.done());
  for (int i = 0; i < 3; ++i) reported += static_cast<int>(g.Wait().size());
  EXPECT_EQ(reported, 1);
  EXPECT_TRUE(words_first);
  EXPECT_TRUE(g.exit(0).ok());
}

TEST(RankGroup, StopEndsAChildWithSigtermWhenItListens) {
  RankGroup g;
  Lines a;
  g.Spawn(Shell("echo ready; exec sleep 1000"), "a", a.Sink());
  ASSERT_TRUE(WaitUntil(g, [&] { return a.Has("ready"); }));
  EXPECT_EQ(g.Stop(kPatience), 1);
  EXPECT_EQ(g.Stop(kPatience), 0);  // once
  ASSERT_TRUE(WaitUntil(g, [&] { return g.done(); }));
  EXPECT_EQ(g.exit(0).signal, SIGTERM);
  EXPECT_TRUE(g.exit(0).signalled);
  EXPECT_FALSE(g.killed());
}

TEST(RankGroup, StopEscalatesToSigkillForAChildThatIgnoresSigterm) {
  RankGroup g;
  Lines a;
  // The ignored disposition is inherited by the loop's sleeps too.
  g.Spawn(Shell("trap '' TERM; echo ready; while :; do sleep 1; done"), "a", a.Sink());
  ASSERT_TRUE(WaitUntil(g, [&] { return a.Has("ready"); }));
  g.Stop(milliseconds(100));
  ASSERT_TRUE(WaitUntil(g, [&] { return g.done(); }));
  EXPECT_TRUE(g.killed());
  EXPECT_EQ(g.exit(0).signal, SIGKILL);
  EXPECT_TRUE(g.exit(0).signalled);
  EXPECT_FALSE(g.exit(0).oom_killed);  // our own SIGKILL is never the OOM killer's
}

TEST(RankGroup, ASigkillNotSentByTheGroupIsCheckedAgainstTheOomKillCount) {
  RankGroup g;
  g.Spawn(Shell("kill -s KILL $$"), "a", nullptr);
  ASSERT_TRUE(WaitUntil(g, [&] { return g.done(); }));
  const ProcessExit& x = g.exit(0);
  EXPECT_EQ(x.signal, SIGKILL);
  EXPECT_FALSE(x.signalled);
  if (x.oom_kills_before >= 0) {  // a readable count (cgroup or /proc/vmstat)
    EXPECT_GE(x.oom_kills_after, 0);
    EXPECT_EQ(x.oom_killed, x.oom_kills_after > x.oom_kills_before);
  } else {
    EXPECT_FALSE(x.oom_killed);
  }
}

TEST(RankGroup, AFloodOfOutputIsDeliveredInBoundedLinesWithoutBlocking) {
  RankGroupOptions o;
  o.output.max_line = 4096;
  o.output.tail_lines = 5;
  o.output.tail_line_chars = 100;
  RankGroup g(o);
  size_t long_bytes = 0, short_lines = 0, longest = 0;
  std::string last;
  // 3 MB without a newline, then 200,000 short lines: far more than a pipe holds, so the child
  // only finishes if the group keeps reading.
  g.Spawn(Shell("head -c 3000000 /dev/zero | tr '\\000' x; echo; seq 1 200000"), "flood",
          [&](OutputStream, const std::string& l) {
            longest = std::max(longest, l.size());
            if (!l.empty() && l[0] == 'x') long_bytes += l.size();
            else ++short_lines;
            last = l;
          });
  ASSERT_TRUE(WaitUntil(g, [&] { return g.done(); }));
  g.Drain();
  EXPECT_TRUE(g.exit(0).ok());
  EXPECT_LE(longest, o.output.max_line);
  EXPECT_EQ(long_bytes, 3000000u);
  EXPECT_EQ(short_lines, 200000u);
  EXPECT_EQ(last, "200000");
  const auto tail = g.Tail(0);
  ASSERT_EQ(tail.size(), 5u);
  EXPECT_EQ(tail.back(), "200000");
  for (const auto& l : tail) EXPECT_LE(l.size(), o.output.tail_line_chars + 3);
}

TEST(RankGroup, ALongLineIsCutInTheTail) {
  RankGroupOptions o;
  o.output.tail_line_chars = 10;
  RankGroup g(o);
  g.Spawn(Shell("echo 0123456789abcdef"), "a", nullptr);
  ASSERT_TRUE(WaitUntil(g, [&] { return g.done(); }));
  g.Drain();
  EXPECT_EQ(g.Tail(0), (std::vector<std::string>{"0123456789..."}));
}

TEST(RankGroup, DrainIsBoundedWhenAProcessOutsideTheGroupHoldsThePipe) {
  RankGroupOptions o;
  o.pipe_drain = milliseconds(200);
  RankGroup g(o);
  Lines a;
  // setsid puts the sleeper in its own session, out of reach of the group's SIGKILL, with the
  // child's stdout still open.
  g.Spawn(Shell("setsid sleep 1000 & echo $!; exit 0"), "a", a.Sink());
  ASSERT_TRUE(WaitUntil(g, [&] { return g.done() && !a.all.empty(); }));
  const pid_t sleeper = std::stoi(a.all.at(0).text);
  auto drained = std::async(std::launch::async, [&] { g.Drain(); });
  const bool returned = drained.wait_for(kPatience) == std::future_status::ready;
  ::kill(sleeper, SIGKILL);
  ASSERT_TRUE(returned) << "Drain did not return while a process outside the group held the pipe";
  EXPECT_TRUE(g.exit(0).ok());
}

TEST(RankGroup, GrandchildrenDieWithTheGroup) {
  RankGroup g;
  Lines a;
  g.Spawn(Shell("sleep 1000 & echo $!; exit 0"), "a", a.Sink());
  ASSERT_TRUE(WaitUntil(g, [&] { return g.done() && !a.all.empty(); }));
  const pid_t grandchild = std::stoi(a.all.at(0).text);
  g.Drain();
  EXPECT_TRUE(DiesWithin(grandchild, kPatience));
  ::kill(grandchild, SIGKILL);  // a failing test leaves nothing behind either
}

TEST(RankGroup, GrandchildrenOfAStoppedChildDieToo) {
  RankGroup g;
  Lines a;
  g.Spawn(Shell("sleep 1000 & echo $!; wait"), "a", a.Sink());
  ASSERT_TRUE(WaitUntil(g, [&] { return !a.all.empty(); }));
  const pid_t grandchild = std::stoi(a.all.at(0).text);
  g.Stop(kPatience);  // SIGTERM reaches the whole group
  ASSERT_TRUE(WaitUntil(g, [&] { return g.done(); }));
  g.Drain();
  EXPECT_TRUE(DiesWithin(grandchild, kPatience));
  ::kill(grandchild, SIGKILL);
}

TEST(RankGroup, ASpawnThatFailsLeavesTheGroupUsable) {
  RankGroup g;
  g.Spawn(Shell("exit 0"), "ok", nullptr);
  SpawnSpec bad = Shell("");
  bad.path = "/no/such/program";
  try {
    g.Spawn(bad, "bad", nullptr);
    FAIL() << "spawned a missing program";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kFailedPrecondition);
  }
  EXPECT_EQ(g.size(), 1u);
  ASSERT_TRUE(WaitUntil(g, [&] { return g.done(); }));
  EXPECT_TRUE(g.exit(0).ok());
}

TEST(RankGroup, WaitReportsTheCallersFds) {
  RankGroup g;
  int p[2];
  ASSERT_EQ(::pipe(p), 0);
  ASSERT_EQ(::write(p[1], "x", 1), 1);
  std::vector<pollfd> extra{{p[0], POLLIN, 0}};
  g.Wait(&extra);
  EXPECT_TRUE(extra[0].revents & POLLIN);
  ::close(p[0]);
  ::close(p[1]);
}

}  // namespace
}  // namespace trm
