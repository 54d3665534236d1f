// Evaluation runs in the coordinator, driven as workers and users would drive them, without a
// server: submission checks, priority below training, the assignment, results on the
// checkpoint's record (persisted, listed, exported, ranked by), rescheduling after a lost
// worker, --eval-dataset's automatic runs, retention, weights-only checkpoints. Plus the pure
// helpers of eval_runs.h.
#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>

#include "eval_runs.h"
#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/common/sha256.h"
#include "trm/coordinator/coordinator.h"
#include "trm/coordinator/metrics.h"
#include "trm/rpc/transfer.h"

namespace fs = std::filesystem;

namespace trm::coordinator {
namespace {

std::string ErrorOf(const std::function<void()>& fn, Code* code) {
  try {
    fn();
  } catch (const Error& e) {
    *code = e.code();
    return e.what();
  }
  return "";
}

v1::EvalResult Result(const std::string& dataset, const std::string& hash, const std::string& split, double loss,
                      int64_t t) {
  v1::EvalResult r;
  r.set_dataset(dataset);
  r.set_dataset_hash(hash);
  r.set_split(split);
  (*r.mutable_metrics())["lm_loss"] = loss;
  (*r.mutable_metrics())["accuracy"] = 1.0 / loss;
  r.set_finished_unix_ms(t);
  return r;
}

TEST(EvalKeys, ParseMatchAndRank) {
  std::string d, m;
  EXPECT_TRUE(ParseEvalKey("eval[second]:lm_loss", &d, &m));
  EXPECT_EQ(d, "second");
  EXPECT_EQ(m, "lm_loss");
  EXPECT_FALSE(ParseEvalKey("eval_lm_loss", &d, &m));
  EXPECT_FALSE(ParseEvalKey("eval[]:lm_loss", &d, &m));
  EXPECT_FALSE(ParseEvalKey("eval[x]:", &d, &m));
  // The metric's name decides the direction, not the dataset's.
  EXPECT_TRUE(LowerIsBetter("eval[acc-data]:lm_loss"));
  EXPECT_FALSE(LowerIsBetter("eval[loss-data]:accuracy"));

  std::vector<v1::CheckpointRecord> list(3);
  for (int i = 0; i < 3; ++i) list[i].mutable_info()->set_name("step_" + std::to_string(i));
  const std::string hash(64, 'a');
  AddEvalResult(list[0].mutable_info(), Result("second", hash, "test", 3.0, 1));
  AddEvalResult(list[1].mutable_info(), Result("second", hash, "test", 5.0, 1));
  AddEvalResult(list[1].mutable_info(), Result("second", hash, "test", 2.0, 2));  // replaces the 5.0
  AddEvalResult(list[1].mutable_info(), Result("second", hash, "train", 9.0, 3));  // another split: kept beside
  EXPECT_EQ(list[1].info().evals_size(), 2);
  EXPECT_EQ(*CheckpointMetric(list[1].info(), "eval[second/test]:lm_loss"), 2.0);
  EXPECT_EQ(*CheckpointMetric(list[1].info(), "eval[second]:lm_loss"), 9.0);  // the newest of any split
  EXPECT_EQ(*CheckpointMetric(list[0].info(), "eval[" + hash.substr(0, 12) + "]:lm_loss"), 3.0);
  EXPECT_FALSE(CheckpointMetric(list[0].info(), "eval[" + hash.substr(0, 6) + "]:lm_loss"));  // prefix too short
  EXPECT_FALSE(CheckpointMetric(list[2].info(), "eval[second]:lm_loss"));
  EXPECT_EQ(BestCheckpoint(list, "eval[second/test]:lm_loss")->info().name(), "step_1");
  EXPECT_EQ(BestCheckpoint(list, "eval[second/test]:accuracy")->info().name(), "step_1");
  EXPECT_EQ(BestCheckpoint(list, "eval[other]:lm_loss"), nullptr);
}

TEST(EvalKeys, PlacementTakesTheTightestFit) {
  EXPECT_FALSE(PlaceEvalRun({}));
  EXPECT_FALSE(PlaceEvalRun({{"a", 0, true}}));
  EXPECT_EQ(*PlaceEvalRun({{"a", 4, true}, {"b", 1, false}, {"c", 2, true}}), "b");
}

class EvalRunsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("trm_eval_runs_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    Open();
  }
  void TearDown() override {
    c_.reset();
    fs::remove_all(root_);
  }
  void Open(const std::string& keep_best = "eval_lm_loss") {
    c_.reset();
    metrics_ = std::make_unique<CoordinatorMetrics>();
    CoordinatorOptions o;
    o.data_dir = (root_ / "state").string();
    o.config_dir = std::string(TRM_SOURCE_DIR) + "/configs";
    o.keep_last_checkpoints = 1;
    o.keep_best_metric = keep_best;
    o.now_ms = [this] { return now_; };
    o.metrics = metrics_.get();
    c_ = std::make_unique<Coordinator>(o);
  }
  void AddWorker(const std::string& id, int slots) {
    v1::RegisterRequest r;
    r.set_worker_id(id);
    r.set_host("127.0.0.1");
    r.set_slots(slots);
    r.set_device_kind("cpu");
    c_->Register(r);
  }
  v1::HeartbeatResponse Beat(const std::string& id, std::vector<std::pair<std::string, int>> running = {}) {
    v1::HeartbeatRequest h;
    h.set_worker_id(id);
    h.add_free_ports(41000);
    for (const auto& [job, attempt] : running) {
      auto* a = h.add_attempts();
      a->set_job_id(job);
      a->set_attempt(attempt);
      a->add_ranks()->set_phase(v1::PHASE_COMPUTE);
    }
    return c_->Heartbeat(h);
  }
  v1::JobSpec Train() {
    v1::JobSpec s;
    s.set_config_name("cfg_tiny");
    s.set_data_path("/data/chat");
    s.set_world_size(1);
    s.add_overrides("global_batch_size=4");
    return s;
  }
  v1::JobSpec Eval(const std::string& job, const std::string& selector, const std::string& dataset,
                   const std::string& split = "") {
    v1::JobSpec s;
    s.mutable_eval()->set_source_job(job);
    s.mutable_eval()->set_checkpoint(selector);
    s.mutable_eval()->set_dataset(dataset);
    s.mutable_eval()->set_split(split);
    return s;
  }
  void Report(const std::string& worker, const std::string& job, int attempt, std::vector<v1::WorkerEvent> evs) {
    v1::ReportEventsRequest r;
    r.set_worker_id(worker);
    r.set_job_id(job);
    r.set_attempt(attempt);
    for (auto& e : evs) *r.add_events() = e;
    c_->ReportEvents(r);
  }
  static v1::WorkerEvent Exit(int code) {
    v1::WorkerEvent e;
    e.mutable_exit()->set_exit_code(code);
    return e;
  }
  static v1::WorkerEvent ResultEvent(double loss) {
    v1::WorkerEvent e;
    (*e.mutable_eval_result()->mutable_metrics())["lm_loss"] = loss;
    (*e.mutable_eval_result()->mutable_metrics())["accuracy"] = 0.25;
    return e;
  }
  // A checkpoint as the trainer writes it: weights, optimizer state, state.json, a tokenizer,
  // its manifest.json.
  v1::CheckpointInfo Upload(const std::string& job, int attempt, int64_t step) {
    const fs::path src = root_ / ("ckpt_src_" + std::to_string(step));
    fs::create_directories(src / "tokenizer");
    std::ofstream(src / "model.safetensors") << "weights at " << step;
    std::ofstream(src / "optimizer.safetensors") << std::string(8192, 'o');  // twice the weights, and more
    std::ofstream(src / "state.json") << "{\"step\": " << step << "}";
    std::ofstream(src / "tokenizer" / "vocab.json") << "{}";
    std::ofstream(src / "manifest.json") << "{\"format\": 1}";
    v1::CheckpointUploadHeader h;
    h.set_worker_id("w1");
    h.set_job_id(job);
    h.set_attempt(attempt);
    h.mutable_info()->set_name("step_" + std::to_string(step));
    h.mutable_info()->set_step(step);
    *h.mutable_manifest() = rpc::BuildManifest(src.string(), h.info().name());
    std::vector<v1::CheckpointUpload> stream(1);
    *stream[0].mutable_header() = h;
    rpc::SendChunks(src.string(), h.manifest(), 0, [&](const v1::Chunk& c) {
      *stream.emplace_back().mutable_chunk() = c;
      return true;
    });
    auto next = std::make_shared<size_t>(0);
    return c_->UploadCheckpoint([stream, next](v1::CheckpointUpload* m) {
      if (*next == stream.size()) return false;
      *m = stream[(*next)++];
      return true;
    });
  }
  // A dataset with the given splits (one file each; the coordinator only looks at the layout).
  std::string PushDataset(const std::string& name, const std::vector<std::string>& splits) {
    const fs::path dir = root_ / ("ds_" + name);
    for (const auto& s : splits) {
      fs::create_directories(dir / s);
      std::ofstream(dir / s / "all__inputs.npy") << name << s;
    }
    std::vector<v1::TransferMessage> stream;
    rpc::SendFiles(dir.string(), rpc::BuildManifest(dir.string(), name), 0, [&](const v1::TransferMessage& m) {
      stream.push_back(m);
      return true;
    });
    auto next = std::make_shared<size_t>(0);
    return c_
        ->PushDataset([stream, next](v1::TransferMessage* m) {
          if (*next == stream.size()) return false;
          *m = stream[(*next)++];
          return true;
        })
        .content_sha256();
  }
  // A training job on w1 (1 slot) with checkpoints at the given steps, finished.
  std::string TrainedJob(const std::vector<int64_t>& steps, const v1::JobSpec& spec) {
    const std::string id = c_->SubmitJob(spec);
    c_->Tick();
    Beat("w1", {{id, 1}});
    for (int64_t s : steps) Upload(id, 1, s);
    Report("w1", id, 1, {Exit(0)});
    EXPECT_EQ(c_->GetJob(id).state(), v1::JOB_SUCCEEDED);
    return id;
  }
  std::string Exported() {
    std::string out;
    for (const auto& f : metrics_->registry()->Collect()) {
      if (f.name != "trm_checkpoint_eval") continue;
      for (const auto& m : f.metric) {
        for (const auto& l : m.label) out += l.name + "=" + l.value + ",";
        out += std::to_string(m.gauge.value) + ";";
      }
    }
    return out;
  }

