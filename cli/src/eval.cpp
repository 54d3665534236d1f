// trmctl eval: evaluation runs of a job's checkpoints (docs/control-plane.md, "Evaluation
// runs"). One run per selected checkpoint (and per kind: --dataset's reference evaluation,
// --prompts' generation); the coordinator resolves the selector and pins the datasets.
#include "internal.h"
#include "trm/cli/commands.h"
#include "trm/rpc/client.h"

namespace trm::cli {

std::vector<v1::SubmitJobRequest> BuildEvalRequests(const EvalOptions& o,
                                                    const std::vector<v1::CheckpointInfo>& checkpoints) {
  if (o.job_id.empty()) throw UsageError("trmctl eval: JOB is required");
  if (o.dataset.empty() && o.prompts.empty()) throw UsageError("trmctl eval: --dataset NAME_OR_HASH is required");
  if (!o.prompts.empty() && !o.split.empty() && o.dataset.empty())
    throw UsageError("trmctl eval: --split applies to --dataset, not to --prompts");
  std::vector<std::string> selectors;
  if (o.selector == "all") {
    for (const auto& c : checkpoints) selectors.push_back(c.name());
    if (selectors.empty()) throw RpcError(Code::kNotFound, "trmctl eval: job " + o.job_id + " has no checkpoint yet");
  } else {
    selectors.push_back(o.selector.empty() ? "latest" : o.selector);
  }
  std::vector<v1::SubmitJobRequest> out;
  for (const auto& sel : selectors) {
    for (const bool generate : {false, true}) {
      if ((generate ? o.prompts : o.dataset).empty()) continue;
      v1::SubmitJobRequest req;
      v1::JobSpec* spec = req.mutable_spec();
      spec->set_priority(o.priority);
      spec->set_max_restarts(o.max_restarts);
      v1::EvalSpec* e = spec->mutable_eval();
      e->set_source_job(o.job_id);
      e->set_checkpoint(sel);
      if (generate) {
        e->set_prompts(o.prompts);
      } else {
        e->set_dataset(o.dataset);
        e->set_split(o.split.empty() ? "test" : o.split);
      }
      out.push_back(std::move(req));
    }
  }
  return out;
}

int RunEval(const Args& args, const Context& ctx) {
  args.ExpectPositional(1, "JOB");
  EvalOptions o;
  o.job_id = args.positional()[0];
  o.selector = args.Get("--select", "latest");
  o.dataset = args.Get("--dataset");
  o.split = args.Get("--split");
  o.prompts = args.Get("--prompts");
  o.priority = args.GetInt("--priority", 0, -1000000, 1000000);
  o.max_restarts = args.GetInt("--max-restarts", 2, 0, 1000);
  std::vector<v1::CheckpointInfo> checkpoints;
  if (o.selector == "all") {
    v1::ListCheckpointsRequest req;
    req.set_job_id(o.job_id);
    grpc::ClientContext c;
    rpc::SetDeadline(&c, ctx.timeout);
    v1::ListCheckpointsResponse resp;
    CheckRpc(ctx.jobs()->ListCheckpoints(&c, req, &resp), "checkpoints of " + o.job_id);
    checkpoints.assign(resp.checkpoints().begin(), resp.checkpoints().end());
  }
  for (const auto& req : BuildEvalRequests(o, checkpoints)) {
    grpc::ClientContext c;
    rpc::SetDeadline(&c, ctx.timeout);
    v1::SubmitJobResponse resp;
    CheckRpc(ctx.jobs()->SubmitJob(&c, req, &resp), "eval " + o.job_id + " " + req.spec().eval().checkpoint());
    *ctx.io.out << resp.job_id() << '\n';  // the run ids alone, one a line, for scripts
  }
  return 0;
}

}  // namespace trm::cli
