#include "trm/data/tokenizer.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <sstream>

#include "bpe_model.h"
#include "byte_level.h"
#include "test_util.h"
#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/data/special_tokens.h"

namespace trm::data {
namespace {

using testing::ReadJsonLines;

// GPT-2's files come from scripts/setup.sh; without them these tests fail (Load throws NotFound
// with the instruction), on purpose: a skipped exactness test would hide a broken setup.
Tokenizer Gpt2() { return Tokenizer::Load("gpt2"); }

void ExpectCasesMatch(const std::string& path) {
  Tokenizer tok = Gpt2();
  const auto cases = ReadJsonLines(path);
  ASSERT_GT(cases.size(), 100u) << path;
  size_t failures = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::string text = cases[i]["text"];
    const std::vector<int32_t> want = cases[i]["ids"];
    const std::vector<int32_t> got = tok.Encode(text);
    if (got != want && failures++ < 5) ADD_FAILURE() << path << " case " << i << ": " << cases[i].dump();
    EXPECT_EQ(tok.Decode(got), text) << path << " case " << i;
  }
  EXPECT_EQ(failures, 0u);
}

TEST(Gpt2Tokenizer, MatchesEveryFixtureCase) {
  ExpectCasesMatch(testing::SharedDir() + "/fixtures/tokenizer/gpt2_cases.jsonl");
}

// Generated from the reference encoder by scripts/gen_gpt2_extra_cases.js: mixed scripts, emoji
// with modifiers, exotic spaces, CRLF, long digit and letter runs, code, random mixes.
TEST(Gpt2Tokenizer, MatchesExtraReferenceCases) {
  ExpectCasesMatch(testing::SourceDir() + "/tests/data/gpt2_extra_cases.jsonl");
}

TEST(Gpt2Tokenizer, ChatTokensFollowTheBaseVocabulary) {
  const Tokenizer tok = Gpt2();
  EXPECT_EQ(tok.vocab_size(), 50266);
  const ChatTokenIds ids = ChatTokenIds::Of(tok);
  EXPECT_EQ(ids.endoftext, 50256);
  EXPECT_EQ(ids.pad, 50257);
  EXPECT_EQ(ids.startoftext, 50258);
  EXPECT_EQ(ids.sep, 50259);
  EXPECT_EQ(ids.user, 50260);
  EXPECT_EQ(ids.enduser, 50261);
  EXPECT_EQ(ids.assistant, 50262);
  EXPECT_EQ(ids.endassistant, 50263);
  EXPECT_EQ(ids.system, 50264);
  EXPECT_EQ(ids.endsystem, 50265);
}

TEST(Gpt2Tokenizer, SpecialTokensAreMatchedOnlyWhenAsked) {
  Tokenizer tok = Gpt2();
  const std::string text = "<|user|>Hi there<|enduser|><|sep|><|assistant|>";
  const std::vector<int32_t> special = tok.Encode(text, true);
  std::vector<int32_t> want = {50260};
  for (int32_t id : tok.Encode("Hi there")) want.push_back(id);
  want.insert(want.end(), {50261, 50259, 50262});
  EXPECT_EQ(special, want);
  EXPECT_EQ(tok.Decode(special), text);

  const std::vector<int32_t> plain = tok.Encode(text, false);
  for (int32_t id : plain) EXPECT_LT(id, 50256);
  EXPECT_EQ(tok.Decode(plain), text);
  EXPECT_EQ(tok.Encode("a<|endoftext|>b", true), (std::vector<int32_t>{64, 50256, 65}));
}

TEST(Gpt2Tokenizer, HeapMergeLoopMatchesTheReferenceLoop) {
  // Build the model straight from the files to reach both loops.
  const std::string dir = Tokenizer::GptFilesDirs().empty() ? "" : [] {
    for (const auto& d : Tokenizer::GptFilesDirs()) {
      if (std::filesystem::exists(d + "/vocab.json")) return d;
    }
    return std::string();
  }();
  ASSERT_FALSE(dir.empty()) << "GPT-2 files missing: run scripts/setup.sh";
  std::vector<std::pair<std::string, int32_t>> vocab;
  const nlohmann::json vj = nlohmann::json::parse(ReadFile(dir + "/vocab.json"));
  for (auto it = vj.begin(); it != vj.end(); ++it) vocab.emplace_back(it.key(), it.value().get<int32_t>());
  std::vector<std::pair<std::string, std::string>> merges;
  std::istringstream in(ReadFile(dir + "/merges.txt"));
  std::string a, b, line;
  std::getline(in, line);  // #version
  while (in >> a >> b) merges.emplace_back(a, b);
  const internal::BpeModel model(vocab, merges, "gpt2");

  std::mt19937 rng(5);
  const std::vector<std::string> alphabets = {"abcdefghijklmnopqrstuvwxyz", "etaoin", "0123456789",
                                              "\",'[](){}.", "\xC3\xA9\xE4\xB8\xAD"};
  for (int i = 0; i < 300; ++i) {
    const std::string& alpha = alphabets[i % alphabets.size()];
    std::string piece;
    const int n = 1 + static_cast<int>(rng() % 400);
    for (int k = 0; k < n; ++k) piece.push_back(alpha[rng() % alpha.size()]);
    std::vector<int32_t> naive, heap;
    model.EncodeWordNaive(piece, &naive);
    model.EncodeWordHeap(piece, &heap);
    ASSERT_EQ(naive, heap) << piece;
  }
}

TEST(Gpt2Tokenizer, LongPiecesAreFast) {
  // A 1 MB run of letters without spaces is a single piece; the heap loop keeps it O(n log n).
  std::mt19937 rng(1);
  std::string text;
  for (int i = 0; i < (1 << 20); ++i) text.push_back(static_cast<char>('a' + rng() % 26));
  Tokenizer tok = Gpt2();
  const auto t0 = std::chrono::steady_clock::now();
  const auto ids = tok.Encode(text);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
  EXPECT_EQ(tok.Decode(ids), text);
}

TEST(Gpt2Tokenizer, CopiesEncodeIndependently) {
  Tokenizer a = Gpt2();
  Tokenizer b = a;
  EXPECT_EQ(a.Encode("Hello world, hello again"), b.Encode("Hello world, hello again"));
  Tokenizer c = std::move(b);
  EXPECT_EQ(c.Encode("x"), (std::vector<int32_t>{87}));
}

TEST(ByteTokenizer, LayoutIsBytesThenEndOfTextThenChatTokens) {
  Tokenizer tok = Tokenizer::Load("byte");
  EXPECT_EQ(tok.vocab_size(), 266);
  const ChatTokenIds ids = ChatTokenIds::Of(tok);
  EXPECT_EQ(ids.endoftext, 256);
  EXPECT_EQ(ids.pad, 257);
  EXPECT_EQ(ids.endsystem, 265);
  std::string all;
  for (int b = 0; b < 256; ++b) all.push_back(static_cast<char>(b));
  const auto enc = tok.Encode(all);
  ASSERT_EQ(enc.size(), 256u);
  for (int b = 0; b < 256; ++b) EXPECT_EQ(enc[b], b);
  EXPECT_EQ(tok.Decode(enc), all);
  EXPECT_EQ(tok.Encode("<|user|>a", true), (std::vector<int32_t>{260, 97}));
}

TEST(Tokenizer, SaveThenLoadGivesTheSameTokenizer) {
  for (const std::string spec : {"byte", "gpt2"}) {
    testing::TempDir dir;
    Tokenizer tok = Tokenizer::Load(spec);
    tok.Save(dir / "tok");
    for (const char* f : {"vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json",
                          "special_tokens_map.json"}) {
      EXPECT_TRUE(std::filesystem::exists(dir / ("tok/" + std::string(f)))) << f;
    }
    for (const std::string path : {dir / "tok", dir / "tok/tokenizer.json"}) {
      Tokenizer back = Tokenizer::Load(path);
      EXPECT_EQ(back.vocab_size(), tok.vocab_size()) << spec;
      for (std::string_view s : kChatSpecialTokens) EXPECT_EQ(back.SpecialId(s), tok.SpecialId(s)) << s;
      EXPECT_EQ(back.SpecialId(kEndOfText), tok.SpecialId(kEndOfText));
      const std::string text = "Hi! It's 2024 \xE2\x80\x94 caf\xC3\xA9 <|user|> \xF0\x9F\x98\x80";
      EXPECT_EQ(back.Encode(text, true), tok.Encode(text, true)) << spec;
    }
    // vocab.json + merges.txt alone (the chat tokens are re-appended in the same order).
    std::filesystem::remove(dir / "tok/tokenizer.json");
    Tokenizer plain = Tokenizer::Load(dir / "tok");
    EXPECT_EQ(plain.vocab_size(), tok.vocab_size());
    EXPECT_EQ(plain.Encode("<|pad|>x y", true), tok.Encode("<|pad|>x y", true));
  }
}

TEST(Tokenizer, ErrorsNameWhatIsWrong) {
  try {
    Tokenizer::Load("/nonexistent/tok");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kNotFound);
    EXPECT_NE(std::string(e.what()).find("/nonexistent/tok"), std::string::npos);
  }
  testing::TempDir dir;
  testing::WriteText(dir / "tokenizer.json", R"({"model": {"type": "Unigram"}})");
  try {
    Tokenizer::Load(dir / "tokenizer.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("model.type"), std::string::npos) << e.what();
  }
  testing::WriteText(dir / "vocab.json", R"({"a": 0})");
  testing::WriteText(dir / "merges.txt", "#version: 0.2\n");
  std::filesystem::remove(dir / "tokenizer.json");
  try {
    Tokenizer::Load(dir.path());
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kDataLoss);
    EXPECT_NE(std::string(e.what()).find("lacks byte"), std::string::npos) << e.what();
  }
  Tokenizer tok = Tokenizer::Load("byte");
  try {
    tok.Decode(std::vector<int32_t>{1, 2, 9999});
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("position 2"), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, MissingGpt2FilesSayHowToInstallThem) {
  // Point every lookup at an empty checkout: TRM_HOME first; the other places may still hold the
  // files, so only check the message when loading fails.
  testing::TempDir dir;
  const char* previous = std::getenv("TRM_HOME");
  const std::string saved = previous ? previous : "";
  setenv("TRM_HOME", dir.path().c_str(), 1);
  EXPECT_EQ(Tokenizer::GptFilesDirs().front(), dir.path() + "/.cache/tokenizers/gpt2");
  if (previous) {
    setenv("TRM_HOME", saved.c_str(), 1);
  } else {
    unsetenv("TRM_HOME");
  }
  try {
    Tokenizer::Load("gpt2");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("scripts/setup.sh"), std::string::npos);
  }
}

}  // namespace
}  // namespace trm::data
