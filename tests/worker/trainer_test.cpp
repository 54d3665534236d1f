#include "test_dataset.h"
#include "training_process.h"
#include "trm/worker/trainer.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "trm/common/cpu_features.h"
#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/model/safetensors.h"
#include "trm/worker/checkpoint.h"

namespace trm::worker {
namespace {

namespace fs = std::filesystem;

class TrainerTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("trm_trainer_" + std::to_string(::getpid()));
    fs::create_directories(root_);
    BuildTestDataset("sharegpt_fastchat_dummy.json", 120, (root_ / "ds").string());
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  // The shared tiny run, with more epochs and ACT exploration on (RNG state matters for resume).
  static TrainConfig Config(const std::string& run, std::vector<std::string> extra = {}) {
    std::vector<std::string> ov = TinyRunOverrides((root_ / "ds").string(), (root_ / run).string());
    ov.insert(ov.end(), {"epochs=4", "lr_warmup_steps=3", "lr_min_ratio=0.1", "arch.halt_exploration_prob=0.5"});
    ov.insert(ov.end(), extra.begin(), extra.end());
    return LoadTrainConfig(std::string(TRM_SOURCE_DIR) + "/configs", "cfg_tiny", ov);
  }

  static TrainerOptions Quiet() {
    TrainerOptions o;
    o.progress = 0;
    return o;
  }

  static std::vector<nlohmann::json> Metrics(const std::string& run) {
    std::vector<nlohmann::json> out;
    std::ifstream in(root_ / run / "metrics.jsonl");
    std::string line;
    while (std::getline(in, line)) {
      auto j = nlohmann::json::parse(line);
      if (!j.contains("eval")) out.push_back(j);
    }
    return out;
  }

  static fs::path root_;
};
fs::path TrainerTest::root_;

TEST_F(TrainerTest, LossFalls) {
  Trainer t(AtProcessStart(Config("falls", {"max_steps=40"})), Quiet());
  TrainResult r = t.Run();
  EXPECT_EQ(r.steps, 40);
  auto m = Metrics("falls");
  ASSERT_EQ(m.size(), 40u);
  double first = 0, last = 0;
  for (int i = 0; i < 5; ++i) first += m[i]["lm_loss"].get<double>() / 5;
  for (int i = 35; i < 40; ++i) last += m[i]["lm_loss"].get<double>() / 5;
  EXPECT_LT(last, 0.8 * first) << "first " << first << " last " << last;
  EXPECT_FALSE(r.last_checkpoint.empty());
}

// The bar of the issue: interrupted at step n and resumed == uninterrupted, bit for bit.
TEST_F(TrainerTest, ResumeIsBitExact) {
  const std::vector<std::string> common = {"max_steps=14", "gradient_accumulation_steps=2", "ema=true",
                                           "optimizer=adam_atan2", "grad_clip_norm=1.0"};
  auto with = [&](std::vector<std::string> more) {
    std::vector<std::string> v = common;
    v.insert(v.end(), more.begin(), more.end());
    return v;
  };
  Trainer full(AtProcessStart(Config("full", common)), Quiet());
  full.Run();

  {
    Trainer first(AtProcessStart(Config("split", with({"max_steps=6"}))), Quiet());
    TrainResult r = first.Run();
    ASSERT_EQ(r.steps, 6);
    ASSERT_TRUE(fs::exists(root_ / "split" / "step_6"));
  }
  {
    // A fresh process state: other RNG draws happen before the resume, which must not matter.
    torch::manual_seed(12345);
    (void)torch::rand({100});
    Trainer second(AtProcessStart(Config("split", with({"resume=true"}))), Quiet());
    EXPECT_EQ(second.step(), 6);
    TrainResult r = second.Run();
    ASSERT_EQ(r.steps, 14);
    auto a = full.Weights(), b = second.Weights();
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i) {
      EXPECT_TRUE(torch::equal(a[i].second, b[i].second)) << a[i].first;
    }
  }
  auto ma = Metrics("full"), mb = Metrics("split");
  ASSERT_EQ(ma.size(), 14u);
  ASSERT_EQ(mb.size(), 14u);  // the metrics file reads as one run
  for (size_t i = 0; i < ma.size(); ++i) {
    EXPECT_EQ(ma[i]["lm_loss"].get<double>(), mb[i]["lm_loss"].get<double>()) << "step " << i + 1;
    EXPECT_EQ(ma[i]["act_steps"].get<double>(), mb[i]["act_steps"].get<double>()) << "step " << i + 1;
  }
  // The EMA weights are what model.safetensors exports; they match too.
  LoadedCheckpoint ca = LoadCheckpoint(LatestCheckpoint((root_ / "full").string()), true);
  LoadedCheckpoint cb = LoadCheckpoint(LatestCheckpoint((root_ / "split").string()), true);
  for (const auto& [n, t] : ca.model) EXPECT_TRUE(torch::equal(t, cb.model.at(n))) << n;
}

