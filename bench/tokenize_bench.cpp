// trm-bench tokenize: single-threaded encode throughput on English chat text. Each repetition
// encodes the whole corpus with a fresh tokenizer copy (empty memo), so the number includes
// learning the corpus' vocabulary, as a dataset build does; warm_mb_per_s re-encodes with the
// memo already filled.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "bench.h"
#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/data/tokenizer.h"

namespace trm::bench {
namespace {

// Every string value of a JSON document (or of each line of a JSON Lines file) except ids:
// the turns of ShareGPT, the fields of Alpaca, the messages of OpenAssistant.
void CollectStrings(const nlohmann::json& j, std::vector<std::string>* out) {
  if (j.is_string()) {
    out->push_back(j.get<std::string>());
  } else if (j.is_array()) {
    for (const auto& v : j) CollectStrings(v, out);
  } else if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (it.key() != "id" && it.key() != "from" && it.key() != "role") CollectStrings(it.value(), out);
    }
  }
}

std::vector<std::string> LoadCorpus(const std::string& path) {
  const std::string text = ReadFile(path);
  std::vector<std::string> texts;
  try {
    CollectStrings(nlohmann::json::parse(text), &texts);
  } catch (const nlohmann::json::parse_error&) {  // JSON Lines
    size_t pos = 0;
    while (pos < text.size()) {
      size_t eol = std::min(text.find('\n', pos), text.size());
      std::string line = text.substr(pos, eol - pos);
      pos = eol + 1;
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      try {
        CollectStrings(nlohmann::json::parse(line), &texts);
      } catch (const nlohmann::json::parse_error& e) {
        InvalidArgument(path + ": neither JSON nor JSON Lines: " + e.what());
      }
    }
  }
  if (texts.empty()) InvalidArgument(path + ": no text found");
  return texts;
}

std::string DefaultInput() {
#ifdef TRM_BENCH_SHARED_DIR
  return std::string(TRM_BENCH_SHARED_DIR) + "/data/alpaca_gpteacher_roleplay.json";
#else
  return "";
#endif
}

}  // namespace

int RunTokenize(const std::vector<std::string>& args) {
  CheckFlags(args, {"tokenizer", "input", "reps"});
  const std::string spec = FlagValue(args, "tokenizer", "gpt2");
  const std::string input = FlagValue(args, "input", DefaultInput());
  const std::string reps_text = FlagValue(args, "reps", "5");
  int reps = 0;
  try {
    reps = std::stoi(reps_text);
  } catch (const std::exception&) {
  }
  if (reps < 1) InvalidArgument("--reps: expected a positive integer, got '" + reps_text + "'");
  if (input.empty()) InvalidArgument("--input is required");

  const std::vector<std::string> texts = LoadCorpus(input);
  size_t bytes = 0;
  for (const auto& t : texts) bytes += t.size();
  const data::Tokenizer proto = data::Tokenizer::Load(spec);

  using Clock = std::chrono::steady_clock;
  std::vector<double> cold, warm;
  std::vector<int32_t> ids;
  size_t tokens = 0;
  for (int r = 0; r < reps; ++r) {
    data::Tokenizer tok = proto;  // empty memo
    for (int pass = 0; pass < 2; ++pass) {
      tokens = 0;
      const auto t0 = Clock::now();
      for (const auto& t : texts) {
        ids.clear();
        tok.Encode(t, false, &ids);
        tokens += ids.size();
      }
      (pass == 0 ? cold : warm).push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    }
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  const double s_cold = median(cold), s_warm = median(warm);
  nlohmann::ordered_json out = {
      {"bench", "tokenize"},
      {"tokenizer", spec},
      {"input", input},
      {"texts", texts.size()},
      {"bytes", bytes},
      {"tokens", tokens},
      {"reps", reps},
      {"threads", 1},
      {"seconds", s_cold},
      {"mb_per_s", bytes / s_cold / 1e6},
      {"warm_mb_per_s", bytes / s_warm / 1e6},
      {"bytes_per_token", static_cast<double>(bytes) / static_cast<double>(std::max<size_t>(tokens, 1))},
  };
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace trm::bench
