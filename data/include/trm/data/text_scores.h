// Scoring generated answers against references, as the SQuAD evaluation script does: exact match
// and token F1 over normalised text, optionally after extracting the answer with a regular
// expression (e.g. the number after "####" in GSM8K-style data).
#pragma once

#include <optional>
#include <regex>
#include <string>
#include <string_view>

namespace trm::data {

// SQuAD's normalize_answer: lower-case (ASCII letters; other bytes are kept as they are), remove
// ASCII punctuation, drop the words "a", "an" and "the", collapse whitespace to single spaces
// and trim.
std::string NormalizeAnswer(std::string_view text);

// Normalised texts equal.
bool ExactMatch(std::string_view prediction, std::string_view reference);

// Harmonic mean of precision and recall of the normalised words (a multiset intersection). When
// either side has no word it is 1 if both have none, else 0 (SQuAD v2's rule).
double TokenF1(std::string_view prediction, std::string_view reference);

// An ECMAScript regular expression whose first match in a text is the answer: its first capture
// group when it has one, else the whole match.
class AnswerExtractor {
 public:
  // Throws InvalidArgument naming the pattern and what std::regex objected to.
  explicit AnswerExtractor(const std::string& pattern);
  // nullopt when the text has no match (or the first group did not take part in it).
  std::optional<std::string> Extract(const std::string& text) const;
  const std::string& pattern() const { return pattern_; }

 private:
  std::string pattern_;
  std::regex re_;
};

struct AnswerScore {
  std::optional<std::string> answer;  // what was compared from the completion; nullopt: no match
  std::string reference_answer;       // what was compared from the reference
  bool exact_match = false;
  double f1 = 0;
};

// Without an extractor the whole completion is compared with the whole reference. With one, the
// extracted answers are; a completion without a match scores 0, and a reference without a match
// is compared whole (so plain references such as "42" work with a pattern meant for completions).
AnswerScore ScoreAnswer(const std::string& completion, const std::string& reference, const AnswerExtractor* extractor);

}  // namespace trm::data
