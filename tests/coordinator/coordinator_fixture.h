// The Coordinator driven as workers and users would drive it, without a server: a fake clock, a
// real SQLite database in a temporary directory, real files for checkpoints and datasets.
#pragma once

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "trm/common/error.h"
#include "trm/coordinator/coordinator.h"
#include "trm/rpc/transfer.h"

namespace trm::coordinator {

namespace fs = std::filesystem;

class CoordinatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("trm_coord_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_);
    Open();
  }
  void TearDown() override {
    c_.reset();
    fs::remove_all(root_);
  }
  // Tests may change options_ before Open() (SetUp opens with the defaults).
  CoordinatorOptions options_;
  void Open() {
    CoordinatorOptions o = options_;
    o.data_dir = (root_ / "state").string();
    o.config_dir = std::string(TRM_SOURCE_DIR) + "/configs";
    o.heartbeat_timeout_ms = 15000;
    o.keep_last_checkpoints = 2;
    o.hang_timeout_ms = 60000;
    o.start_timeout_ms = 120000;
    o.keep_best_metric = "eval_lm_loss";
    o.now_ms = [this] { return now_; };
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
    h.add_free_ports(40000 + static_cast<uint32_t>(std::hash<std::string>()(id) % 1000));
    for (const auto& [job, attempt] : running) {
      auto* a = h.add_attempts();
      a->set_job_id(job);
      a->set_attempt(attempt);
      a->add_ranks()->set_phase(v1::PHASE_COMPUTE);
    }
    return c_->Heartbeat(h);
  }
  v1::JobSpec Spec(int world) {
    v1::JobSpec s;
    s.set_config_name("cfg_tiny");
    s.set_data_path("/data/chat");
    s.set_world_size(world);
    s.add_overrides("global_batch_size=4");
    return s;
  }
  void Report(const std::string& worker, const std::string& job, int attempt, std::vector<v1::WorkerEvent> evs,
              bool* stop = nullptr) {
    v1::ReportEventsRequest r;
    r.set_worker_id(worker);
    r.set_job_id(job);
    r.set_attempt(attempt);
    for (auto& e : evs) *r.add_events() = e;
    auto resp = c_->ReportEvents(r);
    if (stop) *stop = resp.stop();
  }
  static v1::WorkerEvent Metrics(int64_t step, double loss) {
    v1::WorkerEvent e;
    e.mutable_metrics()->set_step(step);
    e.mutable_metrics()->set_total_steps(10);
    (*e.mutable_metrics()->mutable_values())["lm_loss"] = loss;
    return e;
  }
  static v1::WorkerEvent Exit(int rank, int code) {
    v1::WorkerEvent e;
    e.mutable_exit()->set_rank(rank);
    e.mutable_exit()->set_exit_code(code);
    if (code) e.mutable_exit()->set_message("error: boom");
    return e;
  }
  // Uploads a small checkpoint as a worker's stream would: the header, then the chunks.
  v1::CheckpointInfo Upload(const std::string& job, int attempt, int64_t step, double eval_loss = -1) {
    const fs::path src = root_ / ("ckpt_src_" + std::to_string(step));
    fs::create_directories(src / "tokenizer");
    std::ofstream(src / "model.safetensors") << "weights at " << step;
    std::ofstream(src / "tokenizer" / "vocab.json") << "{}";
    v1::CheckpointUploadHeader h;
    h.set_worker_id("w1");
    h.set_job_id(job);
    h.set_attempt(attempt);
    h.mutable_info()->set_name("step_" + std::to_string(step));
    h.mutable_info()->set_step(step);
    if (eval_loss >= 0) (*h.mutable_info()->mutable_metrics())["eval_lm_loss"] = eval_loss;
    *h.mutable_manifest() = rpc::BuildManifest(src.string(), h.info().name());
    std::vector<v1::CheckpointUpload> stream(1);
    *stream[0].mutable_header() = h;
    rpc::SendChunks(src.string(), h.manifest(), 0, [&](const v1::Chunk& c) {
      *stream.emplace_back().mutable_chunk() = c;
      return true;
    });
    return c_->UploadCheckpoint(Reader(std::move(stream)));
  }
  // A client stream of `messages` as the gRPC adapters hand one to the Coordinator.
  template <typename Message>
  static std::function<bool(Message*)> Reader(std::vector<Message> messages) {
    auto next = std::make_shared<size_t>(0);
    return [messages = std::move(messages), next](Message* m) {
      if (*next == messages.size()) return false;
      *m = messages[(*next)++];
      return true;
    };
  }
  // Pushes the dataset in `dir` as `trmctl dataset push` would: the manifest, then the chunks.
  v1::DatasetInfo Push(const fs::path& dir, const std::string& name, const Principal& who = {}) {
    std::vector<v1::TransferMessage> stream;
    rpc::SendFiles(dir.string(), rpc::BuildManifest(dir.string(), name), 0, [&](const v1::TransferMessage& m) {
      stream.push_back(m);
      return true;
    });
    return c_->PushDataset(Reader(std::move(stream)), who);
  }

  fs::path root_;
  int64_t now_ = 1000000;
  std::unique_ptr<Coordinator> c_;
};

inline std::string ErrorOf(const std::function<void()>& fn, Code* code = nullptr) {
  try {
    fn();
  } catch (const Error& e) {
    if (code) *code = e.code();
    return e.what();
  }
  return "";
}

}  // namespace trm::coordinator
