#include "trm/worker/generation_eval.h"

#include <torch/torch.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/data/chat_template.h"
#include "trm/data/eval_prompts.h"
#include "trm/data/text_scores.h"
#include "trm/data/tokenizer.h"
#include "trm/model/generate.h"
#include "trm/worker/chat.h"

namespace trm::worker {
namespace {

using OrderedJson = nlohmann::ordered_json;

// "generate: 16/40 prompts, 1.9 prompts/s": a line redrawn in place on a terminal, one line per
// batch otherwise (no carriage-return noise in log files).
class GenerateProgress {
 public:
  GenerateProgress(bool enabled, size_t total)
      : enabled_(enabled), tty_(enabled && ::isatty(STDERR_FILENO) == 1), total_(total),
        start_(std::chrono::steady_clock::now()) {}
  void Done(size_t done) const {
    if (!enabled_) return;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    std::fprintf(stderr, "%sgenerate: %zu/%zu prompts, %.2f prompts/s%s", tty_ ? "\r" : "", done, total_,
                 s > 0 ? static_cast<double>(done) / s : 0.0, tty_ && done < total_ ? "" : "\n");
    std::fflush(stderr);
  }

 private:
  bool enabled_, tty_;
  size_t total_;
  std::chrono::steady_clock::time_point start_;
};

// The token ids of every prompt: the chat template with the assistant header (as training data
// renders the conversation), or the plain text with --raw. A prompt longer than the context is
// an error naming its line rather than silently cut: a cut prompt asks a different question.
std::vector<std::vector<int32_t>> TokenizePrompts(const data::EvalPromptFile& file, const GenerateEvalOptions& o,
                                                  data::Tokenizer& tok, int64_t context) {
  std::vector<std::vector<int32_t>> out;
  out.reserve(file.prompts.size());
  for (const data::EvalPrompt& p : file.prompts) {
    out.push_back(o.raw ? tok.Encode(p.prompt, /*parse_special=*/true)
                        : data::RenderGenerationPrompt(p.context, o.include_system, tok));
    if (out.back().empty()) InvalidArgument(p.where + ": the prompt is empty (--raw needs text to continue)");
    if (static_cast<int64_t>(out.back().size()) > context) {
      InvalidArgument(p.where + ": the prompt is " + std::to_string(out.back().size()) +
                      " tokens, longer than the model's context (seq_len " + std::to_string(context) + ")");
    }
  }
  return out;
}

OrderedJson ResultLine(const data::EvalPrompt& p, const std::string& completion, const data::AnswerScore& s,
                       size_t tokens) {
  OrderedJson line;
  line["prompt"] = p.prompt;
  line["reference"] = p.reference;
  line["completion"] = completion;
  line["answer"] = s.answer ? OrderedJson(*s.answer) : OrderedJson(nullptr);
  line["reference_answer"] = s.reference_answer;
  line["exact_match"] = s.exact_match ? 1 : 0;
  line["f1"] = s.f1;
  line["tokens"] = tokens;
  return line;
}

}  // namespace

GenerateEvalSummary RunGenerateEval(const GenerateEvalOptions& o) {
  std::optional<data::AnswerExtractor> extractor;
  if (o.answer_regex) extractor.emplace(*o.answer_regex);  // a bad pattern fails before the model loads
  const data::EvalPromptFile file = data::ReadEvalPrompts(o.prompts);
  InferenceModel m = LoadInferenceModel(o.checkpoint, o.device);
  data::Tokenizer tok = data::Tokenizer::Load(m.tokenizer_spec);
  const model::ArchConfig& arch = m.model->config();
  if (tok.vocab_size() > arch.vocab_size) {
    InvalidArgument(m.tokenizer_spec + ": the tokenizer has " + std::to_string(tok.vocab_size()) +
                    " tokens but the model only " + std::to_string(arch.vocab_size));
  }
  const std::vector<std::vector<int32_t>> prompts = TokenizePrompts(file, o, tok, arch.seq_len);
  std::fprintf(stderr, "loaded %s; %zu prompts (%s)\n", m.checkpoint_dir.c_str(), prompts.size(), file.format.c_str());

  model::GenerateOptions gen;
  gen.max_new_tokens = o.max_new_tokens;
  gen.sampling = {o.temperature, o.top_k, o.top_p, o.seed};
  gen.stop_tokens = ReplyStopTokens(tok, arch.vocab_size);
  GenerateProgress progress(o.progress, prompts.size());
  std::string lines;
  double exact = 0, f1 = 0, length = 0;
  const size_t batch = static_cast<size_t>(o.batch_size);
  if (o.on_batch) o.on_batch(0);
  for (size_t first = 0; first < prompts.size(); first += batch) {
    const size_t n = std::min(batch, prompts.size() - first);
    std::vector<std::vector<int32_t>> rows(prompts.begin() + static_cast<int64_t>(first),
                                           prompts.begin() + static_cast<int64_t>(first + n));
    model::Decoder decoder(m.model, /*use_cache=*/arch.causal, static_cast<int64_t>(n));
    const std::vector<std::vector<int32_t>> out = model::GenerateBatch(decoder, rows, gen, first);
    for (size_t r = 0; r < n; ++r) {
      const data::EvalPrompt& p = file.prompts[first + r];
      const std::string completion = tok.Decode(out[r]);
      const data::AnswerScore s = data::ScoreAnswer(completion, p.reference, extractor ? &*extractor : nullptr);
      exact += s.exact_match ? 1 : 0;
      f1 += s.f1;
      length += static_cast<double>(out[r].size());
      lines += ResultLine(p, completion, s, out[r].size()).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
    }
    progress.Done(first + n);
    if (o.on_batch) o.on_batch(first + n);
  }
  if (!o.output.empty()) WriteFileAtomic(o.output, lines);

  GenerateEvalSummary s;
  s.checkpoint = m.checkpoint_dir;
  s.prompts = o.prompts;
  s.rows = static_cast<int64_t>(prompts.size());
  const double rows = static_cast<double>(prompts.size());
  s.exact_match = exact / rows;
  s.f1 = f1 / rows;
  s.mean_length = length / rows;
  return s;
}

std::string SummaryJsonLine(const GenerateEvalSummary& s) {
  OrderedJson j;
  j["checkpoint"] = s.checkpoint;
  j["prompts"] = s.prompts;
  j["rows"] = s.rows;
  j["metrics"] = {{"exact_match", s.exact_match}, {"f1", s.f1}, {"mean_length", s.mean_length}};
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace trm::worker
