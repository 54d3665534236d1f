// An in-process CoordinatorClient for the agent tests: hands out assignments in heartbeats,
// records every event and upload in order, serves datasets and checkpoints from local dirs and
// can play a coordinator that is down.
#pragma once

#include <atomic>
#include <condition_variable>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "trm/agent/coordinator_client.h"
#include "trm/common/error.h"

namespace trm::agent::testing {

class FakeCoordinatorClient : public CoordinatorClient {
 public:
  explicit FakeCoordinatorClient(std::string upload_root) : upload_root_(std::move(upload_root)) {}

  v1::RegisterResponse Register(const v1::RegisterRequest& req) override;
  v1::HeartbeatResponse Heartbeat(const v1::HeartbeatRequest& req) override;
  v1::ReportEventsResponse ReportEvents(const v1::ReportEventsRequest& req) override;
  v1::CheckpointInfo UploadCheckpoint(const std::string& dir, const v1::CheckpointUploadHeader& header) override;
  v1::Manifest FetchDataset(const std::string& hash, const v1::ShardSpec& shard, const std::string& dest) override;
  // weights_only: only model.safetensors, state.json and tokenizer/ of the stored directory.
  v1::Manifest FetchCheckpoint(const std::string& job_id, const std::string& name, const std::string& dest,
                               bool weights_only) override;

  // Test controls.
  void Assign(const v1::Assignment& a, bool resend_always = false);
  void OrderStop(const std::string& job, int attempt);
  void ServeDataset(const std::string& hash, const std::string& dir) { Locked([&] { datasets_[hash] = dir; }); }
  void ServeCheckpoint(const std::string& job, const std::string& name, const std::string& dir) {
    Locked([&] { checkpoints_[job + "/" + name] = dir; });
  }
  void SetDown(bool down) { down_ = down; }
  void BreakNextFetchAfter(uint64_t bytes) { break_after_ = bytes; }
  // The next `n` uploads fail with `code` (before anything is received).
  void FailNextUploads(int n, Code code) {
    upload_failure_ = code;
    fail_uploads_ = n;
  }

  // What happened, in order: "exit RANK CODE", "upload step_N", "metrics STEP", "log RANK".
  std::vector<std::string> Journal();
  std::vector<v1::WorkerEvent> Events(const std::string& job, int attempt);
  std::vector<v1::CheckpointUploadHeader> Uploads();
  // Phases the ranks reported in heartbeats (with a time in phase), in order of first sight.
  std::vector<v1::RankPhase> ReportedPhases();
  int registers() const { return registers_; }
  int heartbeats() const { return heartbeats_; }
  int fetches() const { return fetches_; }
  int upload_calls() const { return upload_calls_; }  // failed ones included
  // ReportEvents calls carrying an exit that were refused because the fake was down.
  int refused_exit_reports() const { return refused_exit_reports_; }
  // Waits (bounded) until pred() holds over the state; returns pred()'s last value.
  bool WaitFor(const std::function<bool()>& pred, int timeout_ms);

 private:
  template <class F>
  void Locked(F&& f) {
    std::lock_guard<std::mutex> lock(mu_);
    f();
  }
  void CheckUp(const char* what);

  std::string upload_root_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<bool> down_{false};
  std::atomic<uint64_t> break_after_{0};
  std::atomic<int> registers_{0}, heartbeats_{0}, fetches_{0}, upload_calls_{0}, refused_exit_reports_{0};
  std::atomic<int> fail_uploads_{0};
  std::atomic<Code> upload_failure_{Code::kUnavailable};
  struct Pending {
    v1::Assignment a;
    bool resend_always;
  };
  std::vector<Pending> pending_;
  std::vector<v1::StopOrder> stops_;
  std::map<std::string, std::string> datasets_, checkpoints_;
  std::vector<std::string> journal_;
  std::vector<v1::RankPhase> phases_;
  std::map<std::string, std::vector<v1::WorkerEvent>> events_;
  std::vector<v1::CheckpointUploadHeader> uploads_;
};

}  // namespace trm::agent::testing
