#include "trm/data/text_codec.h"

#include <gtest/gtest.h>

#include <sstream>

#include "trm/common/error.h"
#include "trm/data/tokenizer.h"

namespace trm::data {
namespace {

TEST(TextCodec, EncodeThenDecodeRoundTrips) {
  Tokenizer tok = Tokenizer::Load("byte");
  std::istringstream in("{\"text\": \"hi\"}\n\n{\"text\": \"<|sep|>\\u00e9\"}\n");
  std::ostringstream out;
  EXPECT_EQ(EncodeLines(in, out, tok, true), 2u);
  EXPECT_EQ(out.str(), "{\"ids\":[104,105]}\n{\"ids\":[259,195,169]}\n");
  std::istringstream back(out.str());
  std::ostringstream text;
  EXPECT_EQ(DecodeLines(back, text, tok), 2u);
  EXPECT_EQ(text.str(), "{\"text\":\"hi\"}\n{\"text\":\"<|sep|>\xC3\xA9\"}\n");
}

TEST(TextCodec, DecodeReplacesCutUtf8) {
  Tokenizer tok = Tokenizer::Load("byte");
  std::istringstream in("{\"ids\": [195]}\n");
  std::ostringstream out;
  DecodeLines(in, out, tok);
  EXPECT_EQ(out.str(), "{\"text\":\"\xEF\xBF\xBD\"}\n");
}

TEST(TextCodec, ErrorsNameTheLine) {
  Tokenizer tok = Tokenizer::Load("byte");
  auto message = [&](const std::string& input, bool decode) {
    std::istringstream in(input);
    std::ostringstream out;
    try {
      decode ? DecodeLines(in, out, tok, "in.jsonl") : EncodeLines(in, out, tok, false, "in.jsonl");
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), Code::kInvalidArgument);
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("{\"text\": \"a\"}\n{\"text\": }\n", false).find("in.jsonl:2:"), std::string::npos);
  EXPECT_NE(message("{\"txt\": \"a\"}\n", false).find("in.jsonl:1: expected an object with a string field \"text\""),
            std::string::npos);
  EXPECT_NE(message("{\"ids\": [1, \"x\"]}\n", true).find("in.jsonl:1"), std::string::npos);
  EXPECT_NE(message("{\"ids\": [100000]}\n", true).find("not in the vocabulary"), std::string::npos);
}

}  // namespace
}  // namespace trm::data
