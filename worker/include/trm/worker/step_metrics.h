// The metrics contract between trm-train and its readers, spelled in this one place.
//
// trm-train appends one JSON object a line to run_dir/metrics.jsonl: after every optimiser step
// a StepMetrics, after every evaluation an EvalMetrics ({"step": N, "eval": true, "eval_<name>":
// value, ...}). trm-worker follows the file and forwards every numeric key to the coordinator,
// which reads some back by name (the job's loss, tokens/s, ACT steps) and keeps the best
// checkpoint by one (eval_lm_loss by default); trmctl shows them. Readers that hold a line as a
// name -> number map look keys up with metric_key and EvalKey, or read it whole with
// StepMetrics::FromValues.
//
// Torch-free (in trm_train_config): the agent, the coordinator and trmctl link it.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <string>

namespace trm::worker {

// The keys of a training step's line.
namespace metric_key {
inline constexpr char kStep[] = "step";
inline constexpr char kTotalSteps[] = "total_steps";
inline constexpr char kEpoch[] = "epoch";
inline constexpr char kLr[] = "lr";
inline constexpr char kLmLoss[] = "lm_loss";
inline constexpr char kQHaltLoss[] = "q_halt_loss";
inline constexpr char kQContinueLoss[] = "q_continue_loss";
inline constexpr char kAccuracy[] = "accuracy";
inline constexpr char kExactAccuracy[] = "exact_accuracy";
inline constexpr char kQHaltAccuracy[] = "q_halt_accuracy";
inline constexpr char kActSteps[] = "act_steps";
inline constexpr char kGradNorm[] = "grad_norm";
inline constexpr char kTokensPerS[] = "tokens_per_s";
inline constexpr char kStepS[] = "step_s";
inline constexpr char kAllreduceS[] = "allreduce_s";
inline constexpr char kAllreduceOverlapped[] = "allreduce_overlapped";
inline constexpr char kSkipped[] = "skipped";
// Only on an evaluation's line: true. Its values are under EvalKey(name).
inline constexpr char kEval[] = "eval";
// Evaluation values besides the losses and accuracies above: rows evaluated, rows that halted.
inline constexpr char kRows[] = "rows";
inline constexpr char kCount[] = "count";
}  // namespace metric_key

// Evaluation values are written as "eval_" + name, so they stay distinct from the training
// metrics wherever the two are merged (a checkpoint's info holds both).
inline constexpr char kEvalPrefix[] = "eval_";
std::string EvalKey(const std::string& name);

struct StepMetrics {
  int64_t step = 0;          // optimiser steps done
  int64_t total_steps = 0;
  double epoch = 0;          // fractional epochs of training data consumed
  double lr = 0;
  double lm_loss = 0;        // per sequence, averaged over the step's rows
  double q_halt_loss = 0;
  double q_continue_loss = 0;
  double accuracy = 0;       // over halted rows
  double exact_accuracy = 0;
  double q_halt_accuracy = 0;
  double act_steps = 0;      // mean ACT steps of the rows that halted
  double halted_rows = 0;    // not written (in-process: the progress display)
  double grad_norm = 0;      // before clipping
  double tokens_per_s = 0;
  double step_s = 0;
  double allreduce_s = 0;    // time waiting for the gradient and metric all-reduces (data parallel)
  int64_t allreduce_overlapped = 0;  // gradient buckets whose all-reduce started during backward
  bool skipped = false;      // non-finite gradients: update skipped
  int64_t skipped_total = 0;  // not written (in-process: TrainResult)

  // The line's object: every field but halted_rows and skipped_total.
  nlohmann::json ToJson() const;
  // A typed view of a line held as name -> number (the agent's and the coordinator's form: it
  // keeps numeric keys only, so `skipped` reads false). A missing key reads 0.
  template <class Map>
  static StepMetrics FromValues(const Map& values) {
    return FromLookup([&](const std::string& key) {
      auto it = values.find(key);
      return it == values.end() ? 0.0 : static_cast<double>(it->second);
    });
  }
  static StepMetrics FromLookup(const std::function<double(const std::string& key)>& value);
};

struct EvalMetrics {
  int64_t step = 0;
  // By name, unprefixed: lm_loss, q_halt_loss, accuracy, exact_accuracy, q_halt_accuracy,
  // act_steps, count, rows.
  std::map<std::string, double> values;

  // {"step": step, "eval": true, EvalKey(name): value for every value}.
  nlohmann::json ToJson() const;
};

// One line of metrics.jsonl as a follower sees it, whichever kind it is.
struct MetricsLine {
  int64_t step = 0;
  int64_t total_steps = 0;  // 0 on evaluation lines, which do not carry it
  bool eval = false;
  std::map<std::string, double> values;  // every numeric key, under its name in the file
};

// Parses one line (without its newline). "step", "total_steps" and "eval" may be missing (0, 0,
// false) but not of another type; other keys that are not numbers are left out of `values`,
// except null under a floating-point StepMetrics key (lm_loss, grad_norm, ...): the writer's
// NaN or infinity, read as NaN (so a diverged loss reaches the coordinator as NaN, not as 0).
// Throws trm::Error(kInvalidArgument) "<where>: ..." for a line that is not a JSON object or
// names the key of the wrong type.
MetricsLine ParseMetricsLine(const std::string& line, const std::string& where);

}  // namespace trm::worker
