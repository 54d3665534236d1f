#include "trm/data/batch_iterator.h"

#include <gtest/gtest.h>

#include <set>

#include "test_util.h"
#include "trm/common/error.h"
#include "prng.h"
#include "trm/data/dataset_shard.h"
#include "trm/data/npy.h"

namespace trm::data {
namespace {

using testing::TempDir;

// A split whose row r has inputs[r][j] = base + r and labels[r][j] = -(base + r).
void WriteSplit(const std::string& dir, int64_t rows, int64_t seq_len, int32_t base, int32_t pad = 0) {
  std::filesystem::create_directories(dir);
  NpyInt32Writer in(dir + "/all__inputs.npy", {rows, seq_len});
  NpyInt32Writer lab(dir + "/all__labels.npy", {rows, seq_len});
  for (int64_t r = 0; r < rows; ++r) {
    std::vector<int32_t> a(static_cast<size_t>(seq_len), base + static_cast<int32_t>(r));
    std::vector<int32_t> b(static_cast<size_t>(seq_len), -(base + static_cast<int32_t>(r)));
    in.Write(a.data(), a.size());
    lab.Write(b.data(), b.size());
  }
  in.Close();
  lab.Close();
  testing::WriteText(dir + "/dataset.json", nlohmann::json{{"seq_len", seq_len}, {"vocab_size", 1000},
                                                           {"pad_id", pad}, {"ignore_label_id", -100}}.dump());
}

std::vector<DatasetSplit> Splits(const std::vector<std::string>& dirs) {
  std::vector<DatasetSplit> v;
  for (const auto& d : dirs) v.push_back(DatasetSplit::OpenDir(d));
  return v;
}

BatchConfig Config(int64_t global, int rank, int world, uint64_t seed = 1) {
  BatchConfig c;
  c.global_batch = global;
  c.rank = rank;
  c.world = world;
  c.seed = seed;
  return c;
}

TEST(BatchIterator, RanksCoverEachGlobalBatchExactlyOnce) {
  TempDir tmp;
  WriteSplit(tmp / "a", 37, 4, 0);
  const int world = 4;
  const int64_t global = 8;
  std::vector<BatchIterator> ranks;
  for (int r = 0; r < world; ++r) ranks.emplace_back(Splits({tmp / "a"}), Config(global, r, world));
  EXPECT_EQ(ranks[0].batches_per_epoch(), 4);  // 37 / 8, the last 5 rows dropped
  std::vector<std::vector<int64_t>> epoch_orders(3);
  Batch b;
  for (int step = 0; step < 12; ++step) {
    std::set<int64_t> seen;
    for (int r = 0; r < world; ++r) {
      ranks[r].Next(&b);
      ASSERT_EQ(b.rows, global / world);
      EXPECT_EQ(b.epoch, static_cast<uint64_t>(step / 4));
      EXPECT_EQ(b.position, static_cast<uint64_t>(step % 4));
      for (int64_t i = 0; i < b.rows; ++i) {
        const int64_t row = b.row_ids[i];
        EXPECT_TRUE(seen.insert(row).second) << "row " << row << " twice in step " << step;
        EXPECT_EQ(b.inputs[i * 4], row);  // the right data came with the id
        EXPECT_EQ(b.labels[i * 4 + 3], -row);
        epoch_orders[step / 4].push_back(row);
      }
    }
    EXPECT_EQ(seen.size(), static_cast<size_t>(global));
  }
  for (const auto& order : epoch_orders) {
    EXPECT_EQ(std::set<int64_t>(order.begin(), order.end()).size(), 32u);  // no row twice per epoch
  }
  EXPECT_NE(epoch_orders[0], epoch_orders[1]);  // reshuffled each epoch
}

TEST(BatchIterator, GlobalBatchesDoNotDependOnWorldSize) {
  TempDir tmp;
  WriteSplit(tmp / "a", 50, 2, 0);
  BatchIterator one(Splits({tmp / "a"}), Config(12, 0, 1, 9));
  std::vector<BatchIterator> three;
  for (int r = 0; r < 3; ++r) three.emplace_back(Splits({tmp / "a"}), Config(12, r, 3, 9));
  Batch whole, part;
  for (int step = 0; step < 10; ++step) {
    one.Next(&whole);
    std::vector<int64_t> joined;
    for (auto& it : three) {
      it.Next(&part);
      joined.insert(joined.end(), part.row_ids.begin(), part.row_ids.end());
    }
    EXPECT_EQ(joined, whole.row_ids) << "step " << step;
  }
}

TEST(BatchIterator, SameSeedSameOrderOtherSeedOtherOrder) {
  TempDir tmp;
  WriteSplit(tmp / "a", 64, 2, 0);
  BatchIterator a(Splits({tmp / "a"}), Config(16, 0, 1, 3));
  BatchIterator b(Splits({tmp / "a"}), Config(16, 0, 1, 3));
  BatchIterator c(Splits({tmp / "a"}), Config(16, 0, 1, 4));
  Batch x, y, z;
  a.Next(&x);
  b.Next(&y);
  c.Next(&z);
  EXPECT_EQ(x.row_ids, y.row_ids);
  EXPECT_NE(x.row_ids, z.row_ids);
  // The order is pinned across platforms and compilers: SplitMix64 + Fisher-Yates (docs/data.md).
  EXPECT_EQ(x.row_ids, (std::vector<int64_t>{56, 42, 5, 10, 22, 54, 61, 13, 29, 63, 38, 45, 35, 33, 11, 17}));
  internal::SplitMix64 rng(0);
  EXPECT_EQ(rng.Next(), 0xe220a8397b1dcdafULL);  // the published SplitMix64 sequence for seed 0
}

TEST(BatchIterator, ResumeYieldsTheSameBatchSequence) {
  TempDir tmp;
  WriteSplit(tmp / "a", 23, 3, 0);
  BatchIterator original(Splits({tmp / "a"}), Config(4, 1, 2, 11));  // 5 batches an epoch
  Batch b;
  for (int i = 0; i < 7; ++i) original.Next(&b);
  const std::string saved = original.state().ToJson();
  EXPECT_EQ(saved, "{\"epoch\":1,\"position\":2}");
  std::vector<std::vector<int64_t>> expected;
  for (int i = 0; i < 12; ++i) {
    original.Next(&b);
    expected.push_back(b.row_ids);
  }
  BatchIterator resumed(Splits({tmp / "a"}), Config(4, 1, 2, 11));
  resumed.Restore(IteratorState::FromJson(saved));
  for (int i = 0; i < 12; ++i) {
    resumed.Next(&b);
    EXPECT_EQ(b.row_ids, expected[i]) << "batch " << i << " after resume";
  }
  EXPECT_THROW(resumed.Restore(IteratorState{0, 6}), Error);
  EXPECT_THROW(IteratorState::FromJson("{\"epoch\": -1, \"position\": 0}"), Error);
}

TEST(BatchIterator, ConcatenatesDataPathsWithCompatibleMetadata) {
  TempDir tmp;
  WriteSplit(tmp / "one/train", 10, 4, 0);
  WriteSplit(tmp / "two/train", 15, 4, 1000);
  BatchConfig c = Config(25, 0, 1);
  c.shuffle = false;
  BatchIterator it = BatchIterator::Open({tmp / "one", tmp / "two"}, "train", c);
  EXPECT_EQ(it.total_rows(), 25);
  Batch b;
  it.Next(&b);
  for (int64_t i = 0; i < 25; ++i) {
    EXPECT_EQ(b.row_ids[i], i);
    EXPECT_EQ(b.inputs[i * 4], i < 10 ? i : 1000 + i - 10);
  }
  WriteSplit(tmp / "three/train", 5, 8, 0);
  WriteSplit(tmp / "four/train", 5, 4, 0, /*pad=*/7);
  for (const char* other : {"three", "four"}) {
    try {
      BatchIterator::Open({tmp / "one", tmp / other}, "train", Config(5, 0, 1));
      FAIL();
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Code::kInvalidArgument);
      EXPECT_NE(std::string(e.what()).find("not compatible: " + std::string(other[0] == 't' ? "seq_len 4 vs 8" : "pad_id 0 vs 7")),
                std::string::npos) << e.what();
    }
  }
}

TEST(BatchIterator, ChecksItsConfiguration) {
  TempDir tmp;
  WriteSplit(tmp / "a", 10, 2, 0);
  auto message = [&](BatchConfig c) {
    try {
      BatchIterator it(Splits({tmp / "a"}), c);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(Config(10, 0, 4)).find("divisible by the world size 4"), std::string::npos);
  EXPECT_NE(message(Config(8, 4, 4)).find("rank 4 outside [0, 4)"), std::string::npos);
  EXPECT_NE(message(Config(12, 0, 1)).find("10 rows, fewer than one global batch of 12"), std::string::npos);
}

TEST(BatchIterator, KeepingTheLastBatchSplitsItByRankToo) {
  TempDir tmp;
  WriteSplit(tmp / "a", 10, 2, 0);
  std::set<int64_t> seen;
  for (int r = 0; r < 2; ++r) {
    BatchConfig c = Config(4, r, 2);
    c.drop_last = false;
    BatchIterator it(Splits({tmp / "a"}), c);
    EXPECT_EQ(it.batches_per_epoch(), 3);
    Batch b;
    for (int i = 0; i < 3; ++i) {
      it.Next(&b);
      EXPECT_EQ(b.rows, i < 2 ? 2 : 1);
      seen.insert(b.row_ids.begin(), b.row_ids.end());
    }
  }
  EXPECT_EQ(seen.size(), 10u);
}

TEST(DatasetSplit, ErrorsNameTheFile) {
  TempDir tmp;
  try {
    DatasetSplit::Open(tmp / "nope", "train");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kNotFound);
  }
  WriteSplit(tmp / "a", 3, 4, 0);
  testing::WriteText(tmp / "a/dataset.json", "{\"seq_len\": 5, \"vocab_size\": 10, \"pad_id\": 0}");
  try {
    DatasetSplit::OpenDir(tmp / "a");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kDataLoss);
    EXPECT_NE(std::string(e.what()).find("all__inputs.npy: shape (3, 4), expected (rows, 5)"), std::string::npos)
        << e.what();
  }
  testing::WriteText(tmp / "a/dataset.json", "{\"vocab_size\": 10, \"pad_id\": 0}");
  EXPECT_THROW(DatasetSplit::OpenDir(tmp / "a"), Error);
}

