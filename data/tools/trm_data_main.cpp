// trm-data: tokenizer and dataset command line (docs/data.md). A thin shell over trm_data.
#include <cstdio>
#include <iostream>
#include <string>
#include <vector>

#include <unistd.h>

#include "trm/common/error.h"
#include "trm/data/dataset_builder.h"
#include "trm/data/text_codec.h"
#include "trm/data/tokenizer.h"

namespace {

constexpr const char* kUsage = R"(usage:
  trm-data encode --tokenizer T [--special]   JSON lines {"text": ...} on stdin -> {"ids": [...]}
  trm-data decode --tokenizer T               JSON lines {"ids": [...]} on stdin -> {"text": ...}
  trm-data build --input FILE --output-dir D [--format sharegpt|alpaca|openassistant|auto]
                 [--tokenizer gpt2] [--max-length 2048] [--train-split 0.95] [--include-system]
                 [--seed 42] [--subsample-size K] [--loss-on all|assistant] [--pack]
                 [--progress | --no-progress]
T: gpt2 | byte | a directory with tokenizer.json or vocab.json + merges.txt | a tokenizer.json
)";

// --name value / --name=value / --flag; unknown flags are errors, not ignored.
class Flags {
 public:
  Flags(int argc, char** argv, int first) {
    for (int i = first; i < argc; ++i) args_.emplace_back(argv[i]);
  }
  std::string Value(const std::string& name, const std::string& fallback, bool required = false) {
    for (size_t i = 0; i < args_.size(); ++i) {
      if (args_[i] == "--" + name) {
        if (i + 1 >= args_.size()) trm::InvalidArgument("--" + name + ": expected a value");
        std::string v = args_[i + 1];
        args_.erase(args_.begin() + static_cast<long>(i), args_.begin() + static_cast<long>(i) + 2);
        return v;
      }
      if (args_[i].rfind("--" + name + "=", 0) == 0) {
        std::string v = args_[i].substr(name.size() + 3);
        args_.erase(args_.begin() + static_cast<long>(i));
        return v;
      }
    }
    if (required) trm::InvalidArgument("--" + name + " is required");
    return fallback;
  }
  int64_t Int(const std::string& name, int64_t fallback) {
    const std::string v = Value(name, "");
    if (v.empty()) return fallback;
    try {
      size_t used = 0;
      const long long x = std::stoll(v, &used);
      if (used == v.size()) return x;
    } catch (const std::exception&) {
    }
    trm::InvalidArgument("--" + name + ": expected an integer, got '" + v + "'");
  }
  double Double(const std::string& name, double fallback) {
    const std::string v = Value(name, "");
    if (v.empty()) return fallback;
    try {
      size_t used = 0;
      const double x = std::stod(v, &used);
      if (used == v.size()) return x;
    } catch (const std::exception&) {
    }
    trm::InvalidArgument("--" + name + ": expected a number, got '" + v + "'");
  }
  bool Has(const std::string& name) {
    for (size_t i = 0; i < args_.size(); ++i) {
      if (args_[i] == "--" + name) {
        args_.erase(args_.begin() + static_cast<long>(i));
        return true;
      }
    }
    return false;
  }
  void CheckAllUsed() const {
    if (!args_.empty()) trm::InvalidArgument("unknown argument '" + args_.front() + "'");
  }

 private:
  std::vector<std::string> args_;
};

int Run(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) == "--help" || std::string(argv[1]) == "-h") {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  const std::string cmd = argv[1];
  Flags flags(argc, argv, 2);
  std::ios::sync_with_stdio(false);
  if (cmd == "encode") {
    const std::string spec = flags.Value("tokenizer", "", true);
    const bool special = flags.Has("special");
    flags.CheckAllUsed();
    trm::data::Tokenizer tok = trm::data::Tokenizer::Load(spec);
    trm::data::EncodeLines(std::cin, std::cout, tok, special);
    return 0;
  }
  if (cmd == "decode") {
    const std::string spec = flags.Value("tokenizer", "", true);
    flags.CheckAllUsed();
    const trm::data::Tokenizer tok = trm::data::Tokenizer::Load(spec);
    trm::data::DecodeLines(std::cin, std::cout, tok);
    return 0;
  }
  if (cmd == "build") {
    trm::data::BuildOptions o;
    o.input = flags.Value("input", "");
    if (o.input.empty()) o.input = flags.Value("input-file", "", true);  // the reference's name
    o.output_dir = flags.Value("output-dir", "", true);
    o.format = trm::data::ParseChatFormat(flags.Value("format", "auto"));
    o.tokenizer = flags.Value("tokenizer", "gpt2");
    o.max_length = flags.Int("max-length", 2048);
    o.train_split = flags.Double("train-split", 0.95);
    o.include_system = flags.Has("include-system");
    o.seed = static_cast<uint64_t>(flags.Int("seed", 42));
    o.subsample_size = flags.Int("subsample-size", 0);
    const std::string loss_on = flags.Value("loss-on", "all");
    if (loss_on != "all" && loss_on != "assistant") {
      trm::InvalidArgument("--loss-on: expected 'all' or 'assistant', got '" + loss_on + "'");
    }
    o.loss_on_assistant = loss_on == "assistant";
    o.pack = flags.Has("pack");
    o.progress = isatty(STDERR_FILENO) != 0;
    if (flags.Has("progress")) o.progress = true;
    if (flags.Has("no-progress")) o.progress = false;
    flags.CheckAllUsed();
    const trm::data::BuildSummary s = trm::data::BuildDataset(o);
    std::printf(
        "built %s (%s, %.1fs): %llu conversations (train %llu, test %llu; %llu empty skipped), "
        "rows train %llu / test %llu, %llu tokens, %llu trained, %llu conversations truncated "
        "(%llu tokens cut, longest %llu)\n",
        o.output_dir.c_str(), s.format.c_str(), s.seconds, static_cast<unsigned long long>(s.conversations),
        static_cast<unsigned long long>(s.train_conversations), static_cast<unsigned long long>(s.test_conversations),
        static_cast<unsigned long long>(s.empty_skipped), static_cast<unsigned long long>(s.train_rows),
        static_cast<unsigned long long>(s.test_rows), static_cast<unsigned long long>(s.tokens),
        static_cast<unsigned long long>(s.trainable_tokens), static_cast<unsigned long long>(s.truncated_conversations),
        static_cast<unsigned long long>(s.truncated_tokens), static_cast<unsigned long long>(s.longest_conversation));
    return 0;
  }
  trm::InvalidArgument("unknown command '" + cmd + "'\n" + kUsage);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const trm::Error& e) {
    // docs/error-policy.md: 2 when the input or the command line is unusable, 1 otherwise.
    std::cout.flush();
    std::fprintf(stderr, "error: %s\n", e.what());
    const trm::Code c = e.code();
    return c == trm::Code::kInvalidArgument || c == trm::Code::kNotFound || c == trm::Code::kDataLoss ? 2 : 1;
  } catch (const std::exception& e) {
    std::cout.flush();
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
