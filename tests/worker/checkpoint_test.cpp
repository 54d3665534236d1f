// Checkpoints committed in two phases (files + manifest under a temporary name, then a rename),
// verified on load, quarantined when corrupt, never half-written even under SIGKILL.
#include "test_dataset.h"
#include "training_process.h"
#include "trm/worker/checkpoint.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <sstream>
#include <thread>

#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/common/sha256.h"
#include "trm/worker/trainer.h"

namespace trm::worker {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

// Collects what spdlog's default logger writes while alive.
class LogCapture {
 public:
  LogCapture() : sink_(std::make_shared<spdlog::sinks::ostream_sink_mt>(os_)) {
    spdlog::default_logger()->sinks().push_back(sink_);
  }
  ~LogCapture() {
    auto& s = spdlog::default_logger()->sinks();
    s.erase(std::remove(s.begin(), s.end(), sink_), s.end());
  }
  std::string str() {
    sink_->flush();
    return os_.str();
  }

 private:
  std::ostringstream os_;
  std::shared_ptr<spdlog::sinks::ostream_sink_mt> sink_;
};

void FlipByte(const fs::path& p, int64_t from_end = 1) {
  std::fstream f(p, std::ios::in | std::ios::out | std::ios::binary);
  ASSERT_TRUE(f.good()) << p;
  f.seekg(-from_end, std::ios::end);
  char c;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(-from_end, std::ios::end);
  f.write(&c, 1);
}

std::vector<fs::path> Matching(const fs::path& dir, const std::string& prefix) {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(dir))
    if (e.path().filename().string().rfind(prefix, 0) == 0) out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

class CheckpointTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    root_ = fs::temp_directory_path() / ("trm_ckpt_" + std::to_string(::getpid()));
    fs::create_directories(root_);
    BuildTestDataset("sharegpt_fastchat_dummy.json", 120, (root_ / "ds").string());
  }
  static void TearDownTestSuite() { fs::remove_all(root_); }

  static std::vector<std::string> Overrides(const std::string& run, std::vector<std::string> extra = {}) {
    // The shared tiny run, with more epochs and ACT exploration on (RNG state matters for resume).
    std::vector<std::string> ov = TinyRunOverrides((root_ / "ds").string(), (root_ / run).string());
    ov.insert(ov.end(), {"epochs=4", "lr_warmup_steps=3", "arch.halt_exploration_prob=0.5"});
    ov.insert(ov.end(), extra.begin(), extra.end());
    return ov;
  }
  static TrainConfig Config(const std::string& run, std::vector<std::string> extra = {}) {
    return LoadTrainConfig(std::string(TRM_SOURCE_DIR) + "/configs", "cfg_tiny", Overrides(run, extra));
  }
  static TrainerOptions Quiet() {
    TrainerOptions o;
    o.progress = 0;
    return o;
  }
  // Trains `run` to max_steps with a checkpoint every `every` steps.
  static void Train(const std::string& run, int steps, int every, std::vector<std::string> extra = {}) {
    extra.push_back("max_steps=" + std::to_string(steps));
    extra.push_back("checkpoint_interval_steps=" + std::to_string(every));
    Trainer t(AtProcessStart(Config(run, extra)), Quiet());
    t.Run();
  }

  static fs::path root_;
};
fs::path CheckpointTest::root_;

// (a) The manifest lists every file but itself, with its size and SHA-256.
TEST_F(CheckpointTest, ManifestHashesMatch) {
  Train("manifest", 2, 0, {"ema=true"});
  const fs::path dir = root_ / "manifest" / "step_2";
  ASSERT_TRUE(fs::exists(dir / "manifest.json"));
  json m = json::parse(ReadFile((dir / "manifest.json").string()));
  EXPECT_EQ(m["format"], 1);
  EXPECT_EQ(m["step"], 2);
  std::set<std::string> listed;
  for (const auto& f : m["files"]) {
    const std::string rel = f["path"];
    listed.insert(rel);
    EXPECT_EQ(f["size"].get<uint64_t>(), fs::file_size(dir / rel)) << rel;
    EXPECT_EQ(f["sha256"].get<std::string>(), Sha256File((dir / rel).string())) << rel;
  }
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    const std::string rel = e.path().lexically_relative(dir).generic_string();
    if (rel != "manifest.json") EXPECT_TRUE(listed.count(rel)) << rel << " not in the manifest";
  }
  for (const char* f : {"state.json", "model.safetensors", "weights.safetensors", "optimizer.safetensors",
                        "train_state.safetensors"})
    EXPECT_TRUE(listed.count(f)) << f;
  EXPECT_TRUE(std::any_of(listed.begin(), listed.end(), [](const std::string& s) { return s.rfind("tokenizer/", 0) == 0; }));
  EXPECT_FALSE(listed.count("manifest.json"));
  EXPECT_EQ(VerifyCheckpoint(dir.string()), Verified::kOk);
  EXPECT_TRUE(Matching(root_ / "manifest", ".tmp").empty());
}

