// trmctl metrics: a job's metric series (GetMetrics) as CSV or JSON, for plotting and scripts.
#include <cstdio>
#include <set>

#include "format.h"
#include "internal.h"
#include "output.h"
#include "trm/cli/commands.h"
#include "trm/rpc/client.h"

namespace trm::cli {

namespace {

// Full precision: a plot or a comparison must not see %.4g's rounding.
std::string Exact(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

// The series as CSV: step,total_steps,eval, then one column per key.
void PrintMetricsCsv(const v1::GetMetricsResponse& resp, std::vector<std::string> keys, std::ostream& out) {
  if (keys.empty()) {  // every key any point has, sorted
    std::set<std::string> all;
    for (const auto& p : resp.points())
      for (const auto& [k, v] : p.values()) all.insert(k);
    keys.assign(all.begin(), all.end());
  }
  out << "step,total_steps,eval";
  for (const auto& k : keys) out << ',' << k;
  out << '\n';
  for (const auto& p : resp.points()) {
    out << p.step() << ',' << p.total_steps() << ',' << (p.eval() ? 1 : 0);
    for (const auto& k : keys) {
      auto it = p.values().find(k);
      out << ',' << (it == p.values().end() ? "" : Exact(it->second));  // empty: not on this line
    }
    out << '\n';
  }
}

}  // namespace

int RunMetrics(const Args& args, const Context& ctx) {
  args.ExpectPositional(1, "JOB");
  const std::string format = args.Get("--format", "csv");
  if (format != "csv" && format != "json") throw UsageError("--format: expected csv or json, got '" + format + "'");
  v1::GetMetricsRequest req;
  req.set_job_id(args.positional()[0]);
  req.set_from_step(args.GetInt("--from-step", 0, 0, 2000000000));
  grpc::ClientContext c;
  rpc::SetDeadline(&c, ctx.timeout);
  v1::GetMetricsResponse resp;
  CheckRpc(ctx.jobs()->GetMetrics(&c, req, &resp), "metrics of " + req.job_id());
  const std::vector<std::string> keys = CommaList(args.GetAll("--keys"), "--keys");
  if (!keys.empty()) {  // only the keys asked for, in JSON as in CSV
    for (auto& p : *resp.mutable_points()) {
      google::protobuf::Map<std::string, double> kept;
      for (const auto& k : keys)
        if (auto it = p.values().find(k); it != p.values().end()) kept[k] = it->second;
      *p.mutable_values() = kept;
    }
  }
  if (format == "json") PrintJson(resp, *ctx.io.out);
  else PrintMetricsCsv(resp, keys, *ctx.io.out);
  return 0;
}

}  // namespace trm::cli
