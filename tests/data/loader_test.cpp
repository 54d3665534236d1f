#include "trm/data/batch_iterator.h"

#include <gtest/gtest.h>

#include <set>

#include "test_util.h"
#include "trm/common/error.h"
#include "prng.h"
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

}  // namespace
}  // namespace trm::data
