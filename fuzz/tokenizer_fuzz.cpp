// Fuzz target: the byte-level BPE tokenizer (data/src/tokenizer.cpp, pretokenizer.cpp,
// bpe_model.cpp, word_cache.cpp). Runs GPT-2's vocabulary when scripts/setup.sh has fetched it
// (Tokenizer::Load("gpt2") finds .cache/tokenizers/gpt2 of the checkout), and always the built-in
// byte tokenizer.
// Promises under test (docs/data.md, tokenizer.h): "Bytes that are not valid UTF-8 are kept ... so
// any bytes round-trip", so Decode(Encode(text)) == text for every input, with and without
// special-token parsing (special tokens decode to their text); ids are inside the vocabulary;
// the per-piece memo gives the same ids as a fresh encode; Decode of ids outside the vocabulary is
// trm::Error(kInvalidArgument).
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

#include "fuzz_common.h"
#include "trm/data/tokenizer.h"

namespace {

using trm::data::Tokenizer;

std::vector<Tokenizer>& Tokenizers() {
  static std::vector<Tokenizer> toks = [] {
    std::vector<Tokenizer> t;
    t.push_back(Tokenizer::Load("byte"));
    try {
      t.push_back(Tokenizer::Load("gpt2"));
    } catch (const trm::Error& e) {
      std::fprintf(stderr, "tokenizer_fuzz: GPT-2 files not found, byte tokenizer only (%s)\n", e.what());
    }
    return t;
  }();
  return toks;
}

void RoundTrip(Tokenizer& tok, std::string_view text, bool parse_special) {
  const std::vector<int32_t> ids = tok.Encode(text, parse_special);
  for (int32_t id : ids) FUZZ_CHECK(id >= 0 && id < tok.vocab_size());
  FUZZ_CHECK(tok.Decode(ids) == text);
  // Second encode: served from the memo, must agree with the first.
  FUZZ_CHECK(tok.Encode(text, parse_special) == ids);
  if (!parse_special) FUZZ_CHECK(ids.size() <= text.size());  // at least one byte a token
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  Tokenizers();  // load outside the timed runs
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  for (Tokenizer& tok : Tokenizers()) {
    try {
      RoundTrip(tok, text, false);
      RoundTrip(tok, text, true);
    } catch (const trm::Error& e) {
      std::fprintf(stderr, "encode/decode of valid input threw: %s\n", e.what());
      std::abort();
    }
    // The same bytes as ids (4 a piece, little-endian), mostly outside the vocabulary.
    std::vector<int32_t> ids(size / 4);
    if (!ids.empty()) std::memcpy(ids.data(), data, ids.size() * 4);
    bool in_vocab = true;
    for (int32_t id : ids) in_vocab = in_vocab && id >= 0 && id < tok.vocab_size();
    try {
      const std::string out = tok.Decode(ids);
      FUZZ_CHECK(in_vocab);
    } catch (const trm::Error& e) {
      trm::fuzz::ExpectedError(e);
      FUZZ_CHECK(!in_vocab && e.code() == trm::Code::kInvalidArgument);
    }
  }
  return 0;
}
