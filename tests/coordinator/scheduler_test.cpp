#include "trm/coordinator/scheduler.h"

#include <gtest/gtest.h>

namespace trm::coordinator {
namespace {

TEST(PlaceRanksTest, PrefersOneWorkerThatHoldsTheJob) {
  auto p = PlaceRanks(2, {{"a", 1, true}, {"b", 4, true}, {"c", 2, true}});
  ASSERT_TRUE(p);
  ASSERT_EQ(p->size(), 1u);
  EXPECT_EQ((*p)[0].worker_id, "c");  // the smallest that fits keeps b's 4 slots whole
  EXPECT_EQ((*p)[0].ranks, (std::vector<int>{0, 1}));
}

TEST(PlaceRanksTest, SpreadsOverWorkersWithRankZeroWhereThereArePorts) {
  auto p = PlaceRanks(3, {{"a", 2, false}, {"b", 1, true}});
  ASSERT_TRUE(p);
  ASSERT_EQ(p->size(), 2u);
  EXPECT_EQ((*p)[0].worker_id, "b");
  EXPECT_EQ((*p)[0].ranks, (std::vector<int>{0}));
  EXPECT_EQ((*p)[1].worker_id, "a");
  EXPECT_EQ((*p)[1].ranks, (std::vector<int>{1, 2}));
}

TEST(PlaceRanksTest, NothingWhenTheRanksDoNotFit) {
  EXPECT_FALSE(PlaceRanks(3, {{"a", 1, true}, {"b", 1, true}}));
  EXPECT_FALSE(PlaceRanks(1, {{"a", 1, false}}));  // no port for the rendezvous
  EXPECT_FALSE(PlaceRanks(0, {{"a", 1, true}}));
  EXPECT_FALSE(PlaceRanks(1, {}));
}

}  // namespace
}  // namespace trm::coordinator
