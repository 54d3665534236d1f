#include "pretokenizer.h"

#include "unicode.h"

namespace trm::data::internal {
namespace {

struct Cursor {
  const unsigned char* begin;
  const unsigned char* end;

  // Class and byte length of the character at p (p < end).
  CharClass At(const unsigned char* p, size_t* len) const {
    if (*p < 0x80) {
      *len = 1;
      return ClassOf(*p);
    }
    uint32_t cp;
    *len = DecodeUtf8(p, end, &cp);
    return ClassOf(cp);
  }

  // End of the run of characters of class c that starts at p.
  const unsigned char* RunEnd(const unsigned char* p, CharClass c) const {
    size_t len;
    while (p < end && At(p, &len) == c) p += len;
    return p;
  }
};

// The contraction suffixes of the pattern, tried at an ASCII apostrophe (case-sensitive).
size_t ContractionLength(const unsigned char* p, const unsigned char* end) {
  if (end - p < 2 || p[0] != '\'') return 0;
  switch (p[1]) {
    case 's': case 't': case 'm': case 'd':
      return 2;
    case 'r':
    case 'v':
      return (end - p >= 3 && p[2] == 'e') ? 3 : 0;
    case 'l':
      return (end - p >= 3 && p[2] == 'l') ? 3 : 0;
    default:
      return 0;
  }
}

}  // namespace

void PreTokenize(std::string_view text, std::vector<std::string_view>* pieces) {
  pieces->clear();
  const auto* base = reinterpret_cast<const unsigned char*>(text.data());
  Cursor cur{base, base + text.size()};
  const unsigned char* p = cur.begin;
  auto emit = [&](const unsigned char* from, const unsigned char* to) {
    pieces->emplace_back(text.data() + (from - base), static_cast<size_t>(to - from));
  };

  while (p < cur.end) {
    if (size_t n = ContractionLength(p, cur.end)) {
      emit(p, p + n);
      p += n;
      continue;
    }
    size_t len;
    CharClass c = cur.At(p, &len);
    // " ?X+" for X in letters, numbers, other: the optional space is U+0020 only.
    const unsigned char* body = p;
    if (*p == ' ' && p + 1 < cur.end) {
      size_t next_len;
      CharClass next = cur.At(p + 1, &next_len);
      if (next != CharClass::kSpace) {
        body = p + 1;
        c = next;
      }
    }
    if (c != CharClass::kSpace) {
      const unsigned char* e = cur.RunEnd(body, c);
      emit(p, e);
      p = e;
      continue;
    }
    // Whitespace: "\s+(?!\S)" takes the run but leaves its last character when a non-space
    // follows (that character then leads the next piece); a lone one falls to "\s+".
    const unsigned char* e = cur.RunEnd(p, CharClass::kSpace);
    if (e < cur.end) {
      const unsigned char* last = p;
      const unsigned char* q = p;
      while (q < e) {
        last = q;
        size_t l;
        cur.At(q, &l);
        q += l;
      }
      if (last > p) e = last;
    }
    emit(p, e);
    p = e;
  }
}

}  // namespace trm::data::internal
