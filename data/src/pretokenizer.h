// GPT-2's pre-tokenisation, written out by hand (std::regex has no \p{L}/\p{N} and is slow).
// It reproduces exactly the JavaScript pattern of the reference encoder:
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// Internal.
#pragma once

#include <string_view>
#include <vector>

namespace trm::data::internal {

// Replaces *pieces with the consecutive pieces of `text` (views into it); their concatenation is
// `text`. Bytes that are not valid UTF-8 count as "other" characters, one byte each.
void PreTokenize(std::string_view text, std::vector<std::string_view>* pieces);

}  // namespace trm::data::internal
