// trm-eval --checkpoint DIR --data DATASET_DIR [--split test] [--batch-size N]
//   [--device auto|cpu|cuda] [--dtype auto|float32|bfloat16] [--threads N] [--no-progress]
// trm-eval generate --checkpoint DIR --prompts FILE [...]   (generation_eval.h)
// Evaluates a checkpoint (or a run directory's newest) on a dataset split as the trainer's
// evaluation does, or by generating answers to prompts, and prints one JSON line on stdout.
// Exit 2: bad input; 1: anything else.
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <string>

#include "trm/common/error.h"
#include "trm/common/flag_values.h"
#include "trm/common/process_env.h"
#include "trm/worker/evaluation.h"
#include "trm/worker/generation_eval.h"
#include "trm/worker/phase_file.h"
#include "trm/worker/thread_pools.h"

namespace {

int Usage() {
  std::fprintf(stderr,
               "usage: trm-eval --checkpoint DIR --data DATASET_DIR [--split test] [--batch-size N]\n"
               "                [--device auto|cpu|cuda] [--dtype auto|float32|bfloat16] [--threads N] [--no-progress]\n"
               "       trm-eval generate --checkpoint DIR --prompts FILE [--max-new-tokens N] [--temperature T]\n"
               "                [--answer-regex RE] [--output FILE.jsonl] [--batch-size N] [...]  (docs/evaluation.md)\n");
  return 2;
}

// One line per tenth of the split, so a log gets no carriage-return noise.
void ShowProgress(int64_t done, int64_t total, int64_t* last_tenth) {
  const int64_t tenth = total > 0 ? done * 10 / total : 10;
  if (tenth == *last_tenth) return;
  *last_tenth = tenth;
  std::fprintf(stderr, "trm-eval: %lld/%lld rows\n", static_cast<long long>(done), static_cast<long long>(total));
}

}  // namespace

int main(int argc, char** argv) {
  trm::ConfigureComputeProcess(argc, argv);
  // stdout carries the one result line; log lines (a checkpoint skipped, ...) go to stderr.
  spdlog::set_default_logger(spdlog::stderr_color_mt("trm-eval"));
  if (argc > 1 && std::string(argv[1]) == "generate") return trm::worker::RunGenerateCommand(argc - 1, argv + 1);
  trm::worker::CheckpointEvalOptions o;
  int64_t threads = 0;
  bool progress = true;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) trm::InvalidArgument(a + ": needs a value");
        return argv[++i];
      };
      if (a == "--checkpoint") o.checkpoint = value();
      else if (a == "--data") o.data = value();
      else if (a == "--split") o.split = value();
      else if (a == "--batch-size") o.batch_size = trm::IntFlag(a, value(), 0);
      else if (a == "--device") o.device = value();
      else if (a == "--dtype") o.dtype = value();
      else if (a == "--threads") threads = trm::IntFlag(a, value(), 0);
      else if (a == "--no-progress") progress = false;
      else if (a == "-h" || a == "--help") return Usage();
      else trm::InvalidArgument("unknown option " + a);
    }
    if (o.checkpoint.empty() || o.data.empty()) return Usage();
    trm::worker::ApplyThreads(trm::worker::ResolveThreadsForThisProcess(threads));
    // Under trm-worker: loading is "starting", the pass "eval", entered again after every batch, so
    // the coordinator's hang budget bounds the time between batches, not a long evaluation.
    std::unique_ptr<trm::worker::PhaseWriter> phases = trm::worker::PhaseWriterFromEnv();
    if (phases) phases->Enter(trm::worker::Phase::kStarting, 0);
    int64_t last_tenth = -1;
    o.on_progress = [&](int64_t done, int64_t total) {
      if (phases) phases->Enter(trm::worker::Phase::kEval, done);
      if (progress) ShowProgress(done, total, &last_tenth);
    };
    const trm::worker::CheckpointEvalResult r = trm::worker::EvaluateCheckpoint(o);
    std::printf("%s\n", r.ToJson().dump().c_str());
    return 0;
  } catch (const trm::Error& e) {
    std::fprintf(stderr, "trm-eval: error: %s\n", e.what());
    return trm::worker::EvalExitCode(e);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "trm-eval: error: %s\n", e.what());
    return 1;
  }
}
