#include "trm/data/text_scores.h"

#include <map>
#include <vector>

#include "trm/common/error.h"

namespace trm::data {
namespace {

// Python's string.punctuation.
bool IsPunct(unsigned char c) { return (c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) || (c >= 123 && c <= 126); }
// Python's str.split() separators within ASCII.
bool IsSpace(unsigned char c) { return c == ' ' || (c >= 9 && c <= 13) || (c >= 28 && c <= 31); }

std::vector<std::string> Words(std::string_view text) {
  std::vector<std::string> words;
  std::string w;
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (IsSpace(c)) {
      if (!w.empty()) words.push_back(std::move(w));
      w.clear();
    } else {
      w.push_back(ch);
    }
  }
  if (!w.empty()) words.push_back(std::move(w));
  return words;
}

std::vector<std::string> NormalizedWords(std::string_view text) {
  std::string s;
  s.reserve(text.size());
  for (char ch : text) {
    const auto c = static_cast<unsigned char>(ch);
    if (IsPunct(c)) continue;
    s.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : ch);
  }
  // SQuAD removes \b(a|an|the)\b after stripping punctuation, i.e. whole words: with ASCII
  // punctuation gone a boundary inside a word needs a non-ASCII symbol that is not a Unicode word
  // character ("a…"), where Python would drop the article and this keeps the word whole.
  std::vector<std::string> words;
  for (std::string& w : Words(s)) {
    if (w != "a" && w != "an" && w != "the") words.push_back(std::move(w));
  }
  return words;
}

std::string Join(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& w : words) {
    if (!out.empty()) out.push_back(' ');
    out += w;
  }
  return out;
}

}  // namespace

std::string NormalizeAnswer(std::string_view text) { return Join(NormalizedWords(text)); }

bool ExactMatch(std::string_view prediction, std::string_view reference) {
  return NormalizeAnswer(prediction) == NormalizeAnswer(reference);
}

double TokenF1(std::string_view prediction, std::string_view reference) {
  const std::vector<std::string> pred = NormalizedWords(prediction), ref = NormalizedWords(reference);
  if (pred.empty() || ref.empty()) return pred.empty() && ref.empty() ? 1.0 : 0.0;
  std::map<std::string, int> counts;
  for (const std::string& w : ref) ++counts[w];
  int same = 0;
  for (const std::string& w : pred) {
    auto it = counts.find(w);
    if (it != counts.end() && it->second > 0) {
      --it->second;
      ++same;
    }
  }
  if (same == 0) return 0.0;
  const double precision = static_cast<double>(same) / static_cast<double>(pred.size());
  const double recall = static_cast<double>(same) / static_cast<double>(ref.size());
  return 2 * precision * recall / (precision + recall);
}

AnswerExtractor::AnswerExtractor(const std::string& pattern) : pattern_(pattern) {
  try {
    re_ = std::regex(pattern, std::regex::ECMAScript);
  } catch (const std::regex_error& e) {
    InvalidArgument("answer regex '" + pattern + "': not a valid ECMAScript regular expression (" + e.what() + ")");
  }
}

std::optional<std::string> AnswerExtractor::Extract(const std::string& text) const {
  std::smatch m;
  if (!std::regex_search(text, m, re_)) return std::nullopt;
  if (re_.mark_count() == 0) return m.str(0);
  if (!m[1].matched) return std::nullopt;
  return m.str(1);
}

AnswerScore ScoreAnswer(const std::string& completion, const std::string& reference, const AnswerExtractor* extractor) {
  AnswerScore s;
  if (extractor == nullptr) {
    s.answer = completion;
    s.reference_answer = reference;
  } else {
    s.answer = extractor->Extract(completion);
    s.reference_answer = extractor->Extract(reference).value_or(reference);
    if (!s.answer) return s;
  }
  s.exact_match = ExactMatch(*s.answer, s.reference_answer);
  s.f1 = TokenF1(*s.answer, s.reference_answer);
  return s;
}

}  // namespace trm::data