TEST_F(TrainerTest, CancelCheckpointsAndRetentionKeepsTheNewest) {
  std::atomic<bool> cancel{false};
  TrainerOptions o = Quiet();
  o.cancel = &cancel;
  o.hooks.on_step = [&](const StepMetrics& m) {
    if (m.step == 9) cancel = true;
  };
  Trainer t(AtProcessStart(Config("cancel", {"checkpoint_interval_steps=2", "keep_checkpoints=2"})), o);
  TrainResult r = t.Run();
  EXPECT_TRUE(r.cancelled);
  EXPECT_EQ(r.steps, 9);
  auto all = ListCheckpoints((root_ / "cancel").string());
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, 8);
  EXPECT_EQ(all[1].first, 9);
  // No temporary directories left behind.
  for (const auto& e : fs::directory_iterator(root_ / "cancel"))
    EXPECT_EQ(e.path().filename().string().rfind(".tmp", 0), std::string::npos) << e.path();
}

// bfloat16 training tracks float32 on the CPU (where it has native bfloat16: AVX512_BF16 or AMX):
// the mean lm_loss over the last 50 of 200 steps on real chat data within 2 %, for the tiny
// preset's architecture (cfg_tiny: 2 layers, hidden 128, 2 x 2 cycles, 4 ACT steps) and the chat
// preset's (cfg_chat: 4 layers, 12 heads, hidden 384), on 3,000 Alpaca-format conversations as
// 32-token byte sequences, batch 16, lr 3e-4: about one pass, so the loss measures learning, not
// memorising (on the suite's 120 rows both curves are chaotic enough at these step counts that two
// float32 kernel sets alone end up to 8 % apart: docs/performance.md). On the AMX machine: tiny
// 0.65 %, chat 0.46 % apart. Without native bfloat16 the trainer runs float32 instead.
TEST_F(TrainerTest, Bfloat16TracksFloat32OnTheCpu) {
  if (!HostCpu().native_bf16()) GTEST_SKIP() << "no native bfloat16 on this CPU (" << HostCpu().isa() << ")";
  BuildTestDataset("alpaca_gpteacher_roleplay.json", 3000, (root_ / "alpaca").string());
  for (const std::string config : {"cfg_tiny", "cfg_chat"}) {
    auto final_loss = [&](const std::string& run, const std::string& dtype) {
      const std::vector<std::string> ov = {
          "data_paths=[" + (root_ / "alpaca").string() + "]", "run_dir=" + (root_ / run).string(),
          "global_batch_size=16", "epochs=40", "max_steps=200", "eval_interval=0", "lr=3e-4", "lr_warmup_steps=20",
          "lr_min_ratio=0.1", "threads=1", "arch.forward_dtype=" + dtype};
      Trainer t(AtProcessStart(LoadTrainConfig(std::string(TRM_SOURCE_DIR) + "/configs", config, ov)), Quiet());
      TrainResult r = t.Run();
      EXPECT_EQ(LoadCheckpoint(r.last_checkpoint, /*inference_only=*/true).arch["forward_dtype"], dtype);
      auto m = Metrics(run);
      EXPECT_EQ(m.size(), 200u) << config;
      double loss = 0;
      for (size_t i = m.size() - 50; i < m.size(); ++i) loss += m[i]["lm_loss"].get<double>() / 50;
      return loss;
    };
    const double f32 = final_loss(config + "_f32", "float32"), bf16 = final_loss(config + "_bf16", "bfloat16");
    EXPECT_LT(std::abs(bf16 - f32), 0.02 * f32) << config << ": float32 " << f32 << " bfloat16 " << bf16;
    EXPECT_LT(f32, 0.5 * Metrics(config + "_f32")[0]["lm_loss"].get<double>()) << config;  // it trained
  }
}