// The shard plan names exactly the rows the loader hands the given ranks: the union of their
// Next() row ids, over shuffled and unshuffled, kept and dropped last batches, past epochs.
TEST(ShardPlan, RowsReadByRanksMatchesTheIterator) {
  TempDir tmp;
  WriteSplit(tmp / "a", 53, 2, 0);
  struct Case {
    int64_t global;
    int world;
    std::vector<int> ranks;
    int64_t batches;
    bool shuffle, drop_last;
  };
  for (const Case& c : {Case{8, 2, {0}, 3, true, true}, Case{8, 2, {1}, 9, true, true}, Case{12, 4, {1, 3}, 5, true, false},
                        Case{6, 3, {2}, 40, true, true}, Case{8, 4, {0, 1, 2, 3}, 2, true, true},
                        Case{10, 2, {0}, 4, false, false}, Case{10, 2, {1}, 30, false, true}}) {
    BatchConfig base = Config(c.global, 0, c.world, 7);
    base.shuffle = c.shuffle;
    base.drop_last = c.drop_last;
    std::set<int64_t> expected;
    for (int r : c.ranks) {
      BatchConfig bc = base;
      bc.rank = r;
      BatchIterator it(Splits({tmp / "a"}), bc);
      Batch b;
      for (int64_t i = 0; i < c.batches; ++i) {
        it.Next(&b);
        expected.insert(b.row_ids.begin(), b.row_ids.end());
      }
    }
    const std::vector<int64_t> got = RowsReadByRanks(53, base, c.ranks, c.batches);
    EXPECT_EQ(got, std::vector<int64_t>(expected.begin(), expected.end()))
        << "global " << c.global << " world " << c.world << " batches " << c.batches;
  }
  EXPECT_THROW(RowsReadByRanks(53, Config(8, 0, 3), {0}, 1), Error);  // 8 rows over 3 ranks
  EXPECT_THROW(RowsReadByRanks(53, Config(8, 0, 2), {2}, 1), Error);  // no rank 2 of 2
}

