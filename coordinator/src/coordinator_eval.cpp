// The coordinator's evaluation-run methods (docs/control-plane.md, "Evaluation runs"): checkpoint
// selection, submissions, automatic runs, placement and results. The pure parts are in
// eval_runs.h; these hold the coordinator's lock (mu) and change records through Mutate/Insert.
#include <spdlog/spdlog.h>

#include "coordinator_impl.h"
#include "eval_runs.h"
#include "job_lifecycle.h"
#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/rpc/transfer.h"

namespace trm::coordinator {

// The checkpoint `selector` picks (latest | best:<metric or eval key> | step:N | step_N).
v1::CheckpointRecord Coordinator::Impl::PickCheckpoint(const std::string& job_id, const std::string& selector) {
  const v1::JobRecord& rec = Job(job_id);
  auto list = store->ListCheckpoints(job_id);
  if (list.empty()) NotFound("job " + job_id + " has no checkpoint yet");
  const v1::CheckpointRecord* pick = nullptr;
  if (selector == "all") {
    InvalidArgument("selector 'all': names several checkpoints; trmctl eval takes it, a download takes one");
  } else if (selector == "latest") {
    for (const auto& c : list)
      if (c.info().name() == rec.job().latest_checkpoint()) pick = &c;
    if (!pick) pick = &list.back();
  } else if (selector.rfind("best:", 0) == 0) {
    const std::string metric = selector.substr(5);
    pick = BestCheckpoint(list, metric);
    if (!pick) NotFound("selector '" + selector + "': no checkpoint of " + job_id + " has the metric '" + metric + "'");
  } else {
    std::string name = selector;
    if (selector.rfind("step:", 0) == 0) name = "step_" + selector.substr(5);
    rpc::CheckName(name, "selector");
    for (const auto& c : list)
      if (c.info().name() == name) pick = &c;
    if (!pick)
      NotFound("selector '" + selector + "': job " + job_id +
               " has no such checkpoint (use latest, best:<metric>, step:N; trmctl checkpoints " + job_id + ")");
  }
  return *pick;
}

std::pair<v1::DatasetInfo, v1::Manifest> Coordinator::Impl::StoredDataset(const std::string& ref,
                                                                         const std::string& field,
                                                                         const Principal& who) {
  const v1::DatasetInfo d = ResolveDataset(ref, who, field);
  const std::string path = DatasetDir(d.content_sha256()).string() + ".manifest";
  v1::Manifest m;
  if (!m.ParseFromString(ReadFile(path))) DataLoss(path + ": corrupt");
  return {d, m};
}

// Checks an evaluation run's submission and pins what it names: the checkpoint its selector
// picks now, the dataset's (or prompts') content hash.
v1::JobSpec Coordinator::Impl::ResolveEvalSpec(v1::JobSpec spec, const Principal& who) {
  CheckEvalSpec(spec.eval());
  auto* e = spec.mutable_eval();
  // Its result is written onto the source job's checkpoint record (and may steer retention):
  // the source job's owner's to ask for.
  RequireOwner(VisibleJob(e->source_job(), who).job(), who, "evaluate its checkpoints (pull one and run trm-eval)");
  if (IsEvalRun(Job(e->source_job())))
    InvalidArgument("eval.source_job: " + e->source_job() + " is an evaluation run, not a training job");
  const v1::CheckpointRecord ckpt = PickCheckpoint(e->source_job(), e->checkpoint().empty() ? "latest" : e->checkpoint());
  if (!e->dataset().empty()) {
    const auto [info, manifest] = StoredDataset(e->dataset(), "eval.dataset", who);
    const std::string split = e->split().empty() ? "test" : e->split();
    if (!HasSplit(manifest, split))
      InvalidArgument("eval.split: dataset '" + e->dataset() + "' has no split '" + split + "' (no files under " +
                      split + "/)");
    e->set_dataset_hash(info.content_sha256());
  } else {
    const auto [info, manifest] = StoredDataset(e->prompts(), "eval.prompts", who);
    PromptsFile(manifest);
    e->set_prompts_hash(info.content_sha256());
  }
  return EvalRunSpec(std::move(spec), ckpt.info().name());
}

std::string Coordinator::Impl::InsertEvalRun(const v1::JobSpec& spec, const std::string& owner) {
  const auto& e = spec.eval();
  std::string id;
  Insert([&](v1::JobRecord* rec) {
    id = NewJobId();
    Submit(rec, id, spec, "", e.prompts().empty() ? e.dataset_hash() : e.prompts_hash(), Now());
    rec->mutable_job()->set_kind("eval");
    rec->mutable_job()->set_owner(owner);
    EmitState(rec, "submitted: evaluation of " + e.source_job() + "/" + e.checkpoint() + " on " + spec.dataset() +
                       " (" + e.split() + ")");
  });
  return id;
}

// A training job with spec.eval_dataset uploaded `checkpoint`: its evaluation run is queued
// (the upload does not wait for it). A checkpoint uploaded again is evaluated once.
void Coordinator::Impl::SubmitAutoEval(const v1::Job& job, const std::string& checkpoint) {
  for (const auto& [id, r] : jobs) {
    const auto& e = r.job().spec().eval();
    if (IsEvalRun(r) && e.source_job() == job.id() && e.checkpoint() == checkpoint &&
        e.dataset_hash() == job.eval_dataset_hash())
      return;
  }
  v1::JobSpec spec;
  auto* e = spec.mutable_eval();
  e->set_source_job(job.id());
  e->set_dataset(job.spec().eval_dataset());
  e->set_dataset_hash(job.eval_dataset_hash());
  e->set_split("test");
  try {
    const std::string id = InsertEvalRun(EvalRunSpec(std::move(spec), checkpoint), OwnerOf(job));
    spdlog::info("job {}: checkpoint {} queued for evaluation as {}", job.id(), checkpoint, id);
  } catch (const Error& err) {
    // The checkpoint is stored either way; a lost evaluation must not fail the upload.
    spdlog::error("job {}: cannot queue the evaluation of {}: {}", job.id(), checkpoint, err.what());
  }
}

// Starts a queued evaluation run on one free slot, or fails it when its checkpoint is gone.
void Coordinator::Impl::PlaceEval(v1::JobRecord* queued, std::vector<coordinator::FreeSlots>* free) {
  const std::string id = queued->job().id();
  const auto& e = queued->job().spec().eval();
  if (!FindCheckpoint(e.source_job(), e.checkpoint())) {
    const std::string why = "checkpoint " + e.source_job() + "/" + e.checkpoint() +
                            " was deleted (retention) before the run started";
    Mutate(id, [&](v1::JobRecord* rec) { EmitState(rec, Abandon(rec, "checkpoint_deleted", why, Now())); });
    return;
  }
  const auto worker = PlaceEvalRun(*free);
  if (!worker) return;
  for (auto& f : *free)
    if (f.worker_id == *worker) --f.free;
  const std::string host = workers[*worker].rec.info().host();
  Mutate(id, [&](v1::JobRecord* rec) { EmitState(rec, Place(rec, {RankGroup{*worker, {0}}}, host, 0, Now())); });
}

// An evaluation run's result goes on its checkpoint's record (in the run's Mutate transaction).
void Coordinator::Impl::RecordEvalResult(const v1::JobRecord& run, const v1::EvalResult& reported) {
  const auto& e = run.job().spec().eval();
  auto c = FindCheckpoint(e.source_job(), e.checkpoint());
  if (!c) {
    spdlog::warn("job {}: checkpoint {}/{} is gone; its evaluation result is dropped", run.job().id(), e.source_job(),
                 e.checkpoint());
    return;
  }
  const v1::EvalResult r = EvalResultOf(run, reported, Now());
  AddEvalResult(c->mutable_info(), r);
  store->PutCheckpoint(e.source_job(), *c);
  PublishEvals(e.source_job(), c->info());
  std::string text;
  for (const auto& [k, v] : r.metrics()) text += (text.empty() ? "" : " ") + k + "=" + fmt::format("{:.6g}", v);
  spdlog::info("job {}: checkpoint {} on {} ({}): {}", e.source_job(), e.checkpoint(), r.dataset(), r.split(), text);
}

}  // namespace trm::coordinator
