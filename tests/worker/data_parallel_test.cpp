// Data parallel on one machine: ranks are threads of this process talking Gloo over loopback.
#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <array>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "rank_threads.h"
#include "test_dataset.h"
#include "training_process.h"
#include "trm/common/error.h"
#include "trm/common/net.h"
#include "trm/worker/collective.h"
#include "trm/worker/phase_file.h"
#include "trm/worker/trainer.h"

namespace trm::worker {
namespace {

namespace fs = std::filesystem;


CollectiveOptions Opts(int rank, int world, int port, int timeout_ms = 60000) {
  CollectiveOptions o;
  o.rank = rank;
  o.world = world;
  o.master_port = port;
  o.timeout = std::chrono::milliseconds(timeout_ms);
  return o;
}

class DataParallelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("trm_dp_" + std::to_string(::getpid()));
    fs::create_directories(root_);
    BuildTestDataset("alpaca_gpteacher_roleplay.json", 96, (root_ / "ds").string());
  }
  static void TearDownTestSuite() {
    if (!std::getenv("TRM_KEEP_TEST_DIRS")) fs::remove_all(root_);
  }

  static TrainConfig Config(const std::string& run, std::vector<std::string> extra) {
    std::vector<std::string> ov = TinyRunOverrides((root_ / "ds").string(), (root_ / run).string());
    ov.insert(ov.end(), extra.begin(), extra.end());
    return LoadTrainConfig(std::string(TRM_SOURCE_DIR) + "/configs", "cfg_tiny", ov);
  }

  static Weights Clone(const Weights& w) {
    Weights out;
    for (const auto& [n, t] : w) out.emplace_back(n, t.detach().clone());
    return out;
  }

  static Weights RunSingle(const std::string& run, const std::vector<std::string>& extra) {
    TrainerOptions o;
    o.progress = 0;
    Trainer t(AtProcessStart(Config(run, extra)), o);
    t.Run();
    return Clone(t.Weights());
  }

  // Runs `world` ranks as threads over Gloo; returns rank 0's weights (and checks all ranks agree).
  static Weights RunRanks(int world, const std::string& run, const std::vector<std::string>& extra) {
    return RunRanksIn(std::vector<std::string>(static_cast<size_t>(world), run), extra);
  }
  // The same with rank r's run_dir root_/runs[r]: ranks that do not share storage.
  static Weights RunRanksIn(const std::vector<std::string>& runs, const std::vector<std::string>& extra) {
    const int world = static_cast<int>(runs.size());
    return RunRankThreads(world, [&](int rank, int port) {
      auto comm = CreateCollective(Opts(rank, world, port));
      TrainerOptions o;
      o.progress = 0;
      o.collective = comm.get();
      Trainer t(AtProcessStart(Config(runs[static_cast<size_t>(rank)], extra), rank), o);
      t.Run();
      return Clone(t.Weights());
    });
  }

  // Runs 2 ranks whose overrides are extra[rank] and that must fail; returns each rank's
  // "CODE: message" and checks that they failed together, well before the collective timeout.
  static std::vector<std::string> FailingRanks(const std::array<std::vector<std::string>, 2>& extra) {
    const int port = PickFreePort();
    std::vector<std::string> errors(2);
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> ranks;
    for (int r = 0; r < 2; ++r) {
      ranks.emplace_back([&, r] {
        try {
          auto comm = CreateCollective(Opts(r, 2, port, 60000));
          TrainerOptions o;
          o.progress = 0;
          o.collective = comm.get();
          Trainer t(AtProcessStart(Config("dp_failing", extra[static_cast<size_t>(r)]), r), o);
          t.Run();
          errors[static_cast<size_t>(r)] = "OK: rank ran";
        } catch (const Error& e) {
          errors[static_cast<size_t>(r)] = std::string(CodeName(e.code())) + ": " + e.what();
        }
      });
    }
    for (auto& t : ranks) t.join();
    EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 30.0);
    return errors;
  }

  static fs::path root_;
};
fs::path DataParallelTest::root_;

