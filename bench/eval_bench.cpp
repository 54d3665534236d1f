// trm-bench eval: evaluation rows/s of trm-eval's evaluation (EvaluateCheckpoint) against the
// PyTorch reference evaluating the same model.safetensors on the same split
// (tests/tools/ref_eval.py --bench), side by side: the two alternate `--repeats` times in this one
// run, with the same threads, batch, BLAS build and OpenMP wait policy (trm/common/process_env.h),
// and each is timed over the pass alone (after a warm-up, loading excluded). Reports
// the median rows/s of each, the ratio, and the largest relative difference of their metrics.
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "bench.h"
#include "side_by_side.h"
#include "trm/common/error.h"
#include "trm/common/process_env.h"
#include "trm/worker/evaluation.h"
#include "trm/worker/thread_pools.h"

namespace trm::bench {

int RunEval(const std::vector<std::string>& args) {
  CheckFlags(args, {"checkpoint", "data", "split", "batch-size", "threads", "repeats", "reference"});
  worker::CheckpointEvalOptions o;
  o.checkpoint = FlagValue(args, "checkpoint", "");
  o.data = FlagValue(args, "data", "");
  o.split = FlagValue(args, "split", "test");
  o.batch_size = std::stoll(FlagValue(args, "batch-size", "16"));
  const int threads = std::stoi(FlagValue(args, "threads", "2"));
  const int repeats = std::stoi(FlagValue(args, "repeats", "3"));
  const std::string reference = FlagValue(args, "reference", std::string(TRM_BENCH_SHARED_DIR) + "/reference");
  if (o.checkpoint.empty() || o.data.empty()) InvalidArgument("--checkpoint DIR and --data DATASET_DIR are required");
  if (o.batch_size < 1 || threads < 1 || repeats < 1) InvalidArgument("--batch-size, --threads, --repeats: at least 1");
  worker::ApplyThreads(threads);
  // Warm-up (page cache, allocator, OpenBLAS's threads), which also resolves a run directory to
  // the checkpoint both sides then read.
  const std::string checkpoint = worker::EvaluateCheckpoint(o).checkpoint;
  const std::string ref_cmd = SameBlasPrefix() + "TRM_REFERENCE_DIR='" + reference + "' /usr/bin/python3 '" +
                              std::string(TRM_BENCH_SOURCE_DIR) + "/tests/tools/ref_eval.py' '" + checkpoint +
                              "' '" + o.data + "' --split " + o.split + " --batch-size " +
                              std::to_string(o.batch_size) + " --threads " + std::to_string(threads) + " --bench";
  std::vector<double> ours, theirs;
  worker::CheckpointEvalResult r;
  nlohmann::json ref;
  for (int i = 0; i < repeats; ++i) {
    r = worker::EvaluateCheckpoint(o);
    ours.push_back(static_cast<double>(r.rows) / r.seconds);
    ref = RunReference(ref_cmd);
    theirs.push_back(ref["rows_per_s"].get<double>());
  }
  double worst = 0;
  for (const auto& [name, v] : ref["metrics"].items()) {
    const double want = v.get<double>(), got = r.metrics.at(name);
    worst = std::max(worst, std::abs(got - want) / std::max(std::abs(want), 1e-12));
  }
  const double a = Median(ours), b = Median(theirs);
  nlohmann::json j = {{"checkpoint", r.checkpoint},
                      {"data", o.data},
                      {"split", o.split},
                      {"rows", r.rows},
                      {"batch_size", o.batch_size},
                      {"threads", threads},
                      {"repeats", repeats},
                      {"trm_rows_per_s", std::round(a * 100) / 100},
                      {"reference_rows_per_s", std::round(b * 100) / 100},
                      {"speedup", std::round(a / b * 100) / 100},
                      {"max_metric_rel_diff", worst}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace trm::bench
