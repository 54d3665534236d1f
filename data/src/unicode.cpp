#include "unicode.h"

#include <algorithm>
#include <array>

namespace trm::data::internal {
namespace {

struct CodeRange {
  uint32_t first, last;
};

#include "unicode_tables.inc"

template <size_t N>
bool InRanges(const CodeRange (&ranges)[N], uint32_t cp) {
  const CodeRange* it = std::upper_bound(std::begin(ranges), std::end(ranges), cp,
                                         [](uint32_t v, const CodeRange& r) { return v < r.first; });
  return it != std::begin(ranges) && cp <= (it - 1)->last;
}

// JavaScript's \s: WhiteSpace and LineTerminator. Note it lacks U+0085 and U+001C..U+001F,
// which Python's \s has; the reference runs in JavaScript.
bool IsJsSpace(uint32_t cp) {
  switch (cp) {
    case 0x09: case 0x0A: case 0x0B: case 0x0C: case 0x0D: case 0x20: case 0xA0: case 0x1680:
    case 0x2028: case 0x2029: case 0x202F: case 0x205F: case 0x3000: case 0xFEFF:
      return true;
    default:
      return cp >= 0x2000 && cp <= 0x200A;
  }
}

std::array<CharClass, 128> MakeAsciiTable() {
  std::array<CharClass, 128> t{};
  for (uint32_t c = 0; c < 128; ++c) {
    t[c] = IsJsSpace(c) ? CharClass::kSpace
         : InRanges(kLetterRanges, c) ? CharClass::kLetter
         : InRanges(kNumberRanges, c) ? CharClass::kNumber
         : CharClass::kOther;
  }
  return t;
}

const std::array<CharClass, 128> kAscii = MakeAsciiTable();

}  // namespace

CharClass ClassOf(uint32_t cp) {
  if (cp < 128) return kAscii[cp];
  if (cp > 0x10FFFF) return CharClass::kOther;
  if (IsJsSpace(cp)) return CharClass::kSpace;
  if (InRanges(kLetterRanges, cp)) return CharClass::kLetter;
  if (InRanges(kNumberRanges, cp)) return CharClass::kNumber;
  return CharClass::kOther;
}

}  // namespace trm::data::internal
