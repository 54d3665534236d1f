// The line protocols of `trm-data encode` / `trm-data decode` (docs/data.md), as functions so
// tests and tools share them.
#pragma once

#include <iosfwd>
#include <string>

namespace trm::data {

class Tokenizer;

// Reads JSON lines {"text": "..."} and writes one {"ids": [...]} line each. Blank lines are
// skipped. Throws InvalidArgument naming `source`, the line and what was expected.
// Returns the number of lines encoded.
size_t EncodeLines(std::istream& in, std::ostream& out, Tokenizer& tok, bool parse_special,
                   const std::string& source = "stdin");

// Reads JSON lines {"ids": [...]} and writes {"text": "..."}; bytes that are not valid UTF-8
// (a sequence cut between tokens) are written as U+FFFD, as the reference decoder does.
size_t DecodeLines(std::istream& in, std::ostream& out, const Tokenizer& tok,
                   const std::string& source = "stdin");

}  // namespace trm::data
