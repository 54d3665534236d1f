// Chatting with a trained checkpoint: loads the model and the tokenizer the data was built with,
// renders the chat template, generates with the cached decoder (full ACT depth, as evaluation),
// and streams text as it comes. Thread safety: one thread per ChatSession.
#pragma once

#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <vector>

#include "trm/model/generate.h"

namespace trm::data {
class Tokenizer;
}

namespace trm::worker {

struct InferenceModel {
  model::Trm model{nullptr};
  std::string checkpoint_dir;
  std::string tokenizer_spec;  // the checkpoint's tokenizer/ directory
  nlohmann::json state;        // its state.json
};

// `path` is a checkpoint directory or a run directory (its newest checkpoint is used), verified
// against its manifest. `device`: auto | cpu | cuda. `dtype` auto runs the model in float32 on
// the CPU and in the checkpoint's forward dtype on CUDA; float32 / bfloat16 force one. Throws
// NotFound / DataLoss naming the path, InvalidArgument for a bad device or dtype.
InferenceModel LoadInferenceModel(const std::string& path, const std::string& device = "auto",
                                  const std::string& dtype = "auto");

// The tokens that end a reply: <|endassistant|>, <|endoftext|> and every other chat marker (an
// undertrained model may jump straight to <|sep|><|user|>), and the ids past the tokenizer's
// vocabulary that a model with a larger vocab_size could produce but no text decodes to.
std::set<int32_t> ReplyStopTokens(const data::Tokenizer& tok, int64_t model_vocab_size);

struct ChatOptions {
  model::GenerateOptions generate;  // stop tokens are filled in from the tokenizer
  bool use_cache = true;
  std::string tokenizer;            // override the checkpoint's tokenizer (Tokenizer::Load spec)
};

class ChatSession {
 public:
  ChatSession(InferenceModel model, ChatOptions options);
  ~ChatSession();

  // One user turn: generates the reply, calling on_text with each complete UTF-8 piece as it is
  // produced. Earlier turns are part of the prompt while they fit in the context; the oldest are
  // dropped first. Returns the whole reply.
  std::string Reply(const std::string& user_text, const std::function<void(const std::string&)>& on_text = {});
  // Continues raw text (no chat template), for language models.
  std::string Complete(const std::string& text, const std::function<void(const std::string&)>& on_text = {});
  void ClearHistory();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trm::worker
