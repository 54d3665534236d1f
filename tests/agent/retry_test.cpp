// The agent's one retry policy (worker/agent/src/retry.h) on a manual clock: which errors are
// retried, the backoff, the deadline, and stopping.
#include "retry.h"  // worker/agent/src: internal

#include <gtest/gtest.h>

#include <vector>

#include "manual_clock.h"

namespace trm::agent {
namespace {

using std::chrono::milliseconds;
using testing::ManualClock;

struct Backoffs {
  ManualClock clock;
  std::vector<int64_t> waits;
  bool stop_after_first_wait = false;
  // The backoff wait: time passes on the manual clock only.
  std::function<bool(milliseconds)> Wait() {
    return [this](milliseconds d) {
      waits.push_back(d.count());
      clock.Advance(d);
      return stop_after_first_wait;
    };
  }
};

RetryPolicy Policy() {
  RetryPolicy p;
  p.initial_backoff = milliseconds(500);
  p.max_backoff = milliseconds(2000);
  p.deadline = milliseconds(60000);
  return p;
}

TEST(Retry, RetryableCodesAreRetriedWithADoublingBoundedBackoff) {
  Backoffs r;
  int calls = 0;
  RetryCall("op", Policy(), r.clock, r.Wait(), [&] {
    if (++calls <= 4) ThrowError(calls % 2 ? Code::kUnavailable : Code::kResourceExhausted, "not now");
  });
  EXPECT_EQ(calls, 5);
  EXPECT_EQ(r.waits, (std::vector<int64_t>{500, 1000, 2000, 2000}));
}

TEST(Retry, AFinalAnswerIsNotRetried) {
  for (Code code : {Code::kFailedPrecondition, Code::kNotFound, Code::kInvalidArgument, Code::kDataLoss}) {
    Backoffs r;
    int calls = 0;
    try {
      RetryCall("upload", Policy(), r.clock, r.Wait(), [&] {
        ++calls;
        ThrowError(code, "job j: attempt 1 is not the current attempt 2");
      });
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), code);
    }
    EXPECT_EQ(calls, 1) << CodeName(code);
    EXPECT_TRUE(r.waits.empty());
  }
}

TEST(Retry, GivesUpAtTheDeadlineWithTheLastError) {
  Backoffs r;
  RetryPolicy p = Policy();
  p.deadline = milliseconds(7000);
  int calls = 0;
  try {
    RetryCall("fetch", p, r.clock, r.Wait(), [&] {
      ++calls;
      ThrowError(Code::kDeadlineExceeded, "coordinator slow");
    });
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kDeadlineExceeded);
    EXPECT_NE(std::string(e.what()).find("gave up retrying after 7 s"), std::string::npos) << e.what();
  }
  int64_t waited = 0;
  for (int64_t w : r.waits) waited += w;
  EXPECT_LE(waited, 7000);
  EXPECT_EQ(calls, static_cast<int>(r.waits.size()) + 1);
  EXPECT_GE(calls, 3);
}

TEST(Retry, StoppingWhileWaitingIsCancelled) {
  Backoffs r;
  r.stop_after_first_wait = true;
  int calls = 0;
  try {
    RetryCall("fetch", Policy(), r.clock, r.Wait(), [&] {
      ++calls;
      ThrowError(Code::kUnavailable, "down");
    });
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kCancelled);
  }
  EXPECT_EQ(calls, 1);
}

TEST(Retry, WhichCodesAreRetryable) {
  EXPECT_TRUE(IsRetryable(Code::kUnavailable));
  EXPECT_TRUE(IsRetryable(Code::kDeadlineExceeded));
  EXPECT_TRUE(IsRetryable(Code::kResourceExhausted));
  EXPECT_TRUE(IsRetryable(Code::kInternal));
  EXPECT_FALSE(IsRetryable(Code::kFailedPrecondition));
  EXPECT_FALSE(IsRetryable(Code::kCancelled));
  EXPECT_FALSE(IsRetryable(Code::kPermissionDenied));
}

}  // namespace
}  // namespace trm::agent
