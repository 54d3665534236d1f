// SQuAD-style answer scoring: normalisation, exact match, token F1 and answer extraction.
#include "trm/data/text_scores.h"

#include <gtest/gtest.h>

#include "trm/common/error.h"

namespace trm::data {
namespace {

TEST(TextScoresTest, NormalisesLikeSquad) {
  EXPECT_EQ(NormalizeAnswer("The  Cat, sat on a MAT!"), "cat sat on mat");
  EXPECT_EQ(NormalizeAnswer("  An apple\tand\nthe pear.  "), "apple and pear");
  // Only whole words are articles; punctuation goes first, so "a-n" becomes the article "an".
  EXPECT_EQ(NormalizeAnswer("theory anthem a-n thee"), "theory anthem thee");
  EXPECT_EQ(NormalizeAnswer("(the)"), "");
  EXPECT_EQ(NormalizeAnswer("1,234.5"), "12345");
  EXPECT_EQ(NormalizeAnswer("Ünïcode KEPT"), "Ünïcode kept");  // ASCII case folding only
  EXPECT_EQ(NormalizeAnswer(""), "");
}

TEST(TextScoresTest, ExactMatchComparesNormalisedText) {
  EXPECT_TRUE(ExactMatch("The answer is 42.", "answer is 42"));
  EXPECT_FALSE(ExactMatch("answer is 42", "answer is 43"));
  EXPECT_TRUE(ExactMatch("", "the"));  // both normalise to nothing
}

TEST(TextScoresTest, TokenF1CountsSharedWordsOnce) {
  EXPECT_DOUBLE_EQ(TokenF1("the cat sat", "cat sat"), 1.0);
  // prediction {red, fox, jumps}, reference {quick, red, fox}: 2 shared; P = R = 2/3.
  EXPECT_DOUBLE_EQ(TokenF1("red fox jumps", "the quick red fox"), 2.0 / 3.0);
  // prediction {dog, dog, dog}, reference {dog, cat}: 1 shared (multiset); P = 1/3, R = 1/2,
  // F1 = 2 * (1/6) / (5/6) = 0.4.
  EXPECT_DOUBLE_EQ(TokenF1("dog dog dog", "dog cat"), 0.4);
  EXPECT_DOUBLE_EQ(TokenF1("nothing shared", "at all"), 0.0);
  EXPECT_DOUBLE_EQ(TokenF1("", "a the"), 1.0);  // both empty after normalisation
  EXPECT_DOUBLE_EQ(TokenF1("", "word"), 0.0);
  EXPECT_DOUBLE_EQ(TokenF1("word", "!!"), 0.0);
}

TEST(TextScoresTest, ExtractsTheFirstGroupOrTheWholeMatch) {
  AnswerExtractor gsm("####\\s*(-?[0-9.,]+)");
  EXPECT_EQ(gsm.Extract("so 3 + 4 = 7\n#### 7"), "7");
  EXPECT_EQ(gsm.Extract("#### -1,250.5 and #### 9"), "-1,250.5");  // the first match
  EXPECT_EQ(gsm.Extract("the answer is 7"), std::nullopt);
  AnswerExtractor whole("[0-9]+");
  EXPECT_EQ(whole.Extract("abc 123 def 456"), "123");
  AnswerExtractor optional_group("x(y)?");
  EXPECT_EQ(optional_group.Extract("xz"), std::nullopt);  // the group did not take part
  try {
    AnswerExtractor bad("(unclosed");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kInvalidArgument);
    EXPECT_NE(std::string(e.what()).find("(unclosed"), std::string::npos) << e.what();
  }
}

TEST(TextScoresTest, ScoresExtractedAnswersAndZeroWithoutAMatch) {
  AnswerExtractor gsm("####\\s*(-?[0-9.,]+)");
  AnswerScore s = ScoreAnswer("work... #### 42", "Natalia sold 48/2 = 24 clips.\n#### 42", &gsm);
  EXPECT_EQ(s.answer, "42");
  EXPECT_EQ(s.reference_answer, "42");
  EXPECT_TRUE(s.exact_match);
  EXPECT_DOUBLE_EQ(s.f1, 1.0);
  s = ScoreAnswer("no marker here, 42", "#### 42", &gsm);
  EXPECT_EQ(s.answer, std::nullopt);
  EXPECT_FALSE(s.exact_match);
  EXPECT_DOUBLE_EQ(s.f1, 0.0);
  s = ScoreAnswer("#### 41", "#### 42", &gsm);
  EXPECT_FALSE(s.exact_match);
  EXPECT_DOUBLE_EQ(s.f1, 0.0);
  // A reference without a match is compared whole.
  s = ScoreAnswer("#### 42", "42", &gsm);
  EXPECT_EQ(s.reference_answer, "42");
  EXPECT_TRUE(s.exact_match);
  // Without an extractor the whole texts are compared.
  s = ScoreAnswer("The red fox jumps.", "quick red fox", nullptr);
  EXPECT_EQ(s.answer, "The red fox jumps.");
  EXPECT_FALSE(s.exact_match);
  EXPECT_DOUBLE_EQ(s.f1, 2.0 / 3.0);
}

}  // namespace
}  // namespace trm::data
