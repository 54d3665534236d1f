#include "trm/worker/thread_pools.h"

#include <gtest/gtest.h>

#include <cstdlib>
#include <thread>

#include <ATen/Parallel.h>

#include "trm/common/error.h"

namespace trm::worker {
namespace {

TEST(ThreadPoolsTest, ExplicitThreadsAreTakenAsTheyAre) {
  EXPECT_EQ(ResolveThreads(3, 2, 1), 3);
  EXPECT_EQ(ResolveThreads(1, 64, 8), 1);
}

TEST(ThreadPoolsTest, DefaultIsTheMachinesShareOfCores) {
  EXPECT_EQ(ResolveThreads(0, 8, 1), 8);
  EXPECT_EQ(ResolveThreads(0, 8, 2), 4);
  EXPECT_EQ(ResolveThreads(0, 8, 3), 2);
  EXPECT_EQ(ResolveThreads(0, 2, 4), 1);  // more ranks than cores: still one thread each
  EXPECT_THROW(ResolveThreads(-1, 8, 1), Error);
}

// The default never reads OMP_NUM_THREADS / OPENBLAS_NUM_THREADS: those are what made the same
// config give other bytes under another launcher.
TEST(ThreadPoolsTest, DefaultIgnoresTheThreadEnvironmentButCountsLocalRanks) {
  ::setenv("OMP_NUM_THREADS", "97", 1);
  ::setenv("OPENBLAS_NUM_THREADS", "97", 1);
  ::unsetenv("LOCAL_WORLD_SIZE");
  const int alone = ResolveThreadsForThisProcess(0);
  EXPECT_GE(alone, 1);
  EXPECT_NE(alone, 97);
  ::setenv("LOCAL_WORLD_SIZE", "2", 1);
  EXPECT_EQ(ResolveThreadsForThisProcess(0), std::max(1, alone / 2));
  ::setenv("LOCAL_WORLD_SIZE", "two", 1);
  try {
    ResolveThreadsForThisProcess(0);
    ADD_FAILURE() << "a malformed LOCAL_WORLD_SIZE was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("LOCAL_WORLD_SIZE"), std::string::npos) << e.what();
  }
  ::unsetenv("LOCAL_WORLD_SIZE");
  ::unsetenv("OMP_NUM_THREADS");
  ::unsetenv("OPENBLAS_NUM_THREADS");
}

// Every pool follows ApplyThreads, starting from pools that disagree (as a launcher's
// OMP_NUM_THREADS and OpenBLAS's own core count left them before): this holds whatever kernels
// the machine's OpenBLAS picks, where comparing result bytes might not show the difference.
TEST(ThreadPoolsTest, ApplyThreadsGovernsEveryPool) {
  const ThreadPoolSizes before = CurrentThreadPools();
  if (!SetOpenBlasThreadsForTest(3)) GTEST_SKIP() << "OpenBLAS is not the BLAS of this process";
  at::set_num_threads(2);
  for (int n : {1, 2, 1}) {
    ApplyThreads(n);
    const ThreadPoolSizes s = CurrentThreadPools();
    EXPECT_EQ(s.intra_op, n) << Describe(s);
    EXPECT_EQ(s.openblas, n) << Describe(s);
    if (s.openmp >= 0) EXPECT_EQ(s.openmp, n) << Describe(s);
  }
  // A thread started later (a rank thread in the tests, autograd's workers) follows ATen's count.
  ApplyThreads(2);
  int in_thread = 0;
  std::thread([&] { in_thread = at::get_num_threads(); }).join();
  EXPECT_EQ(in_thread, 2);
  ApplyThreads(before.intra_op);
}

TEST(ThreadPoolsTest, ApplyThreadsRejectsZero) { EXPECT_THROW(ApplyThreads(0), Error); }

}  // namespace
}  // namespace trm::worker