  fs::path root_;
  int64_t now_ = 1000000;
  std::unique_ptr<CoordinatorMetrics> metrics_;
  std::unique_ptr<Coordinator> c_;
};

TEST_F(EvalRunsTest, BadSubmissionsAreRefusedNamingTheProblem) {
  AddWorker("w1", 1);
  Beat("w1");
  PushDataset("second", {"train", "test"});
  Code code{};
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(Eval("job-000099", "latest", "second")); }, &code).find("job-000099"),
            std::string::npos);
  EXPECT_EQ(code, Code::kNotFound);
  const std::string id = c_->SubmitJob(Train());
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(Eval(id, "latest", "second")); }, &code).find("no checkpoint"),
            std::string::npos);
  EXPECT_EQ(code, Code::kNotFound);
  c_->Tick();
  Upload(id, 1, 5);
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(Eval(id, "step:7", "second")); }, &code).find("step:7"), std::string::npos);
  EXPECT_EQ(code, Code::kNotFound);
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(Eval(id, "latest", "third")); }, &code).find("eval.dataset"),
            std::string::npos);
  EXPECT_EQ(code, Code::kNotFound);
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(Eval(id, "latest", "second", "validation")); }, &code).find("'validation'"),
            std::string::npos);
  EXPECT_EQ(code, Code::kInvalidArgument);
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(Eval(id, "latest", "")); }, &code).find("--dataset"), std::string::npos);
  EXPECT_EQ(code, Code::kInvalidArgument);
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(Eval(id, "latest", "../x")); }, &code).find("eval.dataset"),
            std::string::npos);
  EXPECT_EQ(code, Code::kInvalidArgument);
  auto train = Train();
  train.set_eval_dataset("third");
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(train); }, &code).find("spec.eval_dataset"), std::string::npos);
  EXPECT_EQ(code, Code::kNotFound);
  PushDataset("trainonly", {"train"});
  train.set_eval_dataset("trainonly");
  EXPECT_NE(ErrorOf([&] { c_->SubmitJob(train); }, &code).find("no test split"), std::string::npos);
  EXPECT_EQ(code, Code::kInvalidArgument);
}

