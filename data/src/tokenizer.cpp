#include "trm/data/tokenizer.h"

#include <algorithm>

#include "byte_level.h"
#include "pretokenizer.h"
#include "tokenizer_shared.h"
#include "trm/common/error.h"
#include "trm/data/special_tokens.h"

namespace trm::data {

Tokenizer::Shared::Shared(std::string name_in, internal::BpeModel model_in,
                          std::vector<SpecialToken> added)
    : name(std::move(name_in)), model(std::move(model_in)), specials(std::move(added)) {
  int32_t end = model.id_end();
  for (const auto& s : specials) end = std::max(end, s.id + 1);
  auto has = [&](std::string_view text) {
    return std::any_of(specials.begin(), specials.end(), [&](const SpecialToken& s) { return s.text == text; });
  };
  // <|endoftext|> is part of GPT-2's own vocabulary (50256) and is matched as a special token
  // too; a vocabulary without it (the byte tokenizer) gets it first, then the chat tokens.
  auto ensure = [&](std::string_view text) {
    if (has(text)) return;
    int32_t id = model.Find(std::string(text));
    if (id < 0) id = end++;
    specials.push_back({std::string(text), id});
  };
  ensure(kEndOfText);
  for (std::string_view chat : kChatSpecialTokens) ensure(chat);

  id_bytes.resize(static_cast<size_t>(end));
  id_known.assign(static_cast<size_t>(end), false);
  for (int32_t id = 0; id < model.id_end(); ++id) {
    const std::string& spelled = model.Spelled(id);
    if (spelled.empty()) continue;
    auto bytes = internal::CharsToBytes(spelled);
    id_bytes[id] = bytes ? *bytes : spelled;  // a token outside the byte alphabet is literal text
    id_known[id] = true;
  }
  for (const auto& s : specials) {
    if (s.text.empty()) DataLoss(name + ": special token with id " + std::to_string(s.id) + " is empty");
    id_bytes[s.id] = s.text;
    id_known[s.id] = true;
    special_first_byte[static_cast<unsigned char>(s.text[0])] = true;
  }
  std::stable_sort(specials.begin(), specials.end(),
                   [](const SpecialToken& a, const SpecialToken& b) { return a.text.size() > b.text.size(); });
  bytes_only = !model.has_merges();
}

Tokenizer::Tokenizer(std::shared_ptr<const Shared> shared)
    : shared_(std::move(shared)), memo_(std::make_unique<Memo>()) {}

Tokenizer::Tokenizer(const Tokenizer& other)
    : shared_(other.shared_), memo_(std::make_unique<Memo>()) {}

Tokenizer& Tokenizer::operator=(const Tokenizer& other) {
  if (this != &other) {
    shared_ = other.shared_;
    memo_ = std::make_unique<Memo>();
  }
  return *this;
}

Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

void Tokenizer::EncodePlain(std::string_view text, std::vector<int32_t>* out) {
  const internal::BpeModel& model = shared_->model;
  if (shared_->bytes_only) {
    for (unsigned char b : text) out->push_back(model.ByteId(b));
    return;
  }
  internal::PreTokenize(text, &memo_->pieces);
  for (std::string_view piece : memo_->pieces) {
    if (piece.size() == 1) {
      out->push_back(model.ByteId(static_cast<unsigned char>(piece[0])));
      continue;
    }
    const uint64_t h = internal::WordCache::Hash(piece);
    if (memo_->cache.Lookup(piece, h, out)) continue;
    const size_t before = out->size();
    model.EncodeWord(piece, out);
    memo_->cache.Insert(piece, h, out->data() + before, out->size() - before);
  }
}

void Tokenizer::Encode(std::string_view text, bool parse_special, std::vector<int32_t>* out) {
  if (!parse_special) {
    EncodePlain(text, out);
    return;
  }
  const Shared& s = *shared_;
  size_t segment = 0;
  size_t i = 0;
  while (i < text.size()) {
    if (!s.special_first_byte[static_cast<unsigned char>(text[i])]) {
      ++i;
      continue;
    }
    const SpecialToken* hit = nullptr;
    for (const auto& sp : s.specials) {
      if (text.compare(i, sp.text.size(), sp.text) == 0) {
        hit = &sp;
        break;
      }
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    EncodePlain(text.substr(segment, i - segment), out);
    out->push_back(hit->id);
    i += hit->text.size();
    segment = i;
  }
  EncodePlain(text.substr(segment), out);
}

std::vector<int32_t> Tokenizer::Encode(std::string_view text, bool parse_special) {
  std::vector<int32_t> ids;
  Encode(text, parse_special, &ids);
  return ids;
}

std::string Tokenizer::Decode(const int32_t* ids, size_t n) const {
  const Shared& s = *shared_;
  std::string out;
  out.reserve(n * 4);
  for (size_t i = 0; i < n; ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= static_cast<int32_t>(s.id_known.size()) || !s.id_known[id]) {
      InvalidArgument("decode: id " + std::to_string(id) + " at position " + std::to_string(i) +
                      " is not in the vocabulary of tokenizer '" + s.name + "' (size " +
                      std::to_string(s.id_known.size()) + ")");
    }
    out += s.id_bytes[id];
  }
  return out;
}

int32_t Tokenizer::vocab_size() const { return static_cast<int32_t>(shared_->id_known.size()); }

std::optional<int32_t> Tokenizer::SpecialId(std::string_view token) const {
  for (const auto& s : shared_->specials) {
    if (s.text == token) return s.id;
  }
  return std::nullopt;
}

int32_t Tokenizer::RequireSpecial(std::string_view token) const {
  if (auto id = SpecialId(token)) return *id;
  NotFound("tokenizer '" + shared_->name + "' has no special token " + std::string(token));
}

const std::string& Tokenizer::name() const { return shared_->name; }

ChatTokenIds ChatTokenIds::Of(const Tokenizer& tok) {
  ChatTokenIds ids{};
  int32_t* fields[] = {&ids.pad,       &ids.startoftext,  &ids.sep,    &ids.user,     &ids.enduser,
                       &ids.assistant, &ids.endassistant, &ids.system, &ids.endsystem};
  for (size_t i = 0; i < kChatSpecialTokens.size(); ++i) *fields[i] = tok.RequireSpecial(kChatSpecialTokens[i]);
  ids.endoftext = tok.RequireSpecial(kEndOfText);
  return ids;
}

}  // namespace trm::data
