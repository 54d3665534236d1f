// The chat format's special tokens (reference spec, "Chat data"). Layout: docs/data.md.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace trm::data {

class Tokenizer;

inline constexpr std::string_view kEndOfText = "<|endoftext|>";

// Appended after the base vocabulary in exactly this order: with GPT-2 they take ids
// 50257..50265 (vocab_size 50266), with the byte tokenizer 257..265.
inline constexpr std::array<std::string_view, 9> kChatSpecialTokens = {
    "<|pad|>",       "<|startoftext|>", "<|sep|>",    "<|user|>",     "<|enduser|>",
    "<|assistant|>", "<|endassistant|>", "<|system|>", "<|endsystem|>"};

// Ids of the markers in one tokenizer.
struct ChatTokenIds {
  int32_t pad, startoftext, sep, user, enduser, assistant, endassistant, system, endsystem;
  int32_t endoftext;

  // Throws NotFound when `tok` lacks one of them (Tokenizer::Load always adds them).
  static ChatTokenIds Of(const Tokenizer& tok);
};

}  // namespace trm::data
