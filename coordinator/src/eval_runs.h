// Evaluation runs (docs/control-plane.md, "Evaluation runs"): the pure parts the coordinator
// uses. An evaluation run is a job whose spec has an EvalSpec: one rank, no rendezvous, placed
// after every training job, that runs trm-eval on one checkpoint of another job and reports an
// EvalResult, which is stored on that checkpoint's record. Here: the eval[DATASET]:METRIC keys
// (selectors, --keep-best), results on a checkpoint, the checks a submission needs, the spec and
// the assignment of a run, and its placement. No store, no clock, no lock.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "trm/coordinator/scheduler.h"
#include "trm/v1/state.pb.h"

namespace trm::coordinator {

bool IsEvalRun(const v1::JobRecord& rec);

// "eval[DATASET]:METRIC" -> DATASET, METRIC; false for any other key (a plain metric name).
bool ParseEvalKey(const std::string& key, std::string* dataset, std::string* metric);
// The value of `key` on a checkpoint: a plain key is one of the step's metrics; an eval key is
// the metric of the newest result whose dataset name or hash (or a 12+ digit hash prefix)
// matches, of any split, or of SPLIT for DATASET/SPLIT. nullopt when the checkpoint has none.
std::optional<double> CheckpointMetric(const v1::CheckpointInfo& info, const std::string& key);
// Lower is better for losses (the metric name, not the dataset's, says), higher otherwise.
bool LowerIsBetter(const std::string& key);
// The checkpoint with the best value of `key` (the first of equals); null when none has it.
const v1::CheckpointRecord* BestCheckpoint(const std::vector<v1::CheckpointRecord>& list, const std::string& key);

// Stores `result` on the checkpoint, replacing an earlier one of the same dataset and split.
void AddEvalResult(v1::CheckpointInfo* info, const v1::EvalResult& result);

// Whether a dataset's manifest has a split (files under SPLIT/).
bool HasSplit(const v1::Manifest& dataset, const std::string& split);
// The prompts file of a pushed prompts dataset: its one .jsonl or .json file. Throws
// kInvalidArgument naming the dataset when it has none or several.
std::string PromptsFile(const v1::Manifest& prompts);
// An EvalSpec as submitted: names well formed, a split name, a dataset or prompts. Throws
// kInvalidArgument naming the field.
void CheckEvalSpec(const v1::EvalSpec& eval);

// The spec of a run of `checkpoint` of `source_job`: world size 1, `max_restarts` at least 2 (a
// run whose worker dies is run again), named eval-<source>-<checkpoint>.
v1::JobSpec EvalRunSpec(v1::JobSpec submitted, const std::string& checkpoint);

// What the worker gets for the run's attempt (rank 0 of 1, no rendezvous).
v1::Assignment EvalRunAssignment(const v1::JobRecord& rec);

// The worker for a run: the one with the fewest free slots that has one (keeps big holes for
// training); nullopt when none has a free slot.
std::optional<std::string> PlaceEvalRun(const std::vector<FreeSlots>& free);

// The result the coordinator records for a run's report (dataset and split from the run's spec,
// not from the worker).
v1::EvalResult EvalResultOf(const v1::JobRecord& run, const v1::EvalResult& reported, int64_t now_ms);

}  // namespace trm::coordinator