// (b) A corrupt newest checkpoint is quarantined on resume, which falls back to the previous one.
TEST_F(CheckpointTest, CorruptNewestIsQuarantinedAndResumeFallsBack) {
  Train("quarantine", 6, 2);
  const fs::path run = root_ / "quarantine";
  ASSERT_EQ(ListCheckpoints(run.string()).size(), 3u);
  FlipByte(run / "step_6" / "model.safetensors");
  // Read-only lookups skip it without renaming anything.
  EXPECT_EQ(LatestCheckpoint(run.string()), (run / "step_4").string());
  ASSERT_TRUE(fs::exists(run / "step_6"));

  LogCapture log;
  Trainer t(AtProcessStart(Config("quarantine", {"max_steps=8", "resume=true"})), Quiet());
  EXPECT_EQ(t.step(), 4);
  EXPECT_FALSE(fs::exists(run / "step_6"));
  auto q = Matching(run, "step_6.quarantined-");
  ASSERT_EQ(q.size(), 1u);
  EXPECT_TRUE(fs::exists(q[0] / "model.safetensors"));  // kept, not deleted
  const std::string logged = log.str();
  EXPECT_NE(logged.find("step_6/model.safetensors: SHA-256"), std::string::npos) << logged;
  EXPECT_NE(logged.find("quarantined as"), std::string::npos) << logged;

  // Training goes on; the quarantined directory is neither listed nor touched.
  TrainResult r = t.Run();
  EXPECT_EQ(r.steps, 8);
  auto all = ListCheckpoints(run.string());
  ASSERT_FALSE(all.empty());
  EXPECT_EQ(all.back().first, 8);
  for (const auto& [step, dir] : all) EXPECT_EQ(VerifyCheckpoint(dir), Verified::kOk) << dir;
  EXPECT_TRUE(fs::exists(q[0]));
}

// Every checkpoint failing: a fresh start (and all of them quarantined).
TEST_F(CheckpointTest, NothingVerifiesMeansAFreshStart) {
  Train("allbad", 2, 1);
  const fs::path run = root_ / "allbad";
  FlipByte(run / "step_1" / "state.json", 3);
  fs::remove(run / "step_2" / "optimizer.safetensors");
  Trainer t(AtProcessStart(Config("allbad", {"max_steps=3", "resume=true"})), Quiet());
  EXPECT_EQ(t.step(), 0);
  EXPECT_TRUE(ListCheckpoints(run.string()).empty());
  EXPECT_EQ(Matching(run, "step_1.quarantined-").size(), 1u);
  EXPECT_EQ(Matching(run, "step_2.quarantined-").size(), 1u);
}

// (c) An explicit load_checkpoint that fails verification is kDataLoss naming the file.
TEST_F(CheckpointTest, ExplicitLoadOfACorruptCheckpointIsDataLoss) {
  Train("explicit", 2, 0);
  const fs::path src = root_ / "explicit" / "step_2";
  const fs::path copy = root_ / "explicit_copy";
  fs::copy(src, copy, fs::copy_options::recursive);
  FlipByte(copy / "train_state.safetensors", 7);
  try {
    Trainer t(AtProcessStart(Config("explicit_target", {"max_steps=3", "load_checkpoint=" + copy.string()})), Quiet());
    FAIL() << "loaded a corrupt checkpoint";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kDataLoss) << e.what();
    EXPECT_NE(std::string(e.what()).find("train_state.safetensors"), std::string::npos) << e.what();
  }
  EXPECT_TRUE(fs::exists(copy / "train_state.safetensors"));  // an explicit choice is not quarantined
  EXPECT_TRUE(Matching(root_, "explicit_copy.quarantined").empty());

  // The other mismatches, through the same check.
  auto expect_loss = [&](const fs::path& dir, const std::string& needle) {
    try {
      LoadCheckpoint(dir.string());
      ADD_FAILURE() << dir << ": loaded";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Code::kDataLoss) << e.what();
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  const fs::path c2 = root_ / "explicit_c2", c3 = root_ / "explicit_c3", c4 = root_ / "explicit_c4";
  for (const auto& c : {c2, c3, c4}) fs::copy(src, c, fs::copy_options::recursive);
  fs::remove(c2 / "optimizer.safetensors");
  expect_loss(c2, "optimizer.safetensors: missing");
  fs::copy_file(c3 / "model.safetensors", c3 / "weights.safetensors");  // unlisted, and the loader reads it
  expect_loss(c3, "weights.safetensors: not listed");
  { std::ofstream(c4 / "state.json", std::ios::app) << " "; }
  expect_loss(c4, "state.json: size");
  // An unlisted file the loader never reads is only a warning.
  fs::remove_all(c2);
  fs::copy(src, c2, fs::copy_options::recursive);
  { std::ofstream(c2 / "NOTES.txt") << "hello"; }
  EXPECT_EQ(VerifyCheckpoint(c2.string()), Verified::kOk);
  EXPECT_NO_THROW(LoadCheckpoint(c2.string()));
}

