#include "trm/worker/chat.h"

#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <filesystem>

#include "trm/common/error.h"
#include "trm/data/chat_template.h"
#include "trm/data/special_tokens.h"
#include "trm/data/tokenizer.h"
#include "trm/worker/checkpoint.h"

namespace trm::worker {
namespace {

namespace fs = std::filesystem;

// Length of the longest prefix of `s` that ends on a UTF-8 character boundary.
size_t CompleteUtf8Prefix(const std::string& s) {
  size_t n = s.size(), i = n;
  // Look back at most 3 bytes for the start of a possibly incomplete character.
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    unsigned char c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    size_t need = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : (c >> 3) == 0x1E ? 4 : 1;
    i = need > back ? n - back : n;
    break;
  }
  return i;
}

}  // namespace

InferenceModel LoadInferenceModel(const std::string& path, const std::string& device, const std::string& dtype) {
  if (device != "auto" && device != "cpu" && device != "cuda")
    InvalidArgument("device: expected auto, cpu or cuda, got '" + device + "'");
  if (dtype != "auto" && dtype != "float32" && dtype != "bfloat16")
    InvalidArgument("dtype: expected auto, float32 or bfloat16, got '" + dtype + "'");
  if (device == "cuda" && !torch::cuda::is_available()) InvalidArgument("device: cuda requested but no CUDA device is available");
  std::string dir = path;
  if (!fs::exists(fs::path(path) / "state.json")) {
    dir = LatestCheckpoint(path);
    if (dir.empty()) NotFound(path + ": neither a checkpoint (no state.json) nor a run directory with checkpoints");
  }
  LoadedCheckpoint ck = LoadCheckpoint(dir, /*inference_only=*/true);
  torch::Device dev(torch::kCPU);
  if (device == "cuda" || (device == "auto" && torch::cuda::is_available())) dev = torch::Device(torch::kCUDA, 0);
  nlohmann::json arch = ck.arch;
  if (dtype != "auto") arch["forward_dtype"] = dtype;
  else if (dev.is_cpu()) arch["forward_dtype"] = "float32";
  InferenceModel m;
  m.model = model::Trm(model::ArchConfig::FromJson(arch, dir + ": arch"));
  m.model->LoadStateDict(ck.model, dir + "/model.safetensors");
  m.model->to(dev);
  m.model->eval();
  m.checkpoint_dir = dir;
  m.tokenizer_spec = (fs::path(dir) / "tokenizer").string();
  m.state = std::move(ck.state);
  return m;
}

std::set<int32_t> ReplyStopTokens(const data::Tokenizer& tok, int64_t model_vocab_size) {
  const data::ChatTokenIds ids = data::ChatTokenIds::Of(tok);
  std::set<int32_t> stop = {ids.endassistant, ids.endoftext, ids.sep,       ids.user, ids.enduser,
                            ids.assistant,    ids.system,    ids.endsystem, ids.pad,  ids.startoftext};
  for (int64_t id = tok.vocab_size(); id < model_vocab_size; ++id) stop.insert(static_cast<int32_t>(id));
  return stop;
}

struct ChatSession::Impl {
  InferenceModel m;
  ChatOptions opt;
  data::Tokenizer tok;
  data::ChatTokenIds ids;
  model::Decoder decoder;
  std::vector<std::pair<std::string, std::string>> history;  // (user, assistant)

  Impl(InferenceModel model, ChatOptions o)
      : m(std::move(model)),
        opt(std::move(o)),
        tok(data::Tokenizer::Load(opt.tokenizer.empty() ? m.tokenizer_spec : opt.tokenizer)),
        ids(data::ChatTokenIds::Of(tok)),
        decoder(m.model, opt.use_cache && m.model->config().causal) {
    if (tok.vocab_size() > m.model->config().vocab_size) {
      InvalidArgument("tokenizer " + tok.name() + " has " + std::to_string(tok.vocab_size()) +
                      " tokens but the model only " + std::to_string(m.model->config().vocab_size));
    }
    for (int32_t id : ReplyStopTokens(tok, m.model->config().vocab_size)) opt.generate.stop_tokens.insert(id);
  }

  void AppendTurn(std::vector<int32_t>* out, const std::string& user, const std::string* reply) {
    out->push_back(ids.user);
    tok.Encode(user, false, out);
    out->insert(out->end(), {ids.enduser, ids.sep, ids.assistant});
    if (reply) {
      tok.Encode(*reply, false, out);
      out->insert(out->end(), {ids.endassistant, ids.sep});
    }
  }

  std::string Run(const std::vector<int32_t>& prompt, const std::function<void(const std::string&)>& on_text) {
    decoder.Reset();
    std::string text, pending;
    std::vector<int32_t> reply = model::Generate(decoder, prompt, opt.generate, [&](int32_t t) {
      pending += tok.Decode(&t, 1);
      size_t n = CompleteUtf8Prefix(pending);
      if (n > 0) {
        if (on_text) on_text(pending.substr(0, n));
        text += pending.substr(0, n);
        pending.erase(0, n);
      }
      return true;
    });
    if (!pending.empty()) {
      if (on_text) on_text(pending);
      text += pending;
    }
    return text;
  }
};

ChatSession::ChatSession(InferenceModel model, ChatOptions options)
    : impl_(std::make_unique<Impl>(std::move(model), std::move(options))) {}
ChatSession::~ChatSession() = default;

std::string ChatSession::Reply(const std::string& user_text, const std::function<void(const std::string&)>& on_text) {
  Impl& s = *impl_;
  // Leave room for a reply: drop the oldest exchanges until the prompt takes at most 3/4 of the context.
  const int64_t budget = std::max<int64_t>(1, s.decoder.capacity() * 3 / 4);
  std::vector<int32_t> prompt;
  size_t first = 0;
  while (true) {
    prompt.clear();
    for (size_t i = first; i < s.history.size(); ++i) s.AppendTurn(&prompt, s.history[i].first, &s.history[i].second);
    s.AppendTurn(&prompt, user_text, nullptr);
    if (static_cast<int64_t>(prompt.size()) <= budget || first == s.history.size()) break;
    ++first;
  }
  if (static_cast<int64_t>(prompt.size()) >= s.decoder.capacity()) {
    // A single message longer than the context: keep its end (the model reads left to right).
    prompt.erase(prompt.begin(), prompt.end() - (s.decoder.capacity() - 1));
  }
  std::string reply = s.Run(prompt, on_text);
  s.history.emplace_back(user_text, reply);
  return reply;
}

std::string ChatSession::Complete(const std::string& text, const std::function<void(const std::string&)>& on_text) {
  std::vector<int32_t> prompt = impl_->tok.Encode(text, true);
  if (static_cast<int64_t>(prompt.size()) >= impl_->decoder.capacity()) {
    prompt.erase(prompt.begin(), prompt.end() - (impl_->decoder.capacity() - 1));
  }
  return impl_->Run(prompt, on_text);
}

void ChatSession::ClearHistory() { impl_->history.clear(); }

}  // namespace trm::worker
