// trm-eval's evaluation (trm/worker/evaluation.h): on a checkpoint it equals the trainer's own
// evaluation at that step and a PyTorch evaluation of the same model.safetensors by the reference
// model (tests/tools/ref_eval.py), within 1e-4 relative; it refuses data the model was not
// trained on, missing splits and damaged checkpoints, and accepts a weights-only checkpoint.
#include "test_dataset.h"
#include "training_process.h"
#include "trm/worker/evaluation.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/common/sha256.h"
#include "trm/data/batch_iterator.h"
#include "trm/worker/checkpoint.h"
#include "trm/worker/step_metrics.h"
#include "trm/worker/trainer.h"

namespace trm::worker {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

constexpr double kTolerance = 1e-4;

void ExpectClose(const std::string& what, double got, double want) {
  EXPECT_LE(std::abs(got - want), kTolerance * std::max(std::abs(want), 1e-6)) << what << ": " << got << " vs " << want;
}

class EvaluationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("trm_evaluation_" + std::to_string(::getpid()));
    fs::create_directories(root_);
    BuildTestDataset("sharegpt_fastchat_dummy.json", 200, Dataset());  // 190 train / 10 test rows
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }
  static std::string Dataset() { return (root_ / "ds").string(); }

  // A short run ending with an evaluation and a checkpoint at the same step.
  static TrainResult Train(const std::string& run, std::vector<std::string> extra) {
    std::vector<std::string> ov = TinyRunOverrides(Dataset(), (root_ / run).string());
    ov.insert(ov.end(), {"epochs=2", "eval_interval=2"});
    ov.insert(ov.end(), extra.begin(), extra.end());
    TrainerOptions quiet;
    quiet.progress = 0;
    Trainer t(AtProcessStart(LoadTrainConfig(std::string(TRM_SOURCE_DIR) + "/configs", "cfg_tiny", ov)), quiet);
    return t.Run();
  }

  static CheckpointEvalResult Evaluate(const std::string& checkpoint, const std::string& data = Dataset(),
                                       const std::string& dtype = "auto") {
    CheckpointEvalOptions o;
    o.checkpoint = checkpoint;
    o.data = data;
    o.dtype = dtype;
    return EvaluateCheckpoint(o);
  }

  // The PyTorch reference's evaluation of the same files (ref_eval.py's one JSON line).
  static json ReferenceEvaluation(const std::string& checkpoint, int64_t batch) {
    const std::string cmd = "TRM_REFERENCE_DIR=" + std::string(TRM_SHARED_DIR) + "/reference /usr/bin/python3 " +
                            std::string(TRM_SOURCE_DIR) + "/tests/tools/ref_eval.py " + checkpoint + " " + Dataset() +
                            " --batch-size " + std::to_string(batch);
    FILE* p = ::popen(cmd.c_str(), "r");
    EXPECT_NE(p, nullptr) << cmd;
    if (!p) return {};
    std::string out;
    char buf[4096];
    for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
    const int status = ::pclose(p);
    EXPECT_EQ(status, 0) << cmd << "\n" << out;
    return status == 0 ? json::parse(out) : json();
  }

  static void ExpectEqualsReference(const CheckpointEvalResult& r, const json& ref) {
    ASSERT_TRUE(ref.contains("metrics"));
    EXPECT_EQ(r.rows, ref["rows"].get<int64_t>());
    for (const auto& [name, value] : ref["metrics"].items()) {
      ASSERT_TRUE(r.metrics.count(name)) << name;
      ExpectClose("reference " + name, r.metrics.at(name), value.get<double>());
    }
  }

  // Every value the trainer's evaluation reports, against trm-eval's name for it.
  static void ExpectEqualsTrainer(const CheckpointEvalResult& r, const EvalMetrics& trained) {
    ASSERT_FALSE(trained.values.empty());
    for (const auto& [name, value] : trained.values) {
      const std::string ours = name == metric_key::kActSteps ? "steps" : name;
      if (name == metric_key::kRows) {
        EXPECT_EQ(r.rows, static_cast<int64_t>(value));
        continue;
      }
      ASSERT_TRUE(r.metrics.count(ours)) << ours;
      ExpectClose("trainer " + name, r.metrics.at(ours), value);
    }
  }

  static fs::path root_;
};
fs::path EvaluationTest::root_;

