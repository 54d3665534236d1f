#include "byte_level.h"

#include <array>
#include <vector>

#include "unicode.h"

namespace trm::data::internal {
namespace {

struct Tables {
  std::array<std::string, 256> byte_to_chars;
  std::array<int, 324> cp_to_byte;  // the alphabet's code points are all below 256 + 68
};

void AppendUtf8(uint32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else {  // the alphabet stays below U+0800
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

Tables MakeTables() {
  // bytes_to_unicode(): printable Latin-1 bytes keep their code point, the other 68 bytes are
  // numbered 256, 257, ... in byte order.
  Tables t;
  t.cp_to_byte.fill(-1);
  uint32_t next = 256;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    const uint32_t cp = printable ? b : next++;
    AppendUtf8(cp, &t.byte_to_chars[b]);
    t.cp_to_byte[cp] = static_cast<int>(b);
  }
  return t;
}

const Tables& GetTables() {
  static const Tables tables = MakeTables();
  return tables;
}

}  // namespace

const std::string& ByteToChars(uint8_t b) { return GetTables().byte_to_chars[b]; }

std::string BytesToChars(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char b : bytes) out += ByteToChars(b);
  return out;
}

std::optional<std::string> CharsToBytes(std::string_view chars) {
  const Tables& t = GetTables();
  std::string out;
  out.reserve(chars.size());
  const auto* p = reinterpret_cast<const unsigned char*>(chars.data());
  const auto* end = p + chars.size();
  while (p < end) {
    uint32_t cp;
    p += DecodeUtf8(p, end, &cp);
    if (cp >= t.cp_to_byte.size() || t.cp_to_byte[cp] < 0) return std::nullopt;
    out.push_back(static_cast<char>(t.cp_to_byte[cp]));
  }
  return out;
}

}  // namespace trm::data::internal
