#include "trm/data/chat_template.h"

#include "trm/data/special_tokens.h"
#include "trm/data/tokenizer.h"

namespace trm::data {

void RenderChat(const std::vector<Turn>& turns, bool include_system, Tokenizer& tok, RenderedChat* out) {
  const ChatTokenIds ids = ChatTokenIds::Of(tok);
  out->tokens.clear();
  out->assistant_mask.clear();
  bool first = true;
  for (const Turn& turn : turns) {
    if (turn.role == Role::kSystem && !include_system) continue;
    int32_t open = ids.user, close = ids.enduser;
    if (turn.role == Role::kAssistant) open = ids.assistant, close = ids.endassistant;
    if (turn.role == Role::kSystem) open = ids.system, close = ids.endsystem;
    if (!first) out->tokens.push_back(ids.sep);
    first = false;
    out->tokens.push_back(open);
    out->assistant_mask.resize(out->tokens.size(), 0);
    tok.Encode(turn.text, /*parse_special=*/true, &out->tokens);
    out->tokens.push_back(close);
    out->assistant_mask.resize(out->tokens.size(), turn.role == Role::kAssistant ? 1 : 0);
  }
  out->tokens.push_back(ids.endoftext);
  out->assistant_mask.push_back(0);
}

std::vector<int32_t> RenderGenerationPrompt(const std::vector<Turn>& context, bool include_system, Tokenizer& tok) {
  const ChatTokenIds ids = ChatTokenIds::Of(tok);
  RenderedChat chat;
  RenderChat(context, include_system, tok, &chat);
  std::vector<int32_t> out = std::move(chat.tokens);
  out.pop_back();  // <|endoftext|>: the conversation goes on
  if (!out.empty()) out.push_back(ids.sep);
  out.push_back(ids.assistant);
  return out;
}

std::vector<int32_t> RenderPrompt(std::string_view prompt, Tokenizer& tok) {
  const ChatTokenIds ids = ChatTokenIds::Of(tok);
  std::vector<int32_t> out = {ids.user};
  tok.Encode(prompt, /*parse_special=*/true, &out);
  out.insert(out.end(), {ids.enduser, ids.sep, ids.assistant});
  return out;
}

}  // namespace trm::data
