// trmctl pull: a checkpoint download that survives broken streams (it asks again from the bytes
// it has) and only ever leaves a verified directory behind.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include "internal.h"
#include "format.h"
#include "trm/cli/commands.h"
#include "trm/rpc/client.h"
#include "trm/rpc/transfer.h"

namespace fs = std::filesystem;

namespace trm::cli {

PullResult Pull(v1::JobService::StubInterface* jobs, const PullOptions& o) {
  if (o.out_dir.empty()) throw UsageError("trmctl pull: -o DIR is required");
  std::string out = o.out_dir;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  std::error_code ec;
  const bool exists = fs::exists(out, ec);
  if (exists && !fs::is_directory(out, ec)) throw UsageError(out + ": exists and is not a directory");
  if (exists && !fs::is_empty(out, ec) && !o.force)
    throw UsageError(out + ": exists and is not empty (use --force to replace it)");

  const auto start = std::chrono::steady_clock::now();
  rpc::FileReceiver receiver(out + ".partial", o.max_bytes);
  std::string selector = o.selector;
  PullResult result;
  int failures = 0;
  milliseconds backoff = o.initial_backoff;
  for (;;) {
    grpc::ClientContext ctx;
    rpc::SetDeadline(&ctx, o.stream_deadline);
    v1::DownloadCheckpointRequest req;
    req.set_job_id(o.job_id);
    req.set_selector(selector);
    req.set_offset(receiver.received());
    req.set_weights_only(o.weights_only);
    const uint64_t before = receiver.received();
    auto reader = jobs->DownloadCheckpoint(&ctx, req);
    v1::TransferMessage msg;
    while (reader->Read(&msg)) {
      if (msg.has_manifest() && !receiver.has_manifest()) {
        const auto& m = msg.manifest();
        if (m.content_sha256() != rpc::ContentHash(m))
          DataLoss("checkpoint '" + m.name() + "': the manifest's content hash does not match its file list");
        // "latest" may move while we resume; pin the checkpoint we started with.
        if (m.name().rfind("step_", 0) == 0) selector = m.name();
      }
      receiver.OnMessage(msg);  // throws on a chunk out of order or a changed manifest
    }
    const grpc::Status s = reader->Finish();
    if (s.ok() && receiver.complete()) break;
    if (!s.ok() && !Retryable(s)) CheckRpc(s, "pull " + o.job_id);
    const std::string why = s.ok() ? "the stream ended early" : s.error_message();
    if (receiver.received() > before) {
      failures = 0;
      backoff = o.initial_backoff;
    }
    if (++failures > o.retries)
      throw RpcError(Code::kUnavailable, "pull " + o.job_id + ": giving up after " + std::to_string(o.retries) +
                                             " retries at byte " + std::to_string(receiver.received()) + ": " + why);
    ++result.reconnects;
    spdlog::warn("pull {}: {}; resuming at byte {}", o.job_id, why, receiver.received());
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, milliseconds(5000));
  }
  receiver.Commit(out, /*replace=*/exists);  // verifies every file's SHA-256 first
  result.name = receiver.manifest().name();
  result.bytes = receiver.received();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return result;
}

int RunPull(const Args& args, const Context& ctx) {
  args.ExpectPositional(1, "JOB");
  PullOptions o;
  o.job_id = args.positional()[0];
  o.selector = args.Get("--select", "latest");
  o.out_dir = args.Get("--output");
  o.force = args.Has("--force");
  o.weights_only = args.Has("--weights-only");
  o.retries = args.GetInt("--retries", 5, 0, 1000);
  const PullResult r = Pull(ctx.jobs(), o);
  char rate[32];
  std::snprintf(rate, sizeof rate, "%.1f", r.seconds > 0 ? r.bytes / 1e6 / r.seconds : 0.0);
  *ctx.io.out << "pulled " << r.name << " to " << o.out_dir << ": " << FormatBytes(r.bytes) << " in "
              << FormatDuration(r.seconds) << " (" << rate << " MB/s)" << (o.weights_only ? ", weights only" : "")
              << "\n";
  return 0;
}

}  // namespace trm::cli
