// GPT-2's byte <-> printable-character mapping: vocab.json and merges.txt spell every byte as one
// printable code point (bytes_to_unicode), so tokens can be stored as text. Internal.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace trm::data::internal {

// UTF-8 of the printable character that stands for byte b.
const std::string& ByteToChars(uint8_t b);

// Spells raw bytes in the byte-level alphabet.
std::string BytesToChars(std::string_view bytes);

// The inverse; nullopt when `chars` holds a character outside the 256-character alphabet
// (an added token such as "<|pad|>" is spelled in plain ASCII and decodes to itself).
std::optional<std::string> CharsToBytes(std::string_view chars);

}  // namespace trm::data::internal