// The bar: 2 ranks x local batch b for k steps == 1 rank x batch 2b, ACT carry included.
TEST_F(DataParallelTest, TwoRanksEqualOneRankOnTheWholeBatch) {
  Weights one = RunSingle("one", {"max_steps=8"});
  Weights two = RunRanks(2, "two", {"max_steps=8"});
  double err = WorstRelativeError(two, one);
  EXPECT_LE(err, 1e-5);
  // The parameters did move (the comparison is not between two untouched initialisations).
  Weights init = RunSingle("zero", {"max_steps=1", "lr=0", "lr_warmup_steps=0"});
  EXPECT_GT(WorstRelativeError(one, init), 1e-3);
}

TEST_F(DataParallelTest, TwoRanksEqualOneRankWithGradientAccumulation) {
  Weights one = RunSingle("one_acc", {"max_steps=5", "gradient_accumulation_steps=2"});
  Weights two = RunRanks(2, "two_acc", {"max_steps=5", "gradient_accumulation_steps=2"});
  EXPECT_LE(WorstRelativeError(two, one), 1e-5);
}

// ACT exploration draws for the whole global batch from one generator in the same state on every
// rank (Trm::SetExploration), so it does not make data parallel differ from one process.
TEST_F(DataParallelTest, TwoRanksEqualOneRankWithExploration) {
  const std::vector<std::string> explore = {"max_steps=8", "arch.halt_exploration_prob=0.5", "arch.no_ACT_continue=true"};
  Weights one = RunSingle("one_explore", explore);
  Weights two = RunRanks(2, "two_explore", explore);
  EXPECT_LE(WorstRelativeError(two, one), 1e-5);
  // The Q head starts out far from halting, so these short runs rarely reach a draw that matters;
  // TrmTest.ExplorationDrawsDependOnTheRowNotOnTheSplit covers the draws themselves.
}

// Elastic world sizes: a run that resumes on another number of ranks (2, then 1, then 2 again)
// is the same run as one that never changed, up to summation order: the checkpoint holds the
// global batch's carry, the global data position and the one exploration state.
TEST_F(DataParallelTest, ResumingOnAnotherWorldSizeStaysTheSameRun) {
  const std::vector<std::string> explore = {"arch.halt_exploration_prob=0.5", "arch.no_ACT_continue=true"};
  auto with = [&](std::vector<std::string> v, const std::string& extra) {
    v.push_back(extra);
    return v;
  };
  Weights undisturbed = RunSingle("elastic_full", with(explore, "max_steps=12"));
  RunRanks(2, "elastic", with(explore, "max_steps=4"));
  RunSingle("elastic", with(with(explore, "max_steps=8"), "resume=true"));
  Weights resized = RunRanks(2, "elastic", with(with(explore, "max_steps=12"), "resume=true"));
  EXPECT_LE(WorstRelativeError(resized, undisturbed), 1e-5);
  std::ifstream in(root_ / "elastic" / "metrics.jsonl");
  int lines = 0;
  for (std::string l; std::getline(in, l);) ++lines;
  EXPECT_EQ(lines, 12);  // one run of 12 steps, none repeated or skipped
}

// Gradients summed in many small buckets, started during backward, give the same weights as one
// all-reduce after it (two ranks: every element is a + b either way, so bit for bit), and
// buckets did start before backward ended.
TEST_F(DataParallelTest, BucketedAllReduceOverlapsBackwardAndChangesNothing) {
  Weights one = RunRanks(2, "dp_one_bucket", {"max_steps=4", "allreduce_bucket_mb=0"});
  Weights many = RunRanks(2, "dp_buckets", {"max_steps=4", "allreduce_bucket_mb=0.01"});
  for (size_t i = 0; i < one.size(); ++i) EXPECT_TRUE(torch::equal(one[i].second, many[i].second)) << one[i].first;
  std::ifstream in(root_ / "dp_buckets" / "metrics.jsonl");
  std::string line;
  int steps = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    if (!j.contains("allreduce_overlapped")) continue;
    ++steps;
    EXPECT_GT(j["allreduce_overlapped"].get<int64_t>(), 0) << line;
  }
  EXPECT_EQ(steps, 4);
}

