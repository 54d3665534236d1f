// Generation-based evaluation of a checkpoint (`trm-eval generate`): generates a completion for
// every prompt of a prompt file (batched, with the cached decoder), scores it against the
// reference (exact match and token F1, data/text_scores.h) and reports the means. The trm-eval
// binary dispatches its `generate` subcommand to RunGenerateCommand. Usage: docs/evaluation.md.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace trm::worker {

struct GenerateEvalOptions {
  std::string checkpoint;  // a checkpoint or a run directory (its newest checkpoint)
  std::string prompts;     // data/eval_prompts.h
  std::string output;      // JSON Lines, one line a prompt; empty: not written
  int64_t max_new_tokens = 128;
  double temperature = 0.0;  // greedy by default: an evaluation should be reproducible
  int64_t top_k = 0;
  double top_p = 1.0;
  uint64_t seed = 0;         // prompt i samples with seed + i, whatever the batching
  int64_t batch_size = 8;
  std::optional<std::string> answer_regex;
  bool raw = false;             // continue the prompt text, no chat template (language models)
  bool include_system = false;  // render system turns, as trm-data build --include-system does
  std::string device = "auto";
  int64_t threads = 0;          // thread_pools.h: 0 = this machine's share
  bool progress = true;
  // Called once the prompts are ready (0 done) and after every batch with the prompts done.
  std::function<void(size_t done)> on_batch;
};

// Parses the arguments after "generate". Throws InvalidArgument for an unknown option, a missing
// or malformed value, or a missing --checkpoint / --prompts. Sets *help on -h / --help.
GenerateEvalOptions ParseGenerateEvalArgs(const std::vector<std::string>& args, bool* help);

struct GenerateEvalSummary {
  std::string checkpoint;  // the checkpoint directory used
  std::string prompts;
  int64_t rows = 0;
  double exact_match = 0, f1 = 0, mean_length = 0;  // means over the rows; length in new tokens
};

// Runs the evaluation; writes options.output atomically at the end (nothing on error). Throws
// trm::Error: InvalidArgument (options, a prompt file error, a prompt longer than the context
// naming its FILE:LINE, an invalid answer regex), NotFound / DataLoss (prompt file, checkpoint).
GenerateEvalSummary RunGenerateEval(const GenerateEvalOptions& options);

// The one JSON line printed on stdout:
// {"checkpoint", "prompts", "rows", "metrics": {"exact_match", "f1", "mean_length"}}.
std::string SummaryJsonLine(const GenerateEvalSummary& summary);

// `trm-eval generate ARGS...` (argv[0] == "generate"): returns the exit code, 0 on success, 2 for
// bad flags or input (InvalidArgument, NotFound, DataLoss, OutOfRange, FailedPrecondition: a
// missing or empty prompt file, an unreadable checkpoint), 1 for any other failure; errors are
// printed on stderr as "trm-eval: error: ...". Call it before any tensor work: it sizes the
// thread pools (--threads).
int RunGenerateCommand(int argc, char** argv);

}  // namespace trm::worker
