// UTF-8 decoding and the character classes of GPT-2's pre-tokenisation pattern. Internal.
#pragma once

#include <cstddef>
#include <cstdint>

namespace trm::data::internal {

// The classes the pattern distinguishes: \p{L}, \p{N}, \s (JavaScript's definition, which the
// reference encoder uses) and everything else.
enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };

CharClass ClassOf(uint32_t cp);

// Decodes one code point at p (p < end). Returns its length in bytes. A byte that does not start
// a valid, shortest-form sequence decodes as itself (length 1, class kOther via *cp = 0xFFFFFFFF),
// so arbitrary bytes still round-trip through byte-level BPE.
inline size_t DecodeUtf8(const unsigned char* p, const unsigned char* end, uint32_t* cp) {
  const unsigned char c = p[0];
  if (c < 0x80) { *cp = c; return 1; }
  size_t len;
  uint32_t v, min;
  if ((c & 0xE0) == 0xC0) { len = 2; v = c & 0x1F; min = 0x80; }
  else if ((c & 0xF0) == 0xE0) { len = 3; v = c & 0x0F; min = 0x800; }
  else if ((c & 0xF8) == 0xF0) { len = 4; v = c & 0x07; min = 0x10000; }
  else { *cp = 0xFFFFFFFFu; return 1; }
  if (static_cast<size_t>(end - p) < len) { *cp = 0xFFFFFFFFu; return 1; }
  for (size_t i = 1; i < len; ++i) {
    if ((p[i] & 0xC0) != 0x80) { *cp = 0xFFFFFFFFu; return 1; }
    v = (v << 6) | (p[i] & 0x3F);
  }
  if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) { *cp = 0xFFFFFFFFu; return 1; }
  *cp = v;
  return len;
}

}  // namespace trm::data::internal