// fused_cpu_kernels (the default) trains as the reference's op sequence does, up to rounding:
// the same losses within 1e-5 at the first step and 1% over the last ones, and not bit for bit
// (the key does switch the kernels).
TEST_F(TrainerTest, FusedCpuKernelsTrackTheReferenceOps) {
  auto losses = [&](const std::string& run, const std::string& fused) {
    Trainer t(AtProcessStart(Config(run, {"max_steps=40", "fused_cpu_kernels=" + fused})), Quiet());
    EXPECT_EQ(t.Run().steps, 40);
    std::vector<double> out;
    for (const auto& m : Metrics(run)) out.push_back(m["lm_loss"].get<double>());
    return out;
  };
  const std::vector<double> fused = losses("kernels_fused", "true"), ops = losses("kernels_ops", "false");
  ASSERT_EQ(fused.size(), 40u);
  ASSERT_EQ(ops.size(), 40u);
  EXPECT_NEAR(fused[0], ops[0], 1e-5 * ops[0]);
  double a = 0, b = 0;
  for (int i = 35; i < 40; ++i) a += fused[i] / 5, b += ops[i] / 5;
  EXPECT_NEAR(a, b, 0.01 * b);
  EXPECT_NE(fused, ops);
}

TEST_F(TrainerTest, CheckpointUsesReferenceNamesAndCarriesTheTokenizer) {
  Trainer t(AtProcessStart(Config("ckpt", {"max_steps=2"})), Quiet());
  TrainResult r = t.Run();
  model::SafetensorsFile f = model::SafetensorsFile::Open(r.last_checkpoint + "/model.safetensors");
  EXPECT_TRUE(f.Has("model.inner.L_level.layers.0.self_attn.qkv_proj.weight"));
  EXPECT_TRUE(f.Has("model.inner.H_init"));
  EXPECT_TRUE(f.metadata().count("arch"));
  EXPECT_TRUE(fs::exists(r.last_checkpoint + "/tokenizer"));
  EXPECT_TRUE(fs::exists(r.last_checkpoint + "/optimizer.safetensors"));
  EXPECT_TRUE(fs::exists(r.last_checkpoint + "/train_state.safetensors"));
}

TEST_F(TrainerTest, EvaluationReportsTestMetrics) {
  Trainer t(AtProcessStart(Config("eval", {"max_steps=3"})), Quiet());
  t.Run();
  EvalMetrics em = t.Evaluate();
  EXPECT_GT(em.values.at("rows"), 0);
  EXPECT_EQ(em.values.at("count"), em.values.at("rows"));  // every row halts at full depth
  EXPECT_EQ(em.values.at("act_steps"), 3.0);
  EXPECT_GT(em.values.at("lm_loss"), 0);
}

