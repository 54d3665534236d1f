// The prompts of a generation-based evaluation (`trm-eval generate`): each is a conversation to
// continue and the reference its answer is scored against. Formats: docs/evaluation.md.
#pragma once

#include <string>
#include <vector>

#include "trm/data/chat_template.h"

namespace trm::data {

struct EvalPrompt {
  std::string where;          // "FILE:LINE", for messages about this prompt
  std::vector<Turn> context;  // the conversation before the reference turn
  std::string prompt;         // the context as plain text: its turns' texts joined by "\n"
  std::string reference;
};

struct EvalPromptFile {
  std::string format;  // "prompt_reference", "sharegpt", "alpaca" or "openassistant"
  std::vector<EvalPrompt> prompts;
};

// Reads a JSON Lines file (or a JSON array) of records in one format, decided by the first record:
//  - {"prompt": TEXT, "reference": TEXT}: one user turn and its expected answer;
//  - ShareGPT ("conversations"), OpenAssistant ("messages"), Alpaca ("instruction"): the last
//    assistant turn is the reference and the turns before it the context (turns after it are
//    ignored); Alpaca's output is the reference.
// Throws NotFound for a missing file and InvalidArgument "FILE:LINE: ..." saying what was
// expected for a malformed record, a record without an assistant turn or without a turn before
// it, and "FILE: no prompts" for a file without records.
EvalPromptFile ReadEvalPrompts(const std::string& path);

}  // namespace trm::data