TEST_F(EvalRunsTest, RunsAfterTrainingAndStoresItsResultOnTheCheckpoint) {
  AddWorker("w1", 1);
  Beat("w1");
  const std::string hash = PushDataset("second", {"train", "test"});
  const std::string src = TrainedJob({10, 20}, Train());
  const std::string a = c_->SubmitJob(Train());  // holds the one slot
  c_->Tick();
  EXPECT_EQ(c_->GetJob(a).state(), v1::JOB_RUNNING);
  const std::string run = c_->SubmitJob(Eval(src, "latest", hash.substr(0, 16)));
  const std::string b = c_->SubmitJob(Train());
  v1::Job rj = c_->GetJob(run);
  EXPECT_EQ(rj.kind(), "eval");
  EXPECT_EQ(rj.spec().eval().checkpoint(), "step_20");  // the selector, resolved at submission
  EXPECT_EQ(rj.spec().eval().dataset_hash(), hash);
  EXPECT_EQ(rj.spec().eval().split(), "test");
  EXPECT_EQ(rj.spec().world_size(), 1);
  EXPECT_EQ(c_->GetJob(b).kind(), "train");
  Report("w1", a, 1, {Exit(0)});
  Beat("w1");  // a fresh port for the next rendezvous
  c_->Tick();
  // The slot goes to the training job submitted after the run: training first.
  EXPECT_EQ(c_->GetJob(b).state(), v1::JOB_RUNNING);
  EXPECT_EQ(c_->GetJob(run).state(), v1::JOB_QUEUED);
  Beat("w1", {{b, 1}});
  Report("w1", b, 1, {Exit(0)});
  c_->Tick();
  ASSERT_EQ(c_->GetJob(run).state(), v1::JOB_RUNNING);
  const auto resp = Beat("w1");
  ASSERT_EQ(resp.start_size(), 1);
  const v1::Assignment& as = resp.start(0);
  EXPECT_EQ(as.job_id(), run);
  ASSERT_TRUE(as.has_eval());
  EXPECT_EQ(as.eval().source_job(), src);
  EXPECT_EQ(as.eval().checkpoint(), "step_20");
  EXPECT_EQ(as.eval().split(), "test");
  EXPECT_EQ(as.dataset_hash(), hash);
  EXPECT_EQ(as.world_size(), 1);
  EXPECT_FALSE(as.has_shard());
  Beat("w1", {{run, 1}});
  Report("w1", run, 1, {ResultEvent(1.5), Exit(0)});
  EXPECT_EQ(c_->GetJob(run).state(), v1::JOB_SUCCEEDED);

  auto list = c_->ListCheckpoints(src);  // keep-last 1: step_20 only
  ASSERT_EQ(list.size(), 1u);
  ASSERT_EQ(list[0].evals_size(), 1);
  const v1::EvalResult& r = list[0].evals(0);
  EXPECT_EQ(r.dataset(), hash.substr(0, 16));
  EXPECT_EQ(r.dataset_hash(), hash);
  EXPECT_EQ(r.split(), "test");
  EXPECT_EQ(r.eval_job_id(), run);
  EXPECT_EQ(r.finished_unix_ms(), now_);
  EXPECT_EQ(r.metrics().at("lm_loss"), 1.5);
  const std::string key = "eval[" + hash.substr(0, 16) + "]:lm_loss";
  EXPECT_EQ(c_->ResolveCheckpoint(src, "best:" + key).manifest.name(), "step_20");
  EXPECT_NE(Exported().find("checkpoint=step_20,dataset=" + hash.substr(0, 16) + ",job=" + src + ",metric=lm_loss,1.5"),
            std::string::npos)
      << Exported();
  // Persisted with the checkpoint record: a restarted coordinator lists and exports it again.
  Open();
  list = c_->ListCheckpoints(src);
  ASSERT_EQ(list[0].evals_size(), 1);
  EXPECT_EQ(list[0].evals(0).metrics().at("accuracy"), 0.25);
  EXPECT_NE(Exported().find("metric=accuracy,0.25"), std::string::npos) << Exported();
}