TEST_F(DataParallelTest, ResumeUnderTwoRanksIsExact) {
  Weights full = RunRanks(2, "dp_full", {"max_steps=10"});
  RunRanks(2, "dp_split", {"max_steps=4"});
  Weights resumed = RunRanks(2, "dp_split", {"max_steps=10", "resume=true"});
  for (size_t i = 0; i < full.size(); ++i) EXPECT_TRUE(torch::equal(full[i].second, resumed[i].second)) << full[i].first;
  // Only rank 0 wrote: one metrics file that reads as one run of 10 steps.
  std::ifstream in(root_ / "dp_split" / "metrics.jsonl");
  int lines = 0;
  for (std::string l; std::getline(in, l);) ++lines;
  EXPECT_EQ(lines, 10);
}

// Ranks on machines that do not share run_dir: only rank 0's holds the checkpoints. On resume the
// other rank must not start over (nor take another run's checkpoint that happens to bear the same
// name): it receives rank 0's through the collective, and the run ends exactly as an
// uninterrupted one.
TEST_F(DataParallelTest, ResumeWithoutSharedStorageIsExact) {
  Weights full = RunRanks(2, "dp_unshared_full", {"max_steps=10"});
  const std::vector<std::string> split = {"dp_unshared/node0", "dp_unshared/node1"};
  RunRanksIn(split, {"max_steps=4"});
  ASSERT_TRUE(fs::exists(root_ / split[0] / "step_4" / "manifest.json"));
  ASSERT_FALSE(fs::exists(root_ / split[1] / "step_4"));
  // A stale step_4 of another run (another learning rate) in rank 1's run_dir.
  RunRanks(2, "dp_unshared_other", {"max_steps=4", "lr=1e-3"});
  fs::create_directories(root_ / split[1]);
  fs::copy(root_ / "dp_unshared_other" / "step_4", root_ / split[1] / "step_4", fs::copy_options::recursive);

  Weights resumed = RunRanksIn(split, {"max_steps=10", "resume=true"});
  for (size_t i = 0; i < full.size(); ++i) EXPECT_TRUE(torch::equal(full[i].second, resumed[i].second)) << full[i].first;
  // The received copy was only read: rank 1's run_dir keeps the stale checkpoint and no scratch.
  EXPECT_FALSE(fs::exists(root_ / split[1] / ".tmp-recv-rank1"));
  EXPECT_TRUE(fs::exists(root_ / "dp_unshared_other" / "step_4" / "manifest.json"));
}

// An explicit checkpoint that rank 0 cannot use fails every rank at once with rank 0's reason,
// not after the collective timeout.
TEST_F(DataParallelTest, UnusableCheckpointOnRankZeroFailsEveryRank) {
  const std::vector<std::string> bad = {"max_steps=2", "load_checkpoint=" + (root_ / "no_such" / "step_3").string()};
  const auto errors = FailingRanks({bad, bad});
  for (const auto& e : errors) {
    EXPECT_NE(e.find("NOT_FOUND"), std::string::npos) << e;
    EXPECT_NE(e.find("no_such"), std::string::npos) << e;
  }
  EXPECT_NE(errors[1].find("rank 0"), std::string::npos) << errors[1];
}

