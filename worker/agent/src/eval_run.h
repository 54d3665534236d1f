// An evaluation run on the agent (docs/control-plane.md, "Evaluation runs"): one trm-eval
// process on one slot, started and supervised by RankSupervisor like a rank; here is what is
// particular to it: its command line, the one JSON line it prints on stdout, and the result
// event made of it.
#pragma once

#include <mutex>
#include <string>
#include <vector>

#include "trm/v1/trm.pb.h"

namespace trm::agent {

struct EvalLaunch {
  std::string eval_binary;
  std::string checkpoint_dir;  // weights-only (or a whole) checkpoint
  std::string dataset_dir;     // the dataset, for the reference evaluation
  std::string split;
  std::string prompts_file;    // set: trm-eval generate on it
  std::string output_file;     // generate's completions (JSONL)
  std::string device_kind;     // cpu | cuda (the supervisor sets CUDA_VISIBLE_DEVICES)
};

// trm-eval's argv.
std::vector<std::string> EvalCommand(const EvalLaunch& l);

// The prompts file of a fetched prompts dataset: its one .jsonl or .json file (kInvalidArgument
// naming the directory otherwise).
std::string FindPromptsFile(const std::string& dir);

// trm-eval's stdout line {"checkpoint", ..., "metrics": {NAME: number, ...}} as a result (its
// metrics only: the coordinator fills in what was evaluated). kInvalidArgument naming what is
// wrong when it is not such a line.
v1::EvalResult ParseEvalOutput(const std::string& line);

// Keeps the last stdout line that looks like a JSON object. Thread-safe.
class EvalOutput {
 public:
  void OnStdout(const std::string& line);
  std::string last() const;

 private:
  mutable std::mutex mu_;
  std::string last_;
};

// The events of the run's clean exit (`exit`, rank 0's code 0): the result, then the exit; or,
// when the output is unusable, the exit turned into a failure ("bad_output", the reason).
std::vector<v1::WorkerEvent> EvalExitEvents(const std::string& output_line, v1::WorkerEvent exit);

}  // namespace trm::agent
