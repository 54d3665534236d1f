// What every copy of a Tokenizer shares: immutable after construction. Internal.
#pragma once

#include <array>
#include <memory>
#include <string>
#include <vector>

#include "bpe_model.h"
#include "trm/data/tokenizer.h"
#include "word_cache.h"

namespace trm::data {

struct SpecialToken {
  std::string text;
  int32_t id;
};

struct Tokenizer::Shared {
  // `added`: the special tokens of the files (may be empty); the chat tokens missing from them
  // are appended here.
  Shared(std::string name, internal::BpeModel model, std::vector<SpecialToken> added);

  std::string name;
  internal::BpeModel model;
  std::vector<SpecialToken> specials;  // longest first, so matching takes the longest
  std::array<bool, 256> special_first_byte{};
  std::vector<std::string> id_bytes;   // what each id decodes to
  std::vector<bool> id_known;
  bool bytes_only;                     // no merges: every byte is its own token
};

struct Tokenizer::Memo {
  internal::WordCache cache;
  std::vector<std::string_view> pieces;
};

}  // namespace trm::data