// Ranks of several machines read their own overrides and their own copy of the data: a
// difference fails every rank at start, naming the field and both values, instead of diverging
// silently or hanging in mismatched collectives.
TEST_F(DataParallelTest, RanksThatDisagreeFailTogetherNamingTheDifference) {
  auto errors = FailingRanks({std::vector<std::string>{"max_steps=2"}, {"max_steps=2", "lr=1e-3"}});
  for (const auto& e : errors) {
    EXPECT_NE(e.find("INVALID_ARGUMENT"), std::string::npos) << e;
    EXPECT_NE(e.find("config.lr: rank 0 has 0.003, rank 1 has 0.001"), std::string::npos) << e;
  }
  // Another build of the data (fewer conversations) on rank 1.
  BuildTestDataset("alpaca_gpteacher_roleplay.json", 80, (root_ / "ds_other").string());
  errors = FailingRanks(
      {std::vector<std::string>{"max_steps=2"}, {"max_steps=2", "data_paths=[" + (root_ / "ds_other").string() + "]"}});
  for (const auto& e : errors) {
    EXPECT_NE(e.find("data.train_rows"), std::string::npos) << e;
    EXPECT_NE(e.find("data.content_sha256"), std::string::npos) << e;
  }
  // What may differ per machine does not fail: paths, threads, logging.
  const auto ok = FailingRanks({std::vector<std::string>{"max_steps=2"},
                                {"max_steps=2", "threads=2", "log_interval=3", "run_dir=" + (root_ / "dp_failing_1").string()}});
  for (const auto& e : ok) EXPECT_EQ(e, "OK: rank ran");
}

// Around a checkpoint every wait for peers (gathering the carry into rank 0's checkpoint, the
// barrier after the write) reports the collective phase, whose hang budget is short: a peer
// frozen there was found only after checkpoint's budget (30 min by default).
TEST_F(DataParallelTest, WaitsForPeersAtACheckpointReportTheCollectivePhase) {
  std::array<std::string, 2> seen;
  RunRankThreads(2, [&](int rank, int port) {
    auto comm = CreateCollective(Opts(rank, 2, port));
    TrainerOptions o;
    o.progress = 0;
    o.collective = comm.get();
    o.hooks.on_phase = [&seen, rank](Phase p, int64_t step) {
      if (step == 2) seen[static_cast<size_t>(rank)] += std::string(PhaseName(p)) + " ";
    };
    Trainer t(AtProcessStart(Config("dp_phases", {"max_steps=2", "checkpoint_interval_steps=2"}), rank), o);
    t.Run();
    return Clone(t.Weights());
  });
  for (const std::string& s : seen) EXPECT_EQ(s, "allreduce checkpoint allreduce ") << "phases at step 2: " << s;
}

TEST_F(DataParallelTest, MissingPeerIsADeadlineNotAHang) {
  const int port = PickFreePort();
  auto t0 = std::chrono::steady_clock::now();
  try {
    CreateCollective(Opts(0, 2, port, 1500));  // rank 1 never comes
    FAIL() << "rendezvous succeeded without the peer";
  } catch (const Error& e) {
    EXPECT_TRUE(e.code() == Code::kDeadlineExceeded || e.code() == Code::kUnavailable) << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 30.0);
}

TEST_F(DataParallelTest, StuckPeerTimesOutTheCollective) {
  const int port = PickFreePort();
  std::unique_ptr<Collective> c1;
  std::string peer_error;
  // 5 s: the rendezvous itself must not time out on a loaded machine; an exception in the thread
  // would abort the whole suite, so it is carried out and reported.
  std::thread peer([&] {
    try {
      c1 = CreateCollective(Opts(1, 2, port, 5000));
    } catch (const std::exception& e) {
      peer_error = e.what();
    }
  });
  std::unique_ptr<Collective> c0;
  try {
    c0 = CreateCollective(Opts(0, 2, port, 5000));
  } catch (const std::exception& e) {
    peer.join();
    FAIL() << "rendezvous: " << e.what();
  }
  peer.join();
  ASSERT_TRUE(peer_error.empty()) << peer_error;
  at::Tensor t = torch::ones({4});
  auto t0 = std::chrono::steady_clock::now();
  try {
    c0->AllReduceSum(t);  // rank 1 never takes part: must fail, not hang
    ADD_FAILURE() << "all-reduce completed without the peer";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kDeadlineExceeded) << e.what();
  }
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 20.0);
}

}  // namespace
}  // namespace trm::worker
