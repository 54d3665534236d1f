// trmctl audit, trmctl admin reload-tokens and trmctl admin backup: the operator's view of a
// shared coordinator.
#include <cstdlib>
#include <ctime>
#include <filesystem>

#include "format.h"
#include "internal.h"
#include "output.h"
#include "trm/cli/commands.h"
#include "trm/rpc/client.h"
#include "trm/rpc/tar.h"

namespace trm::cli {

namespace {

// --since: a duration back from now (90s, 30m, 12h, 7d) or a UTC date (2026-12-01 or
// 2026-12-01T08:00:00).
int64_t SinceUnixMs(const std::string& v, int64_t now_ms) {
  if (v.empty()) return 0;
  char* end = nullptr;
  const long long n = std::strtoll(v.c_str(), &end, 10);
  const std::string unit = end ? end : "";
  const int64_t scale = unit == "s" ? 1000 : unit == "m" ? 60000 : unit == "h" ? 3600000 : unit == "d" ? 86400000 : 0;
  if (end != v.c_str() && n >= 0 && scale > 0) return now_ms - n * scale;
  std::tm tm{};
  const char* rest = strptime(v.c_str(), "%Y-%m-%d", &tm);
  if (rest && *rest == 'T') rest = strptime(rest + 1, "%H:%M:%S", &tm);
  if (!rest || *rest) throw UsageError("--since '" + v + "': expected a duration (90s, 30m, 12h, 7d) or a UTC date "
                                       "(2026-12-01 or 2026-12-01T08:00:00)");
  return static_cast<int64_t>(timegm(&tm)) * 1000;
}

}  // namespace

int RunAudit(const Args& args, const Context& ctx) {
  args.ExpectPositional(0, "");
  v1::ListAuditRequest req;
  req.set_since_unix_ms(SinceUnixMs(args.Get("--since"), NowUnixMs()));
  req.set_user(args.Get("--user"));
  req.set_limit(args.GetInt("--limit", 0, 0, 100000));
  grpc::ClientContext c;
  rpc::SetDeadline(&c, ctx.timeout);
  v1::ListAuditResponse resp;
  CheckRpc(ctx.jobs()->ListAudit(&c, req, &resp), "audit log");
  if (WantsJson(args)) {
    PrintJson(resp, *ctx.io.out);
    return 0;
  }
  Table t({"TIME", "USER", "PEER", "METHOD", "TARGET", "RESULT"});
  for (const auto& e : resp.entries())
    t.AddRow({FormatUtc(e.time_unix_ms()), e.principal().empty() ? "-" : e.principal(), e.peer(), e.method(),
              e.target().empty() ? "-" : e.target(), e.result()});
  t.Print(*ctx.io.out);
  return 0;
}

int RunReloadTokens(const Args& args, const Context& ctx) {
  args.ExpectPositional(0, "");
  grpc::ClientContext c;
  rpc::SetDeadline(&c, ctx.timeout);
  v1::ReloadTokensResponse resp;
  CheckRpc(ctx.jobs()->ReloadTokens(&c, v1::ReloadTokensRequest(), &resp), "reload tokens");
  *ctx.io.out << "reloaded: " << resp.tokens() << " token(s)\n";
  return 0;
}

int RunBackup(const Args& args, const Context& ctx) {
  args.ExpectPositional(1, "FILE");
  const std::string path = args.positional()[0];
  std::error_code ec;
  if (std::filesystem::exists(path, ec) && !args.Has("--force"))
    throw UsageError(path + ": exists (use --force to replace it)");
  // A whole data directory may take a while: the stream gets hours, not --timeout-s.
  grpc::ClientContext c;
  rpc::SetDeadline(&c, std::chrono::hours(args.GetInt("--deadline-h", 24, 1, 24 * 30)));
  const auto start = std::chrono::steady_clock::now();
  rpc::TarTransferWriter out(path, rpc::kBackupManifestMember, UINT64_MAX);
  auto reader = ctx.jobs()->Backup(&c, v1::BackupRequest());
  v1::TransferMessage msg;
  try {
    while (reader->Read(&msg)) out.OnMessage(msg);  // each file's SHA-256 is checked as it ends
  } catch (const Error& e) {
    c.TryCancel();
    if (e.code() != Code::kDataLoss) throw;
    DataLoss(std::string(e.what()) + " (a checkpoint replaced while the backup ran? take it again; nothing was written to " +
             path + ")");
  }
  CheckRpc(reader->Finish(), "backup");
  out.Finish();
  const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  *ctx.io.out << "backup " << out.manifest().name() << " written to " << path << ": " << out.manifest().files_size()
              << " files, " << FormatBytes(out.manifest().total_bytes()) << " in " << FormatDuration(s)
              << " (restore: trm-coordinator --restore " << path << " --data-dir NEW_DIR)\n";
  return 0;
}

}  // namespace trm::cli
