#include "stream_limits.h"  // coordinator/src: internal

#include <gtest/gtest.h>

#include <functional>

namespace trm::coordinator {
namespace {

Code CodeOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.code();
  }
  return Code::kInternal;  // nothing thrown
}

TEST(StreamLimit, RefusesPastTheMaximumUntilASlotIsReleased) {
  StreamLimit l("watches", 2);
  {
    const auto a = l.Acquire();
    const auto b = l.Acquire();
    EXPECT_EQ(l.held(), 2);
    EXPECT_EQ(CodeOf([&] { l.Acquire(); }), Code::kResourceExhausted);
  }
  EXPECT_EQ(l.held(), 0);
  const auto c = l.Acquire();
  EXPECT_EQ(l.held(), 1);
}

TEST(RateLimit, BurstThenRatePerKey) {
  int64_t now = 0;
  RateLimit r("events", 100, 1000, [&] { return now; });
  r.Take("w1", 1000);  // the whole burst
  EXPECT_EQ(CodeOf([&] { r.Take("w1", 1); }), Code::kResourceExhausted);
  r.Take("w2", 500);  // buckets are per key
  now += 500;         // refills 50
  r.Take("w1", 50);
  EXPECT_EQ(CodeOf([&] { r.Take("w1", 1); }), Code::kResourceExhausted);
  now += 100000;      // capped at the burst
  EXPECT_EQ(CodeOf([&] { r.Take("w1", 1001); }), Code::kResourceExhausted);
  r.Take("w1", 1000);
  try {
    r.Take("w1", 1);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("w1: more than 100 events a second"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace trm::coordinator