TEST_F(EvaluationTest, EqualsTheTrainerAndThePyTorchReference) {
  // Deep ACT (every call up to halt_max_steps) with softmax; one ACT step with EMA weights and
  // stablemax.
  for (const auto& [run, extra] : std::vector<std::pair<std::string, std::vector<std::string>>>{
           {"act3", {"arch.halt_max_steps=3"}},
           {"ema_stablemax", {"arch.halt_max_steps=1", "ema=true", "ema_rate=0.9", "arch.loss.loss_type=stablemax_cross_entropy"}}}) {
    SCOPED_TRACE(run);
    TrainResult t = Train(run, extra);
    ASSERT_FALSE(t.evals.empty());
    ASSERT_EQ(t.evals.back().step, t.steps);
    ASSERT_EQ(fs::path(t.last_checkpoint).filename(), "step_" + std::to_string(t.steps));
    CheckpointEvalResult r = Evaluate(t.last_checkpoint);
    EXPECT_EQ(r.checkpoint, t.last_checkpoint);
    EXPECT_EQ(r.rows, 10);
    ExpectEqualsTrainer(r, t.evals.back());
    ExpectEqualsReference(r, ReferenceEvaluation(t.last_checkpoint, 8));
    ExpectClose("perplexity", r.metrics.at("perplexity"), std::exp(r.metrics.at("token_loss")));
    // A run directory means its newest checkpoint.
    EXPECT_EQ(Evaluate((root_ / run).string()).metrics, r.metrics);
  }
}

// A checkpoint whose model ran in bfloat16 (as GPU runs train; the CPU trainer uses float32):
// trm-eval in the checkpoint's dtype equals that model's own evaluation, and in float32 (the CPU
// default) the PyTorch reference's of the same weights.
TEST_F(EvaluationTest, BfloatTrainedCheckpoint) {
  data::BatchConfig bc;
  bc.global_batch = 8;
  bc.seed = 3;
  data::BatchIterator train = data::BatchIterator::Open({Dataset()}, "train", bc);
  json arch = {{"vocab_size", train.meta().vocab_size}, {"seq_len", train.meta().seq_len}, {"batch_size", 8},
               {"hidden_size", 32}, {"num_heads", 2}, {"L_layers", 1}, {"H_cycles", 2}, {"L_cycles", 1},
               {"halt_max_steps", 2}, {"halt_exploration_prob", 0.0}, {"forward_dtype", "bfloat16"}};
  torch::manual_seed(5);
  model::Trm m(model::ArchConfig::FromJson(arch, "test arch"));
  m->ResetParameters(5);
  torch::optim::AdamW opt(m->parameters(), torch::optim::AdamWOptions(3e-3));
  data::Batch b;
  train.Next(&b);
  auto to_model = [](const data::Batch& x) {
    model::Batch mb;
    mb.inputs = torch::from_blob(const_cast<int32_t*>(x.inputs.data()), {x.rows, x.seq_len}, torch::kInt32).clone();
    mb.labels = torch::from_blob(const_cast<int32_t*>(x.labels.data()), {x.rows, x.seq_len}, torch::kInt32).clone();
    return mb;
  };
  model::Carry carry = m->InitialCarry(to_model(b));
  for (int step = 0; step < 6; ++step) {
    model::StepOutput out = m->forward(carry, to_model(b));
    out.loss.backward();
    opt.step();
    opt.zero_grad();
    carry = out.carry;
    train.Next(&b);
  }
  CheckpointContents c;
  for (auto& [name, t] : m->StateDict()) c.model.emplace_back(name, t.detach().clone());
  c.arch = m->config().ToJson();
  ASSERT_EQ(c.arch["forward_dtype"], "bfloat16");
  c.state = {{"step", 6}, {"config", {{"global_batch_size", 8}}}, {"data", {{"pad_id", train.meta().pad_id}}}};
  c.tokenizer_dir = Dataset() + "/tokenizer";
  const std::string dir = SaveCheckpoint((root_ / "bf16").string(), c, 0);

  // The model's own bfloat16 evaluation, batch by batch as the trainer's.
  m->eval();
  bc.shuffle = false;
  bc.drop_last = false;
  data::BatchIterator test = data::BatchIterator::Open({Dataset()}, "test", bc);
  double lm_loss = 0, count = 0;
  for (int64_t i = 0; i < test.batches_per_epoch(); ++i) {
    test.Next(&b);
    model::Metrics mm = EvaluateBatch(m, to_model(b));
    lm_loss += mm.at("lm_loss").to(torch::kFloat64).item<double>();
    count += mm.at("count").item<double>();
  }
  CheckpointEvalResult own = Evaluate(dir, Dataset(), "bfloat16");
  EXPECT_EQ(own.metrics.at("count"), count);
  ExpectClose("bfloat16 lm_loss", own.metrics.at("lm_loss"), lm_loss / count);

  CheckpointEvalResult f32 = Evaluate(dir);
  ExpectEqualsReference(f32, ReferenceEvaluation(dir, 8));
}

