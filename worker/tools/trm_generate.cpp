// trm-generate --checkpoint DIR (--prompt TEXT | --interactive) [--max-new-tokens N]
//   [--temperature T] [--top-k K] [--top-p P] [--seed S] [--no-cache] [--raw] [--device D]
// Chats with a trained checkpoint (or a run directory: its newest checkpoint), streaming tokens.
#include <cstdio>
#include <iostream>
#include <string>

#include "trm/common/error.h"
#include "trm/common/flag_values.h"
#include "trm/common/process_env.h"
#include "trm/worker/chat.h"

namespace {

int Usage() {
  std::fprintf(stderr,
               "usage: trm-generate --checkpoint DIR (--prompt TEXT | --interactive) [--max-new-tokens N]\n"
               "                    [--temperature T] [--top-k K] [--top-p P] [--seed S] [--no-cache] [--raw]\n"
               "                    [--tokenizer SPEC] [--device auto|cpu|cuda]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  trm::ConfigureComputeProcess(argc, argv);
  std::string checkpoint, prompt, device = "auto";
  bool interactive = false, raw = false;
  trm::worker::ChatOptions opt;
  opt.generate.max_new_tokens = 128;
  try {
    for (int i = 1; i < argc; ++i) {
      std::string a = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) trm::InvalidArgument(a + ": needs a value");
        return argv[++i];
      };
      if (a == "--checkpoint") checkpoint = value();
      else if (a == "--prompt") prompt = value();
      else if (a == "--interactive") interactive = true;
      else if (a == "--max-new-tokens") opt.generate.max_new_tokens = static_cast<int64_t>(trm::NumberFlag(a, value()));
      else if (a == "--temperature") opt.generate.sampling.temperature = trm::NumberFlag(a, value());
      else if (a == "--top-k") opt.generate.sampling.top_k = static_cast<int64_t>(trm::NumberFlag(a, value()));
      else if (a == "--top-p") opt.generate.sampling.top_p = trm::NumberFlag(a, value());
      else if (a == "--seed") opt.generate.sampling.seed = static_cast<uint64_t>(trm::NumberFlag(a, value()));
      else if (a == "--no-cache") opt.use_cache = false;
      else if (a == "--raw") raw = true;
      else if (a == "--tokenizer") opt.tokenizer = value();
      else if (a == "--device") device = value();
      else if (a == "-h" || a == "--help") return Usage();
      else trm::InvalidArgument("unknown option " + a);
    }
    if (checkpoint.empty() || (prompt.empty() && !interactive)) return Usage();
    if (opt.generate.max_new_tokens < 1) trm::InvalidArgument("--max-new-tokens: must be at least 1");
    trm::worker::InferenceModel m = trm::worker::LoadInferenceModel(checkpoint, device);
    std::fprintf(stderr, "loaded %s\n", m.checkpoint_dir.c_str());
    trm::worker::ChatSession chat(std::move(m), opt);
    auto stream = [](const std::string& piece) {
      std::fwrite(piece.data(), 1, piece.size(), stdout);
      std::fflush(stdout);
    };
    if (!prompt.empty()) {
      raw ? chat.Complete(prompt, stream) : chat.Reply(prompt, stream);
      std::fputc('\n', stdout);
    }
    if (interactive) {
      std::string line;
      while (true) {
        std::fprintf(stderr, "you> ");
        if (!std::getline(std::cin, line)) break;
        if (line.empty()) continue;
        if (line == "/clear") {
          chat.ClearHistory();
          continue;
        }
        if (line == "/quit" || line == "/exit") break;
        std::fputs("trm> ", stdout);
        raw ? chat.Complete(line, stream) : chat.Reply(line, stream);
        std::fputc('\n', stdout);
        std::fflush(stdout);
      }
    }
    return 0;
  } catch (const trm::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
}