TEST_F(EvalRunsTest, ARunWhoseWorkerDiesRunsAgainElsewhereAndOnlyTheCurrentAttemptCounts) {
  AddWorker("w1", 1);
  Beat("w1");
  PushDataset("second", {"test"});
  const std::string src = TrainedJob({10}, Train());
  const std::string run = c_->SubmitJob(Eval(src, "latest", "second"));
  c_->Tick();
  ASSERT_EQ(c_->GetJob(run).state(), v1::JOB_RUNNING);
  Beat("w1", {{run, 1}});
  AddWorker("w2", 1);
  now_ += 16000;  // w1 falls silent; w2 keeps beating
  Beat("w2");
  c_->Tick();
  v1::Job j = c_->GetJob(run);
  EXPECT_EQ(j.failure_kind(), "lost_worker");
  EXPECT_EQ(j.restarts(), 1);
  ASSERT_EQ(j.state(), v1::JOB_RUNNING);
  ASSERT_EQ(j.placement_size(), 1);
  EXPECT_EQ(j.placement(0).worker_id(), "w2");
  EXPECT_EQ(j.attempt(), 2);
  // The dead attempt's late report is not news.
  Report("w1", run, 1, {ResultEvent(9.0), Exit(0)});
  EXPECT_EQ(c_->ListCheckpoints(src)[0].evals_size(), 0);
  Beat("w2", {{run, 2}});
  Report("w2", run, 2, {ResultEvent(2.0), Exit(0)});
  EXPECT_EQ(c_->GetJob(run).state(), v1::JOB_SUCCEEDED);
  ASSERT_EQ(c_->ListCheckpoints(src)[0].evals_size(), 1);
  EXPECT_EQ(c_->ListCheckpoints(src)[0].evals(0).metrics().at("lm_loss"), 2.0);
}