// Checkpoints written before manifests existed still resume, with a warning.
TEST_F(CheckpointTest, LegacyCheckpointLoadsWithAWarning) {
  Train("legacy", 3, 3);
  fs::remove(root_ / "legacy" / "step_3" / "manifest.json");
  LogCapture log;
  Trainer t(AtProcessStart(Config("legacy", {"max_steps=4", "resume=true"})), Quiet());
  EXPECT_EQ(t.step(), 3);
  EXPECT_NE(log.str().find("legacy checkpoint"), std::string::npos) << log.str();
  EXPECT_TRUE(fs::exists(root_ / "legacy" / "step_3"));
}

// (d) A crash mid-save leaves only a temporary directory: never loaded, removed at the next resume.
TEST_F(CheckpointTest, PartialTemporaryDirectoryIsIgnoredAndRemoved) {
  Train("partial", 4, 2);
  const fs::path run = root_ / "partial";
  const fs::path tmp = run / ".tmp-step_6-999999";
  fs::create_directories(tmp / "tokenizer");
  fs::copy_file(run / "step_4" / "model.safetensors", tmp / "model.safetensors");
  fs::resize_file(tmp / "model.safetensors", fs::file_size(tmp / "model.safetensors") / 2);
  { std::ofstream(tmp / "state.json") << R"({"step": 6})"; }
  EXPECT_EQ(ListCheckpoints(run.string()).back().first, 4);
  EXPECT_EQ(LatestCheckpoint(run.string()), (run / "step_4").string());
  Trainer t(AtProcessStart(Config("partial", {"max_steps=5", "resume=true"})), Quiet());
  EXPECT_EQ(t.step(), 4);
  EXPECT_FALSE(fs::exists(tmp));
  // And a save removes one too.
  fs::create_directories(tmp);
  t.Run();
  EXPECT_FALSE(fs::exists(tmp));
  EXPECT_TRUE(fs::exists(run / "step_5" / "manifest.json"));
}

