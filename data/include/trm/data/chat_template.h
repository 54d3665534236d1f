// How a conversation becomes tokens: the reference's chat rendering (spec, "Chat data").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace trm::data {

class Tokenizer;

enum class Role { kUser, kAssistant, kSystem };

struct Turn {
  Role role;
  std::string text;
};

// One conversation in tokens:
//   <|user|>{text}<|enduser|><|sep|><|assistant|>{reply}<|endassistant|><|sep|>...<|endoftext|>
// System turns render as <|system|>{text}<|endsystem|> when include_system, else are dropped.
// Turn texts are encoded with special-token matching, as the reference tokenizes the whole
// rendered string: a literal "<|user|>" inside a message becomes the marker.
// assistant_mask[i] is 1 for the tokens of assistant replies and their <|endassistant|>.
struct RenderedChat {
  std::vector<int32_t> tokens;
  std::vector<uint8_t> assistant_mask;
};

// Replaces *out. `tok` is used (and memoizes), hence non-const.
void RenderChat(const std::vector<Turn>& turns, bool include_system, Tokenizer& tok, RenderedChat* out);

// The generation prompt that asks for the assistant turn following `context` (a conversation up
// to, not including, that turn), rendered exactly as RenderChat renders it in training data:
// RenderChat's tokens without the final <|endoftext|>, then <|sep|><|assistant|> (only
// <|assistant|> when no turn is rendered). For one user turn this equals RenderPrompt.
std::vector<int32_t> RenderGenerationPrompt(const std::vector<Turn>& context, bool include_system, Tokenizer& tok);

// The generation prompt for one user message: <|user|>{prompt}<|enduser|><|sep|><|assistant|>.
// Generation stops at <|endassistant|> or <|endoftext|>.
std::vector<int32_t> RenderPrompt(std::string_view prompt, Tokenizer& tok);

}  // namespace trm::data
