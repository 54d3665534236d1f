#include "tenancy.h"
#include "eval_runs.h"

#include <algorithm>
#include <cmath>

#include "trm/common/error.h"
#include "trm/rpc/transfer.h"

namespace trm::coordinator {
namespace {

bool EndsWith(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A result's dataset matches a key's name: its name, its hash, or a 12+ digit prefix of it,
// optionally followed by /SPLIT (as trmctl checkpoints shows a split other than test).
bool Matches(const v1::EvalResult& r, std::string dataset) {
  if (const size_t slash = dataset.find('/'); slash != std::string::npos) {
    if (r.split() != dataset.substr(slash + 1)) return false;
    dataset.resize(slash);
  }
  if (r.dataset() == dataset || r.dataset_hash() == dataset) return true;
  return dataset.size() >= 12 && r.dataset_hash().rfind(dataset, 0) == 0;
}

}  // namespace

bool IsEvalRun(const v1::JobRecord& rec) { return rec.job().spec().has_eval(); }

bool ParseEvalKey(const std::string& key, std::string* dataset, std::string* metric) {
  if (key.rfind("eval[", 0) != 0) return false;
  const size_t close = key.find("]:");
  if (close == std::string::npos || close == 5 || close + 2 >= key.size()) return false;
  *dataset = key.substr(5, close - 5);
  *metric = key.substr(close + 2);
  return true;
}

std::optional<double> CheckpointMetric(const v1::CheckpointInfo& info, const std::string& key) {
  std::string dataset, metric;
  if (!ParseEvalKey(key, &dataset, &metric)) {
    auto it = info.metrics().find(key);
    if (it == info.metrics().end()) return std::nullopt;
    return it->second;
  }
  const v1::EvalResult* newest = nullptr;
  for (const auto& r : info.evals()) {
    if (!Matches(r, dataset) || !r.metrics().count(metric)) continue;
    if (!newest || r.finished_unix_ms() >= newest->finished_unix_ms()) newest = &r;
  }
  if (!newest) return std::nullopt;
  return newest->metrics().at(metric);
}

bool LowerIsBetter(const std::string& key) {
  std::string dataset, metric = key;
  ParseEvalKey(key, &dataset, &metric);
  return metric.find("loss") != std::string::npos || metric == "perplexity";
}

const v1::CheckpointRecord* BestCheckpoint(const std::vector<v1::CheckpointRecord>& list, const std::string& key) {
  const bool lower = LowerIsBetter(key);
  const v1::CheckpointRecord* best = nullptr;
  double best_value = 0;
  for (const auto& c : list) {
    const auto v = CheckpointMetric(c.info(), key);
    if (!v || !std::isfinite(*v)) continue;  // a diverged step's NaN loss is never the best
    if (!best || (lower ? *v < best_value : *v > best_value)) best = &c, best_value = *v;
  }
  return best;
}

void AddEvalResult(v1::CheckpointInfo* info, const v1::EvalResult& result) {
  auto* evals = info->mutable_evals();
  for (int i = 0; i < evals->size(); ++i) {
    const auto& r = evals->Get(i);
    if (r.dataset_hash() == result.dataset_hash() && r.split() == result.split()) {
      *evals->Mutable(i) = result;
      return;
    }
  }
  *evals->Add() = result;
}

bool HasSplit(const v1::Manifest& dataset, const std::string& split) {
  const std::string prefix = split + "/";
  return std::any_of(dataset.files().begin(), dataset.files().end(),
                     [&](const v1::FileEntry& f) { return f.path().rfind(prefix, 0) == 0; });
}

std::string PromptsFile(const v1::Manifest& prompts) {
  std::vector<std::string> found;
  for (const auto& f : prompts.files())
    if (EndsWith(f.path(), ".jsonl") || EndsWith(f.path(), ".json")) found.push_back(f.path());
  if (found.size() != 1)
    InvalidArgument("eval.prompts: dataset '" + prompts.name() + "' must hold exactly one .jsonl or .json file, it has " +
                    std::to_string(found.size()));
  return found.front();
}

void CheckEvalSpec(const v1::EvalSpec& e) {
  if (e.source_job().empty()) InvalidArgument("eval.source_job: the job whose checkpoint to evaluate is required");
  rpc::CheckName(e.source_job(), "eval.source_job");
  if (e.checkpoint().size() > 256) InvalidArgument("eval.checkpoint: longer than 256 characters");
  if (e.dataset().empty() && e.prompts().empty())
    InvalidArgument("eval: a dataset (--dataset) or a prompts dataset (--prompts) is required");
  if (!e.dataset().empty()) ParseDatasetRef(e.dataset(), "", "eval.dataset");  // NAME or OWNER/NAME
  if (!e.prompts().empty()) ParseDatasetRef(e.prompts(), "", "eval.prompts");
  if (!e.split().empty()) rpc::CheckName(e.split(), "eval.split");
}

v1::JobSpec EvalRunSpec(v1::JobSpec spec, const std::string& checkpoint) {
  auto* e = spec.mutable_eval();
  e->set_checkpoint(checkpoint);
  if (e->split().empty()) e->set_split(e->prompts().empty() ? "test" : "generate");
  spec.set_world_size(1);
  spec.set_max_restarts(std::max(spec.max_restarts(), 2));
  spec.clear_config_yaml();
  spec.clear_overrides();
  spec.clear_eval_dataset();
  spec.set_config_name("trm-eval");
  spec.set_dataset(e->prompts().empty() ? e->dataset() : e->prompts());
  spec.set_name("eval-" + e->source_job() + "-" + checkpoint);
  return spec;
}

v1::Assignment EvalRunAssignment(const v1::JobRecord& rec) {
  const auto& spec = rec.job().spec();
  v1::Assignment a;
  a.set_job_id(rec.job().id());
  a.set_attempt(rec.attempt().number());
  a.set_world_size(1);
  a.add_ranks(0);
  a.set_dataset_hash(spec.eval().dataset_hash());
  auto* e = a.mutable_eval();
  e->set_source_job(spec.eval().source_job());
  e->set_checkpoint(spec.eval().checkpoint());
  e->set_split(spec.eval().split());
  e->set_prompts_hash(spec.eval().prompts_hash());
  return a;
}

std::optional<std::string> PlaceEvalRun(const std::vector<FreeSlots>& free) {
  const FreeSlots* pick = nullptr;
  for (const auto& w : free) {
    if (w.free <= 0) continue;
    if (!pick || w.free < pick->free || (w.free == pick->free && w.worker_id < pick->worker_id)) pick = &w;
  }
  if (!pick) return std::nullopt;
  return pick->worker_id;
}

v1::EvalResult EvalResultOf(const v1::JobRecord& run, const v1::EvalResult& reported, int64_t now_ms) {
  const auto& e = run.job().spec().eval();
  v1::EvalResult r;
  r.set_dataset(e.prompts().empty() ? e.dataset() : e.prompts());
  r.set_dataset_hash(e.prompts().empty() ? e.dataset_hash() : e.prompts_hash());
  r.set_split(e.split());
  *r.mutable_metrics() = reported.metrics();
  r.set_eval_job_id(run.job().id());
  r.set_finished_unix_ms(now_ms);
  return r;
}

}  // namespace trm::coordinator