// What a checkpoint needs for evaluation only: the weights, state.json, the tokenizer, and a
// manifest over exactly those (what `trmctl pull --weights-only` and the worker fetch).
TEST_F(EvaluationTest, WeightsOnlyCheckpointEvaluatesTheSame) {
  TrainResult t = Train("full", {});
  const fs::path full(t.last_checkpoint), slim = root_ / "slim" / full.filename();
  fs::create_directories(slim);
  json files = json::array();
  for (const auto& e : fs::recursive_directory_iterator(full)) {
    const std::string rel = fs::relative(e.path(), full).generic_string();
    const bool keep = rel == "model.safetensors" || rel == "state.json" || rel.rfind("tokenizer", 0) == 0;
    if (!keep) continue;
    if (e.is_directory()) {
      fs::create_directories(slim / rel);
      continue;
    }
    fs::copy_file(e.path(), slim / rel);
    files.push_back({{"path", rel}, {"size", fs::file_size(e.path())}, {"sha256", Sha256File(e.path().string())}});
  }
  ASSERT_GE(files.size(), 3u);
  WriteFileAtomic((slim / "manifest.json").string(), json{{"format", 1}, {"step", t.steps}, {"files", files}}.dump());
  EXPECT_EQ(Evaluate(slim.string()).metrics, Evaluate(full.string()).metrics);
}

TEST_F(EvaluationTest, RefusesDataTheModelWasNotTrainedOn) {
  TrainResult t = Train("refuse", {});
  // The same arrays under a dataset.json that disagrees, one field at a time.
  for (const auto& [field, value] : std::vector<std::pair<std::string, int>>{{"vocab_size", 300}, {"pad_id", 3}}) {
    SCOPED_TRACE(field);
    const fs::path other = root_ / ("other_" + field);
    fs::remove_all(other);
    fs::copy(Dataset(), other, fs::copy_options::recursive);
    json meta = json::parse(ReadFile((other / "test" / "dataset.json").string()));
    const int64_t before = meta[field].get<int64_t>();
    meta[field] = value;
    WriteFileAtomic((other / "test" / "dataset.json").string(), meta.dump());
    try {
      Evaluate(t.last_checkpoint, other.string());
      ADD_FAILURE() << "evaluated on a dataset whose " << field << " differs";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Code::kInvalidArgument);
      const std::string msg = e.what();
      EXPECT_NE(msg.find(field + " " + std::to_string(value)), std::string::npos) << msg;
      EXPECT_NE(msg.find(std::to_string(before)), std::string::npos) << msg;
    }
  }
  // Another row length.
  const std::string short_rows = (root_ / "short").string();
  data::BuildOptions bo;
  bo.input = std::string(TRM_SHARED_DIR) + "/data/sharegpt_fastchat_dummy.json";
  bo.tokenizer = "byte";
  bo.max_length = 24;
  bo.subsample_size = 40;
  bo.output_dir = short_rows;
  data::BuildDataset(bo);
  try {
    Evaluate(t.last_checkpoint, short_rows);
    ADD_FAILURE() << "evaluated 24-token rows with a 32-token model";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("seq_len 24 does not match the checkpoint's 32"), std::string::npos) << e.what();
  }
  // No such split.
  try {
    CheckpointEvalOptions o;
    o.checkpoint = t.last_checkpoint;
    o.data = Dataset();
    o.split = "validation";
    EvaluateCheckpoint(o);
    ADD_FAILURE() << "evaluated a split that does not exist";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kNotFound);
    EXPECT_NE(std::string(e.what()).find("no 'validation' split"), std::string::npos) << e.what();
  }
}

TEST_F(EvaluationTest, RefusesADamagedCheckpoint) {
  TrainResult t = Train("damaged", {});
  const std::string weights = t.last_checkpoint + "/model.safetensors";
  std::string bytes = ReadFile(weights);
  bytes[bytes.size() / 2] ^= 0x5a;
  {
    std::ofstream out(weights, std::ios::binary | std::ios::trunc);
    out << bytes;
  }
  try {
    Evaluate(t.last_checkpoint);
    ADD_FAILURE() << "evaluated a checkpoint whose weights do not match its manifest";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kDataLoss);
    EXPECT_NE(std::string(e.what()).find("model.safetensors"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace trm::worker