TEST_F(EvalRunsTest, EvalDatasetQueuesARunPerUploadAndRetentionFailsOrphans) {
  AddWorker("w1", 1);
  Beat("w1");
  PushDataset("second", {"test"});
  auto spec = Train();
  spec.set_eval_dataset("second");
  const std::string id = c_->SubmitJob(spec);
  c_->Tick();
  Beat("w1", {{id, 1}});
  Upload(id, 1, 10);
  Upload(id, 1, 10);  // uploaded again (a resumed attempt): evaluated once
  std::vector<v1::Job> runs;
  for (const auto& j : c_->ListJobs({}, 0))
    if (j.kind() == "eval") runs.push_back(j);
  ASSERT_EQ(runs.size(), 1u);
  EXPECT_EQ(runs[0].spec().eval().source_job(), id);
  EXPECT_EQ(runs[0].spec().eval().checkpoint(), "step_10");
  EXPECT_EQ(runs[0].state(), v1::JOB_QUEUED);  // the training job holds the slot
  // step_10 is deleted by retention (keep-last 1) before its run could start.
  Upload(id, 1, 20);
  EXPECT_EQ(c_->ListCheckpoints(id).size(), 1u);
  Report("w1", id, 1, {Exit(0)});
  c_->Tick();
  const v1::Job orphan = c_->GetJob(runs[0].id());
  EXPECT_EQ(orphan.state(), v1::JOB_FAILED);
  EXPECT_EQ(orphan.failure_kind(), "checkpoint_deleted");
  EXPECT_NE(orphan.message().find("step_10"), std::string::npos);
  // step_20's run got the slot.
  int running = 0;
  for (const auto& j : c_->ListJobs({v1::JOB_RUNNING}, 0)) running += j.spec().eval().checkpoint() == "step_20";
  EXPECT_EQ(running, 1);
}

