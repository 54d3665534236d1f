// Byte-level BPE tokenizer (GPT-2's scheme, exact to the reference encoder) with added special
// tokens. Token layout and file formats: docs/data.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace trm::data {

// Thread safety: Encode memoizes per piece, so one Tokenizer must not be used by two threads at
// once. Copies are cheap: they share the immutable vocabulary and each starts its own memo; give
// every thread its own copy. Decode and the accessors are const and safe to share.
class Tokenizer {
 public:
  // `spec` is one of:
  //   "byte"  built-in, no files: ids 0..255 are the bytes, 256 is <|endoftext|>, then the chat
  //           tokens (vocab_size 266);
  //   "gpt2"  GPT-2's files installed by scripts/setup.sh (see GptFilesDir);
  //   a directory holding tokenizer.json (Hugging Face, BPE with ByteLevel pre-tokenizer) or
  //           vocab.json + merges.txt; or the path of a tokenizer.json file.
  // The chat tokens (ChatTokenIds) missing from the files are appended after the largest id, in
  // the fixed order of kChatSpecialTokens. Throws trm::Error (NotFound, DataLoss, InvalidArgument).
  static Tokenizer Load(const std::string& spec);

  Tokenizer(const Tokenizer& other);
  Tokenizer& operator=(const Tokenizer& other);
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Appends the ids of `text` (UTF-8; invalid bytes are kept as bytes) to *out. With
  // parse_special, exact occurrences of special tokens become their ids (longest match first) and
  // the text between them is encoded separately; without it they are plain text.
  void Encode(std::string_view text, bool parse_special, std::vector<int32_t>* out);
  std::vector<int32_t> Encode(std::string_view text, bool parse_special = false);

  // Concatenated bytes of the tokens; special tokens decode to their text. Throws InvalidArgument
  // naming the position of an id outside the vocabulary.
  std::string Decode(const int32_t* ids, size_t n) const;
  std::string Decode(const std::vector<int32_t>& ids) const { return Decode(ids.data(), ids.size()); }

  // One past the largest id (GPT-2 with the chat tokens: 50266).
  int32_t vocab_size() const;
  // Id of a special token such as "<|user|>", or nullopt.
  std::optional<int32_t> SpecialId(std::string_view token) const;
  // Same, throwing NotFound when the tokenizer lacks it.
  int32_t RequireSpecial(std::string_view token) const;
  // "byte", "gpt2" or the path it was loaded from.
  const std::string& name() const;

  // Writes vocab.json, merges.txt and a Hugging Face tokenizer.json (plus tokenizer_config.json
  // and special_tokens_map.json) into `dir`, which is created; Load(dir) gives back the same
  // tokenizer and the Hugging Face GPT-2 tokenizer classes can load it.
  void Save(const std::string& dir) const;

  // Where "gpt2" is looked for, first existing wins: $TRM_HOME/.cache/tokenizers/gpt2, then
  // <directory of the running executable>/../../.cache/tokenizers/gpt2 (build/bin -> checkout),
  // then the checkout this library was built from.
  static std::vector<std::string> GptFilesDirs();

  // Opaque, defined in data/src/ (the vocabulary every copy shares; one copy's memo).
  struct Shared;
  struct Memo;
  explicit Tokenizer(std::shared_ptr<const Shared> shared);

 private:
  void EncodePlain(std::string_view text, std::vector<int32_t>* out);

  std::shared_ptr<const Shared> shared_;
  std::unique_ptr<Memo> memo_;
};

}  // namespace trm::data