// Evaluation swaps the EMA weights in; a failure during it (here the test split turns bad after
// the trainer started) must leave the training weights in place, not the EMA's.
TEST_F(TrainerTest, FailedEvaluationRestoresTheTrainingWeights) {
  const fs::path test_copy = root_ / "eval_fails_ds";
  fs::copy(root_ / "ds", test_copy, fs::copy_options::recursive);
  Trainer t(AtProcessStart(Config("eval_fails", {"max_steps=3", "ema=true", "data_paths_test=[" + test_copy.string() + "]"})),
            Quiet());
  t.Run();
  std::vector<std::pair<std::string, at::Tensor>> before;
  for (const auto& [n, w] : t.Weights()) before.emplace_back(n, w.detach().clone());
  // The EMA weights (what the checkpoint's model.safetensors holds) differ from the training
  // weights, so a swap left in place would show.
  LoadedCheckpoint ema = LoadCheckpoint(LatestCheckpoint((root_ / "eval_fails").string()), true);
  bool differs = false;
  for (const auto& [n, w] : before) differs = differs || !torch::equal(w, ema.model.at(n));
  ASSERT_TRUE(differs);

  WriteFileAtomic((test_copy / "test" / "dataset.json").string(), "not json");
  try {
    t.Evaluate();
    FAIL() << "evaluation on a broken test split succeeded";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kDataLoss) << e.what();
  }
  auto after = t.Weights();
  ASSERT_EQ(after.size(), before.size());
  for (size_t i = 0; i < after.size(); ++i) EXPECT_TRUE(torch::equal(after[i].second, before[i].second)) << after[i].first;
}

// The phases the loop reports for hang detection, through the phase file trm-worker reads.
TEST_F(TrainerTest, PhasesFollowTheLoopThroughThePhaseFile) {
  const std::string path = (root_ / "phases.phase").string();
  PhaseWriter writer(path);
  std::string seen;
  TrainerOptions o = Quiet();
  o.hooks.on_phase = [&](Phase p, int64_t step) {
    writer.Enter(p, step);
    const auto rec = ReadPhaseFile(path);
    ASSERT_TRUE(rec.has_value());
    EXPECT_EQ(rec->phase, p);
    EXPECT_EQ(rec->step, step);
    seen += std::string(p == Phase::kCheckpoint ? "k" : std::string(PhaseName(p)).substr(0, 1)) +
            std::to_string(step) + " ";
  };
  Trainer t(
      AtProcessStart(Config("phases", {"max_steps=4", "checkpoint_interval_steps=2", "gradient_accumulation_steps=2"})),
      o);
  t.Run();
  EXPECT_EQ(seen, "d0 c0 d0 c0 d1 c1 d1 c1 k2 d2 c2 d2 c2 d3 c3 d3 c3 k4 ")
      << "d data, c compute, k checkpoint (after the 2nd and 4th step)";
}

