#include "pretokenizer.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace trm::data::internal {
namespace {

std::vector<std::string> Split(std::string_view text) {
  std::vector<std::string_view> pieces;
  PreTokenize(text, &pieces);
  return std::vector<std::string>(pieces.begin(), pieces.end());
}

using V = std::vector<std::string>;

TEST(PreTokenize, WordsTakeOneLeadingSpace) {
  EXPECT_EQ(Split("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(Split("Hello  world"), (V{"Hello", " ", " world"}));
  EXPECT_EQ(Split(" a"), (V{" a"}));
}

TEST(PreTokenize, Contractions) {
  EXPECT_EQ(Split("I'm it's we'll they've"), (V{"I", "'m", " it", "'s", " we", "'ll", " they", "'ve"}));
  EXPECT_EQ(Split("CAN'T"), (V{"CAN", "'", "T"}));  // case-sensitive, as in the reference
  EXPECT_EQ(Split("!!'s"), (V{"!!'", "s"}));       // only at the start of a piece
}

TEST(PreTokenize, WhitespaceLeavesItsLastCharacterToTheNextPiece) {
  EXPECT_EQ(Split("a   b"), (V{"a", "  ", " b"}));
  EXPECT_EQ(Split("a\n\nb"), (V{"a", "\n", "\n", "b"}));
  EXPECT_EQ(Split("a \n b"), (V{"a", " \n", " b"}));
  EXPECT_EQ(Split("x   "), (V{"x", "   "}));  // at the end the run stays whole
  EXPECT_EQ(Split("\t\tx"), (V{"\t", "\t", "x"}));
}

TEST(PreTokenize, NumbersLettersAndOtherAreSeparateRuns) {
  EXPECT_EQ(Split("abc123def"), (V{"abc", "123", "def"}));
  EXPECT_EQ(Split("x += 10;"), (V{"x", " +=", " 10", ";"}));
  EXPECT_EQ(Split("\xC2\xB2\xE2\x85\xA0"), (V{"\xC2\xB2\xE2\x85\xA0"}));  // ² Ⅰ are \p{N}
}

TEST(PreTokenize, UnicodeClasses) {
  // é is a letter; U+0301 (combining acute) is not; U+00A0 is JavaScript whitespace, U+200B not.
  EXPECT_EQ(Split("caf\xC3\xA9"), (V{"caf\xC3\xA9"}));
  EXPECT_EQ(Split("e\xCC\x81x"), (V{"e", "\xCC\x81", "x"}));
  EXPECT_EQ(Split("a\xC2\xA0" "b"), (V{"a", "\xC2\xA0", "b"}));
  EXPECT_EQ(Split("a\xE2\x80\x8B" "b"), (V{"a", "\xE2\x80\x8B", "b"}));
}

TEST(PreTokenize, InvalidUtf8BytesAreOtherCharacters) {
  EXPECT_EQ(Split("a\xFF\xFE" "b"), (V{"a", "\xFF\xFE", "b"}));
  EXPECT_EQ(Split(" \xC3"), (V{" \xC3"}));  // truncated sequence
}

TEST(PreTokenize, PiecesConcatenateToTheInput) {
  const std::string text = "  mixed \t\r\n text, 123 \xF0\x9F\x98\x80\xF0\x9F\x8F\xBD   end  ";
  std::string joined;
  for (const auto& p : Split(text)) joined += p;
  EXPECT_EQ(joined, text);
}

}  // namespace
}  // namespace trm::data::internal
