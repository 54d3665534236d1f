// The reconnecting WatchJob reader under `watch` and `logs`. Events carry a gap-free seq, so a
// stream that breaks (coordinator restart, network) resumes with after_seq = the last seq seen
// and nothing is shown twice or skipped.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "trm/cli/commands.h"
#include "trm/rpc/client.h"
#include "trm/rpc/status.h"

namespace trm::cli {

// Codes a restarting or unreachable coordinator produces; anything else (NOT_FOUND, ...) is
// an answer, not an outage.
bool Retryable(const grpc::Status& s) {
  switch (s.error_code()) {
    case grpc::StatusCode::UNAVAILABLE:
    case grpc::StatusCode::DEADLINE_EXCEEDED:
    case grpc::StatusCode::ABORTED:
    case grpc::StatusCode::UNKNOWN:
      return true;
    default:
      return false;
  }
}

void CheckRpc(const grpc::Status& s, const std::string& what) {
  if (s.ok()) return;
  throw RpcError(rpc::FromGrpcCode(s.error_code()), what + ": " + s.error_message());
}

uint64_t FollowJobEvents(v1::JobService::StubInterface* jobs, const std::string& job_id, const FollowOptions& o,
                         const std::function<bool(const v1::JobEvent&)>& on_event) {
  using Clock = std::chrono::steady_clock;
  uint64_t last_seq = o.after_seq;
  auto give_up_at = Clock::now() + o.reconnect;
  milliseconds backoff = o.initial_backoff;
  for (;;) {
    grpc::ClientContext ctx;
    rpc::SetDeadline(&ctx, o.stream_deadline);
    v1::WatchJobRequest req;
    req.set_job_id(job_id);
    req.set_after_seq(last_seq);
    req.set_follow(o.follow);
    req.set_include_logs(o.include_logs);
    auto reader = jobs->WatchJob(&ctx, req);
    v1::JobEvent ev;
    bool progressed = false;
    while (reader->Read(&ev)) {
      // A server that resends what we already have (it should not) must not make us show it twice.
      if (ev.seq() <= last_seq) continue;
      last_seq = ev.seq();
      progressed = true;
      if (!on_event(ev)) {
        ctx.TryCancel();
        reader->Finish();
        return last_seq;
      }
    }
    grpc::Status s = reader->Finish();
    if (s.ok() && !o.follow) return last_seq;
    // A follow stream only ends cleanly after the job's final state, which stops us above; a
    // clean end before that is a coordinator shutting down, so reconnect as for an outage.
    if (!s.ok() && !Retryable(s)) CheckRpc(s, "watch " + job_id);
    const std::string why = s.ok() ? "the stream ended before the job did" : s.error_message();
    // Our own long deadline running out on a quiet job is not an outage.
    if (progressed || s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) {
      give_up_at = Clock::now() + o.reconnect;
      backoff = o.initial_backoff;
    }
    const auto now = Clock::now();
    if (now >= give_up_at)
      throw RpcError(Code::kUnavailable, "watch " + job_id + ": lost the coordinator for " +
                                             std::to_string(o.reconnect.count()) + " s: " + why);
    spdlog::warn("watch {}: {}; reconnecting after event {}", job_id, why, last_seq);
    std::this_thread::sleep_for(std::min<Clock::duration>(backoff, give_up_at - now));
    backoff = std::min(backoff * 2, o.max_backoff);
  }
}

}  // namespace trm::cli