// A shard reads as the whole split with only its rows present; the iterator serves the ranks it
// was planned for from it unchanged, and a row outside it is DataLoss.
TEST(ShardPlan, ShardServesItsRanksAndRefusesOtherRows) {
  TempDir tmp;
  WriteSplit(tmp / "ds/train", 40, 3, 100);
  WriteSplit(tmp / "ds/test", 5, 3, 900);
  testing::WriteText(tmp / "ds/build.json", "{}");
  const BatchConfig base = Config(8, 0, 4, 3);
  const std::vector<int64_t> rows = RowsReadByRanks(40, base, {1}, 3);
  ASSERT_EQ(rows.size(), 6u);  // 3 batches x 2 rows, all in one epoch
  WriteDatasetShard(tmp / "ds", "train", rows, tmp / "shard");
  const DatasetSplit shard = DatasetSplit::Open(tmp / "shard", "train");
  EXPECT_TRUE(shard.is_shard());
  EXPECT_EQ(shard.rows(), 40);
  EXPECT_EQ(shard.present_rows(), 6);
  EXPECT_FALSE(DatasetSplit::Open(tmp / "shard", "test").is_shard());  // other splits whole
  EXPECT_TRUE(std::filesystem::exists(tmp / "shard/build.json"));
  BatchConfig r1 = base;
  r1.rank = 1;
  BatchIterator full(Splits({tmp / "ds/train"}), r1), part(Splits({tmp / "shard/train"}), r1);
  Batch a, b;
  for (int i = 0; i < 3; ++i) {
    full.Next(&a);
    part.Next(&b);
    EXPECT_EQ(a.row_ids, b.row_ids);
    EXPECT_EQ(a.inputs, b.inputs);
    EXPECT_EQ(a.labels, b.labels);
  }
  BatchConfig r0 = base;  // rank 0's rows are not in rank 1's shard
  BatchIterator other(Splits({tmp / "shard/train"}), r0);
  try {
    other.Next(&b);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kDataLoss);
    EXPECT_NE(std::string(e.what()).find("is not in this worker's shard (6 of 40 rows)"), std::string::npos) << e.what();
  }
  EXPECT_THROW(WriteDatasetShard(tmp / "ds", "train", {3, 2}, tmp / "bad"), Error);  // not increasing
  EXPECT_THROW(WriteDatasetShard(tmp / "ds", "train", {40}, tmp / "bad"), Error);    // past the end
  EXPECT_FALSE(std::filesystem::exists(tmp / "bad"));
}

}  // namespace
}  // namespace trm::data
