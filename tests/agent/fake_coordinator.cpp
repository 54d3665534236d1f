#include "fake_coordinator.h"

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "trm/common/error.h"

namespace trm::agent::testing {
namespace fs = std::filesystem;

void FakeCoordinatorClient::CheckUp(const char* what) {
  if (down_) ThrowError(Code::kUnavailable, std::string(what) + ": connection refused (fake coordinator down)");
}

v1::RegisterResponse FakeCoordinatorClient::Register(const v1::RegisterRequest& req) {
  CheckUp("Register");
  ++registers_;
  v1::RegisterResponse r;
  r.set_heartbeat_interval_ms(100);
  (void)req;
  return r;
}

v1::HeartbeatResponse FakeCoordinatorClient::Heartbeat(const v1::HeartbeatRequest& req) {
  CheckUp("Heartbeat");
  ++heartbeats_;
  v1::HeartbeatResponse resp;
  std::lock_guard<std::mutex> lock(mu_);
  // As the real coordinator: an assignment is re-sent until a heartbeat shows it.
  pending_.erase(std::remove_if(pending_.begin(), pending_.end(),
                                [&](const Pending& p) {
                                  if (p.resend_always) return false;
                                  for (const auto& st : req.attempts()) {
                                    if (st.job_id() == p.a.job_id() && st.attempt() == p.a.attempt()) return true;
                                  }
                                  return false;
                                }),
                 pending_.end());
  for (const auto& st : req.attempts()) {
    for (const auto& r : st.ranks()) {
      if (r.has_phase_elapsed_ms() && std::find(phases_.begin(), phases_.end(), r.phase()) == phases_.end())
        phases_.push_back(r.phase());
    }
  }
  for (const auto& p : pending_) *resp.add_start() = p.a;
  for (const auto& s : stops_) *resp.add_stop() = s;
  stops_.clear();
  cv_.notify_all();
  return resp;
}

std::vector<v1::RankPhase> FakeCoordinatorClient::ReportedPhases() {
  std::lock_guard<std::mutex> lock(mu_);
  return phases_;
}

v1::ReportEventsResponse FakeCoordinatorClient::ReportEvents(const v1::ReportEventsRequest& req) {
  if (down_) {
    for (const auto& e : req.events()) {
      if (e.has_exit()) {
        ++refused_exit_reports_;
        break;
      }
    }
    cv_.notify_all();
  }
  CheckUp("ReportEvents");
  std::lock_guard<std::mutex> lock(mu_);
  auto& v = events_[req.job_id() + "/" + std::to_string(req.attempt())];
  for (const auto& e : req.events()) {
    v.push_back(e);
    if (e.has_exit()) journal_.push_back("exit " + std::to_string(e.exit().rank()) + " " + std::to_string(e.exit().exit_code()));
    if (e.has_metrics()) journal_.push_back("metrics " + std::to_string(e.metrics().step()));
  }
  cv_.notify_all();
  return {};
}

v1::CheckpointInfo FakeCoordinatorClient::UploadCheckpoint(const std::string& dir, const v1::CheckpointUploadHeader& h) {
  CheckUp("UploadCheckpoint");
  ++upload_calls_;
  if (fail_uploads_ > 0) {
    --fail_uploads_;
    ThrowError(upload_failure_, "UploadCheckpoint " + h.info().name() + ": refused by the fake (" +
                                    CodeName(upload_failure_) + ")");
  }
  // Receive it as the coordinator would: every chunk through a FileReceiver that checks sizes and
  // SHA-256 against the header's manifest at Commit.
  rpc::CheckManifest(h.manifest(), uint64_t{1} << 32);
  const std::string dest = upload_root_ + "/" + h.job_id() + "/" + h.info().name();
  {
    rpc::FileReceiver rx(dest + ".tmp", uint64_t{1} << 32);
    rx.OnManifest(h.manifest());
    rpc::SendChunks(dir, h.manifest(), 0, [&](const v1::Chunk& c) {
      rx.OnChunk(c);
      return true;
    });
    if (!rx.complete()) DataLoss("upload incomplete");
    rx.Commit(dest, true);
  }
  std::lock_guard<std::mutex> lock(mu_);
  uploads_.push_back(h);
  journal_.push_back("upload " + h.info().name());
  cv_.notify_all();
  return h.info();
}

v1::Manifest FakeCoordinatorClient::FetchDataset(const std::string& hash, const v1::ShardSpec& shard,
                                                 const std::string& dest) {
  CheckUp("FetchDataset");
  if (shard.world_size() > 0) InvalidArgument("the fake serves whole datasets only");
  ++fetches_;
  std::string dir;
  Locked([&] { dir = datasets_.count(hash) ? datasets_[hash] : ""; });
  if (dir.empty()) NotFound("dataset " + hash);
  const v1::Manifest m = rpc::BuildManifest(dir, hash);
  return ReceiveResumable(
      [&](uint64_t offset, rpc::FileReceiver& rx) {
        const uint64_t brk = break_after_.exchange(0);
        uint64_t sent = 0;
        const bool ok = rpc::SendFiles(dir, m, offset, [&](const v1::TransferMessage& msg) {
          if (brk && msg.has_chunk() && sent >= brk) return false;
          if (msg.has_chunk()) {
            v1::TransferMessage part = msg;
            if (brk && sent + msg.chunk().data().size() > brk) part.mutable_chunk()->mutable_data()->resize(brk - sent);
            sent += part.chunk().data().size();
            rx.OnMessage(part);
            return !(brk && sent >= brk);
          }
          rx.OnMessage(msg);
          return true;
        });
        if (!ok) ThrowError(Code::kUnavailable, "FetchDataset: stream broken (fake)");
      },
      dest, hash, 3, uint64_t{1} << 32);
}

v1::Manifest FakeCoordinatorClient::FetchCheckpoint(const std::string& job, const std::string& name,
                                                    const std::string& dest, bool weights_only) {
  CheckUp("FetchCheckpoint");
  ++fetches_;
  std::string dir;
  Locked([&] { dir = checkpoints_.count(job + "/" + name) ? checkpoints_[job + "/" + name] : ""; });
  if (dir.empty()) NotFound("checkpoint " + job + "/" + name);
  v1::Manifest m = rpc::BuildManifest(dir, name);
  if (weights_only) {
    v1::Manifest w;
    w.set_name(name);
    for (const auto& f : m.files())
      if (f.path() == "model.safetensors" || f.path() == "state.json" || f.path().rfind("tokenizer/", 0) == 0) {
        *w.add_files() = f;
        w.set_total_bytes(w.total_bytes() + f.size());
      }
    m = w;
  }
  return ReceiveResumable(
      [&](uint64_t offset, rpc::FileReceiver& rx) { rpc::SendFiles(dir, m, offset, [&](const v1::TransferMessage& msg) {
                                                      rx.OnMessage(msg);
                                                      return true;
                                                    }); },
      dest, "", 3, uint64_t{1} << 32);
}

void FakeCoordinatorClient::Assign(const v1::Assignment& a, bool resend_always) {
  Locked([&] { pending_.push_back({a, resend_always}); });
}

void FakeCoordinatorClient::OrderStop(const std::string& job, int attempt) {
  Locked([&] {
    v1::StopOrder s;
    s.set_job_id(job);
    s.set_attempt(attempt);
    s.set_reason("test");
    stops_.push_back(s);
  });
}

std::vector<std::string> FakeCoordinatorClient::Journal() {
  std::lock_guard<std::mutex> lock(mu_);
  return journal_;
}

std::vector<v1::WorkerEvent> FakeCoordinatorClient::Events(const std::string& job, int attempt) {
  std::lock_guard<std::mutex> lock(mu_);
  return events_[job + "/" + std::to_string(attempt)];
}

std::vector<v1::CheckpointUploadHeader> FakeCoordinatorClient::Uploads() {
  std::lock_guard<std::mutex> lock(mu_);
  return uploads_;
}

bool FakeCoordinatorClient::WaitFor(const std::function<bool()>& pred, int timeout_ms) {
  const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (std::chrono::steady_clock::now() < until) {
    if (pred()) return true;
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait_for(lock, std::chrono::milliseconds(50));
  }
  return pred();
}

}  // namespace trm::agent::testing