TEST_F(EvalRunsTest, KeepBestRanksByAnEvalResultAndDeletionDropsTheSeries) {
  Open("eval[second]:lm_loss");
  AddWorker("w1", 1);
  Beat("w1");
  PushDataset("second", {"test"});
  const std::string id = c_->SubmitJob(Train());
  c_->Tick();
  Beat("w1", {{id, 1}});
  // Runs on a second worker while training goes on (it has free slots).
  AddWorker("w2", 2);
  Beat("w2");
  Upload(id, 1, 10);
  const std::string r10 = c_->SubmitJob(Eval(id, "step:10", "second"));
  ASSERT_EQ(c_->GetJob(r10).state(), v1::JOB_RUNNING);
  // A running evaluation run keeps its checkpoint through retention (keep-last 1).
  Upload(id, 1, 20);
  EXPECT_EQ(c_->ListCheckpoints(id).size(), 2u);
  const std::string r20 = c_->SubmitJob(Eval(id, "step_20", "second"));
  ASSERT_EQ(c_->GetJob(r20).state(), v1::JOB_RUNNING);
  Report("w2", r10, 1, {ResultEvent(1.0), Exit(0)});  // the best
  Report("w2", r20, 1, {ResultEvent(3.0), Exit(0)});
  Upload(id, 1, 30);
  Upload(id, 1, 40);
  std::vector<std::string> names;
  for (const auto& c : c_->ListCheckpoints(id)) names.push_back(c.name());
  EXPECT_EQ(names, (std::vector<std::string>{"step_10", "step_40"}));
  EXPECT_NE(Exported().find("checkpoint=step_10"), std::string::npos);
  EXPECT_EQ(Exported().find("checkpoint=step_20"), std::string::npos) << Exported();
}

TEST_F(EvalRunsTest, WeightsOnlyHasTheWeightsAndAManifestThatVerifiesThem) {
  AddWorker("w1", 1);
  Beat("w1");
  const std::string id = TrainedJob({10}, Train());
  const FileSet full = c_->ResolveCheckpoint(id, "latest");
  const FileSet w = c_->ResolveCheckpoint(id, "latest", /*weights_only=*/true);
  std::vector<std::string> paths;
  for (const auto& f : w.manifest.files()) paths.push_back(f.path());
  EXPECT_EQ(paths, (std::vector<std::string>{"manifest.json", "model.safetensors", "state.json", "tokenizer/vocab.json"}));
  EXPECT_EQ(w.manifest.name(), "step_10");
  EXPECT_EQ(w.manifest.content_sha256(), rpc::ContentHash(w.manifest));
  EXPECT_LT(w.manifest.total_bytes(), full.manifest.total_bytes());
  const auto m = nlohmann::json::parse(ReadFile(w.dir + "/manifest.json"));
  EXPECT_EQ(m.at("format"), 1);
  EXPECT_EQ(m.at("step"), 10);
  ASSERT_EQ(m.at("files").size(), 3u);
  for (const auto& f : m.at("files")) {
    const std::string p = w.dir + "/" + f.at("path").get<std::string>();
    EXPECT_EQ(f.at("sha256").get<std::string>(), Sha256File(p)) << p;
    EXPECT_EQ(f.at("size").get<uint64_t>(), fs::file_size(p)) << p;
  }
  // Built once: a second request serves the same files.
  EXPECT_EQ(c_->CheckpointFiles(id, "step_10", true).manifest.content_sha256(), w.manifest.content_sha256());
}

}  // namespace
}  // namespace trm::coordinator