// Each rank's step times (the dashboard's "which rank is slow"): the time between reports goes to
// the phase that was left, and a step ends at the first report of the next one.
TEST(PhaseFile, CarriesTheLastFinishedStepsTimes) {
  const fs::path dir = fs::temp_directory_path() / ("trm_phase_t_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const std::string path = (dir / "p").string();
  PhaseWriter w(path);
  const int64_t t0 = 1'800'000'000'000'000;
  w.Enter(Phase::kStarting, 7, t0);
  w.Enter(Phase::kData, 7, t0 + 5'000'000);  // start-up is no step's
  EXPECT_EQ(ReadPhaseFile(path)->last_step.step, -1);
  w.Enter(Phase::kCompute, 7, t0 + 5'000'300);
  w.Enter(Phase::kAllReduce, 7, t0 + 5'002'300);
  w.Enter(Phase::kCompute, 7, t0 + 5'002'800);
  w.Enter(Phase::kCheckpoint, 8, t0 + 5'003'000);
  auto rec = ReadPhaseFile(path);
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->phase, Phase::kCheckpoint);
  EXPECT_EQ(rec->step, 8);
  EXPECT_EQ(rec->since_unix_ms, (t0 + 5'003'000) / 1000);
  EXPECT_EQ(rec->last_step.step, 7);
  EXPECT_EQ(rec->last_step.data_us, 300);
  EXPECT_EQ(rec->last_step.compute_us, 2000 + 200);
  EXPECT_EQ(rec->last_step.allreduce_us, 500);
  EXPECT_EQ(rec->last_step.total_us(), 3000);
  // The checkpoint's time is not step 8's, nor is its wait for peers; the step's own phases are.
  w.Enter(Phase::kAllReduce, 8, t0 + 7'000'000);
  w.Enter(Phase::kData, 8, t0 + 9'000'000);
  w.Enter(Phase::kCompute, 8, t0 + 9'000'100);
  w.Enter(Phase::kAllReduce, 8, t0 + 9'000'200);
  EXPECT_EQ(ReadPhaseFile(path)->last_step.step, 7);
  w.Enter(Phase::kData, 9, t0 + 9'010'200);
  rec = ReadPhaseFile(path);
  EXPECT_EQ(rec->last_step.step, 8);
  EXPECT_EQ(rec->last_step.data_us, 100);
  EXPECT_EQ(rec->last_step.compute_us, 100);
  EXPECT_EQ(rec->last_step.allreduce_us, 10000);
  // A record of the format before step times (a trm-train of the release before) still reads.
  WriteFileAtomic(path, "trm-phase 3 12 1796247343754 " + std::to_string((3ull * 0x9E3779B97F4A7C15ull) ^
                                                                          (12ull * 0xC2B2AE3D27D4EB4Full) ^ 1796247343754ull));
  std::string old = ReadFile(path);
  old.resize(95, ' ');
  WriteFileAtomic(path, old + "\n");
  rec = ReadPhaseFile(path);
  ASSERT_TRUE(rec.has_value());
  EXPECT_EQ(rec->phase, Phase::kAllReduce);
  EXPECT_EQ(rec->step, 12);
  EXPECT_EQ(rec->last_step.step, -1);
  fs::remove_all(dir);
}

TEST(PhaseFile, GarbageTornOrMissingReadsAsNothing) {
  const fs::path dir = fs::temp_directory_path() / ("trm_phase_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  EXPECT_FALSE(ReadPhaseFile((dir / "missing").string()).has_value());
  {
    PhaseWriter w((dir / "p").string());
    EXPECT_FALSE(ReadPhaseFile((dir / "p").string()).has_value());  // created, nothing written yet
    w.Enter(Phase::kAllReduce, 12345678901);
    const auto rec = ReadPhaseFile((dir / "p").string());
    ASSERT_TRUE(rec.has_value());
    EXPECT_EQ(rec->phase, Phase::kAllReduce);
    EXPECT_EQ(rec->step, 12345678901);
    EXPECT_GT(rec->since_unix_ms, 1700000000000);
  }
  std::string text = ReadFile((dir / "p").string());
  // A record whose step was changed (as by a torn write) fails its check.
  const size_t at = text.find("12345678901");
  text[at] = '2';
  WriteFileAtomic((dir / "p").string(), text);
  EXPECT_FALSE(ReadPhaseFile((dir / "p").string()).has_value());
  WriteFileAtomic((dir / "p").string(), std::string(200, 'x'));
  EXPECT_FALSE(ReadPhaseFile((dir / "p").string()).has_value());
  EXPECT_THROW(PhaseWriter((dir / "no/such/dir/p").string()), Error);
  fs::remove_all(dir);
}

TEST_F(TrainerTest, NonFiniteStepsAreSkipped) {
  Trainer t(AtProcessStart(Config("nan", {"max_steps=4", "lr=1e30", "lr_warmup_steps=0", "optimizer=adamw"})), Quiet());
  TrainResult r = t.Run();
  EXPECT_GT(r.skipped_steps, 0);
  EXPECT_EQ(r.steps, 4);
}

TEST_F(TrainerTest, ArchDisagreeingWithTheDataIsAnError) {
  try {
    Trainer t(AtProcessStart(Config("bad", {"arch.vocab_size=100"})), Quiet());
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("arch.vocab_size"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace trm::worker
