// `trm-eval generate`'s command line: flags, usage, exit codes.
#include <c10/util/Exception.h>

#include <cstdio>
#include <filesystem>
#include <iostream>

#include "trm/common/error.h"
#include "trm/common/exit_codes.h"
#include "trm/common/flag_values.h"
#include "trm/worker/evaluation.h"
#include "trm/worker/generation_eval.h"
#include "trm/worker/phase_file.h"
#include "trm/worker/thread_pools.h"

namespace trm::worker {
namespace {

constexpr const char* kUsage =
    "usage: trm-eval generate --checkpoint DIR --prompts FILE [--max-new-tokens N] [--temperature T]\n"
    "                         [--top-k K] [--top-p P] [--seed S] [--batch-size N] [--answer-regex RE]\n"
    "                         [--output FILE.jsonl] [--raw] [--include-system] [--device auto|cpu|cuda]\n"
    "                         [--threads N] [--no-progress]\n"
    "  FILE: JSON Lines of {\"prompt\": ..., \"reference\": ...}, or ShareGPT / Alpaca / OpenAssistant\n"
    "        conversations (the last assistant turn is the reference)\n";

int Fail(const std::string& message, int code) {
  std::fprintf(stderr, "trm-eval: error: %s\n", message.c_str());
  return code;
}

}  // namespace

GenerateEvalOptions ParseGenerateEvalArgs(const std::vector<std::string>& args, bool* help) {
  GenerateEvalOptions o;
  *help = false;
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= args.size()) InvalidArgument(a + ": needs a value");
      return args[++i];
    };
    if (a == "--checkpoint") o.checkpoint = value();
    else if (a == "--prompts") o.prompts = value();
    else if (a == "--output") o.output = value();
    else if (a == "--max-new-tokens") o.max_new_tokens = IntFlag(a, value(), 1);
    else if (a == "--temperature") o.temperature = NumberFlag(a, value());
    else if (a == "--top-k") o.top_k = IntFlag(a, value(), 0);
    else if (a == "--top-p") o.top_p = NumberFlag(a, value());
    else if (a == "--seed") o.seed = static_cast<uint64_t>(IntFlag(a, value(), 0));
    else if (a == "--batch-size") o.batch_size = IntFlag(a, value(), 1);
    else if (a == "--answer-regex") o.answer_regex = value();
    else if (a == "--raw") o.raw = true;
    else if (a == "--include-system") o.include_system = true;
    else if (a == "--device") o.device = value();
    else if (a == "--threads") o.threads = IntFlag(a, value(), 0);
    else if (a == "--no-progress") o.progress = false;
    else if (a == "-h" || a == "--help") *help = true;
    else InvalidArgument("unknown option " + a);
  }
  if (*help) return o;
  if (o.checkpoint.empty()) InvalidArgument("--checkpoint: required");
  if (o.prompts.empty()) InvalidArgument("--prompts: required");
  if (o.device != "auto" && o.device != "cpu" && o.device != "cuda") {
    InvalidArgument("--device: expected auto, cpu or cuda, got '" + o.device + "'");
  }
  if (o.temperature < 0) InvalidArgument("--temperature: must not be negative");
  if (!(o.top_p > 0 && o.top_p <= 1)) InvalidArgument("--top-p: must be in (0, 1]");
  return o;
}

int RunGenerateCommand(int argc, char** argv) {
  std::vector<std::string> args(argv + (argc > 0 ? 1 : 0), argv + argc);
  try {
    bool help = false;
    GenerateEvalOptions o;
    try {
      o = ParseGenerateEvalArgs(args, &help);
    } catch (const Error& e) {
      std::fprintf(stderr, "trm-eval: error: %s\n%s", e.what(), kUsage);
      return kExitBadInput;
    }
    if (help) {
      std::fputs(kUsage, stderr);
      return kExitBadInput;
    }
    // Before any tensor work (thread_pools.h): the pools are process-wide.
    ApplyThreads(ResolveThreadsForThisProcess(o.threads));
    // Under trm-worker, as the loss-based evaluation (trm_eval.cpp): the hang budget bounds a batch.
    std::unique_ptr<PhaseWriter> phases = PhaseWriterFromEnv();
    if (phases) {
      phases->Enter(Phase::kStarting, 0);
      o.on_batch = [w = phases.get()](size_t done) { w->Enter(Phase::kEval, static_cast<int64_t>(done)); };
    }
    const GenerateEvalSummary s = RunGenerateEval(o);
    std::cout << SummaryJsonLine(s) << std::endl;
    return kExitOk;
  } catch (const Error& e) {
    return Fail(e.what(), EvalExitCode(e));
  } catch (const std::filesystem::filesystem_error& e) {
    const Error converted = ToError(e);
    return Fail(converted.what(), EvalExitCode(converted));
  } catch (const c10::Error& e) {
    return Fail(e.what_without_backtrace(), kExitError);  // without LibTorch's C++ backtrace
  } catch (const std::exception& e) {
    return Fail(e.what(), kExitError);
  }
}

}  // namespace trm::worker