// (d) The real thing: trm-train SIGKILLed at random moments while it checkpoints every step.
// After every kill the newest committed checkpoint verifies and loads, and no step_<N> without a
// manifest (half-written or half-deleted) exists.
TEST_F(CheckpointTest, SigkillAtRandomMomentsNeverLeavesAHalfWrittenCheckpoint) {
  const std::string bin = std::string(TRM_BIN_DIR) + "/trm-train";
  ASSERT_TRUE(fs::exists(bin)) << bin;
  const fs::path run = root_ / "sigkill";
  std::random_device rd;
  const unsigned seed = rd();
  std::mt19937 gen(seed);
  SCOPED_TRACE("seed " + std::to_string(seed));
  std::uniform_int_distribution<int> delay_ms(0, 400);
  int64_t newest = 0;
  int saw_tmp = 0;
  for (int kill_no = 0; kill_no < 5; ++kill_no) {
    std::vector<std::string> args = {bin, "--config-dir", std::string(TRM_SOURCE_DIR) + "/configs", "--config-name",
                                     "cfg_tiny", "--no-progress"};
    for (auto& o : Overrides("sigkill", {"epochs=1000", "checkpoint_interval_steps=1", "keep_checkpoints=3",
                                         "resume=true"}))
      args.push_back(o);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const std::string log_path = (root_ / ("sigkill_" + std::to_string(kill_no) + ".log")).string();
    int log_fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    ASSERT_GE(log_fd, 0);
    pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::dup2(log_fd, 1);
      ::dup2(log_fd, 2);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(log_fd);
    // Wait until this child has committed a checkpoint of its own (it is in its save-every-step
    // loop), then kill it at a random moment of that loop.
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
    int status = 0;
    bool exited = false;
    while (!exited && std::chrono::steady_clock::now() < deadline) {
      auto now = ListCheckpoints(run.string());
      if (!now.empty() && now.back().first > newest) break;
      exited = ::waitpid(pid, &status, WNOHANG) == pid;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    const int ms = delay_ms(gen);
    if (!exited) {
      std::this_thread::sleep_for(std::chrono::milliseconds(ms));
      ::kill(pid, SIGKILL);
      ASSERT_EQ(::waitpid(pid, &status, 0), pid);
    }
    ASSERT_TRUE(WIFSIGNALED(status)) << "trm-train ended by itself before the kill (" << ms
                                     << " ms); log: " << ReadFile(log_path);
    SCOPED_TRACE("kill " + std::to_string(kill_no) + " after " + std::to_string(ms) + " ms");

    ASSERT_TRUE(fs::exists(run)) << "no checkpoint in 20 s; log: " << ReadFile(log_path);
    saw_tmp += static_cast<int>(Matching(run, ".tmp-").size());
    for (const auto& e : fs::directory_iterator(run)) {
      const std::string name = e.path().filename().string();
      EXPECT_EQ(name.find("quarantined"), std::string::npos) << name;
      if (name.rfind("step_", 0) == 0) {
        EXPECT_TRUE(fs::exists(e.path() / "manifest.json")) << name << " is not committed";
      }
    }
    auto all = ListCheckpoints(run.string());
    for (const auto& [step, dir] : all) {
      EXPECT_NO_THROW(EXPECT_EQ(VerifyCheckpoint(dir), Verified::kOk)) << dir;
    }
    ASSERT_FALSE(all.empty());
    EXPECT_GT(all.back().first, newest) << "no progress, or resume went backwards";
    newest = all.back().first;
    std::string dir = ResumeCheckpoint(run.string());
    EXPECT_EQ(dir, all.back().second);
    LoadedCheckpoint ck = LoadCheckpoint(dir);
    EXPECT_EQ(ck.state["step"].get<int64_t>(), newest);
    EXPECT_TRUE(Matching(run, ".tmp-").empty()) << "a resume removes the temporary directories";
  }
  RecordProperty("temporary_dirs_left_by_kills", saw_tmp);
  // And the trainer resumes from it.
  Trainer t(AtProcessStart(Config("sigkill", {"epochs=1000", "resume=true", "max_steps=" + std::to_string(newest + 1)})),
            Quiet());
  EXPECT_EQ(t.step(), newest);
}

// (e) Retention keeps the newest committed checkpoints; quarantined and foreign directories are
// neither counted nor deleted.
TEST_F(CheckpointTest, RetentionKeepsTheNewestCommitted) {
  const fs::path run = root_ / "retention";
  Train("retention", 3, 1);
  ASSERT_EQ(ListCheckpoints(run.string()).size(), 3u);
  fs::rename(run / "step_3", run / "step_3.quarantined-123");
  fs::create_directories(run / "step_99");  // not a checkpoint: no manifest, no state.json
  auto all = ListCheckpoints(run.string());
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all.back().first, 2);

  Train("retention", 6, 1, {"resume=true", "keep_checkpoints=2"});
  all = ListCheckpoints(run.string());
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, 5);
  EXPECT_EQ(all[1].first, 6);
  EXPECT_TRUE(fs::exists(run / "step_3.quarantined-123" / "model.safetensors"));
  EXPECT_TRUE(fs::exists(run / "step_99"));
  EXPECT_TRUE(Matching(run, ".tmp").empty());

  // Saving an older step than the newest (e.g. a run restarted from an explicit older checkpoint)
  // with keep=1 keeps both the newest and the one just written.
  CheckpointContents c;
  c.model = {{"w", torch::ones({2, 2})}};
  c.state = {{"step", 4}};
  c.arch = json::object();
  SaveCheckpoint(run.string(), c, 1);
  all = ListCheckpoints(run.string());
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0].first, 4);
  EXPECT_EQ(all[1].first, 6);

  // The same step saved again replaces it in one atomic exchange.
  c.model = {{"w", torch::zeros({2, 2})}};
  SaveCheckpoint(run.string(), c, 0);
  LoadedCheckpoint ck = LoadCheckpoint((run / "step_4").string(), true);
  EXPECT_TRUE(torch::equal(ck.model.at("w"), torch::zeros({2, 2})));
  EXPECT_TRUE(Matching(run, ".tmp").empty());
}

}  // namespace
}  // namespace trm::worker
