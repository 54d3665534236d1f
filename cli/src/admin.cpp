// trmctl audit and trmctl admin reload-tokens: the operator's view of a shared coordinator.
#include <cstdlib>
#include <ctime>

#include "format.h"
#include "internal.h"
#include "output.h"
#include "trm/cli/commands.h"
#include "trm/rpc/client.h"

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

}  // namespace trm::cli
