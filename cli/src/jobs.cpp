// trmctl list / status / cancel / checkpoints / workers: one unary RPC each, shown as a table
// or as key: value lines.
#include <google/protobuf/util/json_util.h>

#include "format.h"
#include "internal.h"
#include "output.h"
#include "trm/cli/commands.h"
#include "trm/rpc/client.h"

namespace trm::cli {

namespace {

const char kDefaultCheckpointMetrics[] = "lm_loss,eval_lm_loss,eval_accuracy";

std::string StepText(const v1::Job& j) {
  return std::to_string(j.step()) + "/" + (j.total_steps() > 0 ? std::to_string(j.total_steps()) : "?");
}

}  // namespace

int RunList(const Args& args, const Context& ctx) {
  args.ExpectPositional(0, "");
  v1::ListJobsRequest req;
  // --state queued,running as well as --state queued --state running.
  for (const auto& s : CommaList(args.GetAll("--state"), "--state")) req.add_states(ParseState(s));
  req.set_limit(args.GetInt("--limit", 0, 0, 100000));
  if (args.Has("--mine") && args.Has("--owner")) throw UsageError("--mine and --owner: give one of them");
  req.set_mine(args.Has("--mine"));
  req.set_owner(args.Get("--owner"));
  grpc::ClientContext c;
  rpc::SetDeadline(&c, ctx.timeout);
  v1::ListJobsResponse resp;
  CheckRpc(ctx.jobs()->ListJobs(&c, req, &resp), "list jobs");
  if (WantsJson(args)) {
    PrintJson(resp, *ctx.io.out);
    return 0;
  }
  Table t({"ID", "OWNER", "KIND", "NAME", "STATE", "STEP", "LOSS", "ATTEMPT", "AGE"});
  const int64_t now = NowUnixMs();
  for (const auto& j : resp.jobs())
    t.AddRow({j.id(), j.owner().empty() ? "local" : j.owner(), j.spec().has_eval() ? "eval" : "train", j.spec().name(),
              StateName(j.state()), StepText(j),
              j.step() > 0 ? FormatNumber(j.loss()) : "-", std::to_string(j.attempt()),
              FormatAge(j.created_unix_ms(), now)});
  t.Print(*ctx.io.out);
  return 0;
}

int RunStatus(const Args& args, const Context& ctx) {
  args.ExpectPositional(1, "JOB");
  v1::GetJobRequest req;
  req.set_job_id(args.positional()[0]);
  grpc::ClientContext c;
  rpc::SetDeadline(&c, ctx.timeout);
  v1::Job j;
  CheckRpc(ctx.jobs()->GetJob(&c, req, &j), "job " + req.job_id());
  std::ostream& out = *ctx.io.out;
  if (args.Get("--output") == "json") {
    PrintJson(j, out);
    return 0;
  }
  if (WantsJson(args)) {  // --json: the same document, indented for reading
    google::protobuf::util::JsonPrintOptions opt;
    opt.preserve_proto_field_names = true;
    opt.add_whitespace = true;
    std::string text;
    google::protobuf::util::MessageToJsonString(j, &text, opt);
    out << text;
    if (text.empty() || text.back() != '\n') out << '\n';
    return 0;
  }
  const int64_t now = NowUnixMs();
  auto row = [&](const char* k, const std::string& v) {
    if (!v.empty()) out << k << std::string(13 - std::string(k).size(), ' ') << v << '\n';
  };
  row("id:", j.id());
  row("name:", j.spec().name());
  row("owner:", j.owner());
  row("state:", StateName(j.state()));
  row("message:", j.message());
  row("failure:", j.failure_kind());
  row("warning:", j.warning());
  row("waiting:", j.queue_reason());
  row("kind:", j.spec().has_eval() ? "eval" : "train");
  if (j.spec().has_eval()) {
    const auto& e = j.spec().eval();
    row("evaluates:", e.source_job() + "/" + e.checkpoint() + " on " +
                          (e.prompts().empty() ? e.dataset() + " (" + e.split() + ")" : e.prompts() + " (generate)"));
  }
  row("eval data:", j.spec().eval_dataset());
  row("config:", j.spec().config_name());
  std::string ovs;
  for (const auto& o : j.spec().overrides()) ovs += (ovs.empty() ? "" : " ") + o;
  row("overrides:", ovs);
  const std::string dataset = j.dataset_ref().empty() ? j.spec().dataset() : j.dataset_ref();
  row("dataset:", !dataset.empty() ? dataset + (j.dataset_hash().empty() ? "" : " (" + j.dataset_hash().substr(0, 12) + ")")
                                   : j.spec().data_path());
  if (j.world_sizes_size() > 1)
    row("world size:", (j.world_size() > 0 ? std::to_string(j.world_size()) + " now; " : std::string()) + "elastic " +
                           std::to_string(j.world_sizes(j.world_sizes_size() - 1)) + " to " +
                           std::to_string(j.spec().world_size()) +
                           (j.resizes() > 0 ? " (grew " + std::to_string(j.resizes()) + " time" +
                                                  (j.resizes() == 1 ? ")" : "s)")
                                            : ""));
  else
    row("world size:", std::to_string(j.spec().world_size()));
  row("priority:", std::to_string(j.spec().priority()));
  row("attempt:", std::to_string(j.attempt()));
  row("restarts:", std::to_string(j.restarts()) + " of " + std::to_string(j.spec().max_restarts()));
  if (j.preemptions() > 0) row("preempted:", std::to_string(j.preemptions()) + " time" + (j.preemptions() == 1 ? "" : "s"));
  row("step:", StepText(j));
  if (j.step() > 0) row("loss:", FormatNumber(j.loss()));
  if (j.tokens_per_s() > 0) row("tokens/s:", FormatNumber(j.tokens_per_s()));
  row("checkpoint:", j.latest_checkpoint());
  std::string placement;
  for (const auto& p : j.placement())
    placement += (placement.empty() ? "" : ", ") + ("rank " + std::to_string(p.rank()) + " on " + p.worker_id());
  row("placement:", placement);
  row("created:", FormatAge(j.created_unix_ms(), now) + " ago");
  if (j.started_unix_ms() > 0) row("started:", FormatAge(j.started_unix_ms(), now) + " ago");
  if (j.finished_unix_ms() > 0) row("finished:", FormatAge(j.finished_unix_ms(), now) + " ago");
  return 0;
}

int RunCancel(const Args& args, const Context& ctx) {
  args.ExpectPositional(1, "JOB");
  v1::CancelJobRequest req;
  req.set_job_id(args.positional()[0]);
  grpc::ClientContext c;
  rpc::SetDeadline(&c, ctx.timeout);
  v1::Job j;
  CheckRpc(ctx.jobs()->CancelJob(&c, req, &j), "cancel " + req.job_id());
  *ctx.io.out << j.id() << " " << StateName(j.state()) << '\n';
  return 0;
}

int RunCheckpoints(const Args& args, const Context& ctx) {
  args.ExpectPositional(1, "JOB");
  v1::ListCheckpointsRequest req;
  req.set_job_id(args.positional()[0]);
  grpc::ClientContext c;
  rpc::SetDeadline(&c, ctx.timeout);
  v1::ListCheckpointsResponse resp;
  CheckRpc(ctx.jobs()->ListCheckpoints(&c, req, &resp), "checkpoints of " + req.job_id());
  if (WantsJson(args)) {
    PrintJson(resp, *ctx.io.out);
    return 0;
  }
  // A few chosen metrics as columns (every one is in -o json); "-" where a checkpoint lacks one.
  const std::vector<std::string> keys = CommaList({args.Get("--metrics", kDefaultCheckpointMetrics)}, "--metrics");
  std::vector<std::string> headers = {"NAME", "STEP", "SIZE", "SHA256", "AGE"};
  headers.insert(headers.end(), keys.begin(), keys.end());
  headers.push_back("EVAL");
  Table t(headers);
  const int64_t now = NowUnixMs();
  for (const auto& cp : resp.checkpoints()) {
    const std::string evals = EvalEntries(cp);
    std::vector<std::string> row = {cp.name(), std::to_string(cp.step()), FormatBytes(cp.size_bytes()),
                                    cp.content_sha256().substr(0, 12), FormatAge(cp.created_unix_ms(), now)};
    for (const auto& k : keys) {
      auto it = cp.metrics().find(k);
      row.push_back(it == cp.metrics().end() ? "-" : FormatNumber(it->second));
    }
    row.push_back(evals.empty() ? "-" : evals);
    t.AddRow(std::move(row));
  }
  t.Print(*ctx.io.out);
  return 0;
}

int RunQueue(const Args& args, const Context& ctx) {
  args.ExpectPositional(0, "");
  grpc::ClientContext c;
  rpc::SetDeadline(&c, ctx.timeout);
  v1::GetQueueResponse resp;
  CheckRpc(ctx.jobs()->GetQueue(&c, v1::GetQueueRequest(), &resp), "queue");
  if (WantsJson(args)) {
    PrintJson(resp, *ctx.io.out);
    return 0;
  }
  *ctx.io.out << resp.entries_size() << " queued; " << resp.free_slots() << " free slot(s) on " << resp.live_workers()
              << " live worker(s)\n";
  Table t({"POS", "ID", "OWNER", "KIND", "NAME", "PRIO", "SLOTS", "WAITED", "WHY"});
  const int64_t now = NowUnixMs();
  for (const auto& e : resp.entries())
    t.AddRow({std::to_string(e.position()), e.job_id(), e.owner(), e.kind(), e.name(), std::to_string(e.priority()),
              e.min_slots() > 0 && e.min_slots() < e.slots() ? std::to_string(e.min_slots()) + "-" + std::to_string(e.slots())
                                                              : std::to_string(e.slots()),
              FormatAge(e.waiting_since_unix_ms(), now), e.reason().empty() ? "-" : e.reason()});
  t.Print(*ctx.io.out);
  return 0;
}

int RunWorkers(const Args& args, const Context& ctx) {
  args.ExpectPositional(0, "");
  grpc::ClientContext c;
  rpc::SetDeadline(&c, ctx.timeout);
  v1::ListWorkersResponse resp;
  CheckRpc(ctx.jobs()->ListWorkers(&c, v1::ListWorkersRequest(), &resp), "list workers");
  if (WantsJson(args)) {
    PrintJson(resp, *ctx.io.out);
    return 0;
  }
  Table t({"ID", "HOST", "DEVICE", "FREE/SLOTS", "ALIVE", "HEARTBEAT", "JOBS"});
  const int64_t now = NowUnixMs();
  for (const auto& w : resp.workers()) {
    std::string device = w.device_kind();
    if (w.devices_size() > 0) {
      device += ":";
      for (int i = 0; i < w.devices_size(); ++i) device += (i ? "," : "") + w.devices(i);
    }
    std::string jobs;
    for (const auto& id : w.jobs()) jobs += (jobs.empty() ? "" : ",") + id;
    t.AddRow({w.id(), w.host(), device, std::to_string(w.free_slots()) + "/" + std::to_string(w.slots()),
              w.alive() ? "yes" : "no", FormatAge(w.last_heartbeat_unix_ms(), now), jobs.empty() ? "-" : jobs});
  }
  t.Print(*ctx.io.out);
  return 0;
}

}  // namespace trm::cli
