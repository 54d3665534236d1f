// `trm-data build`: conversations (ShareGPT / Alpaca / OpenAssistant JSON or JSON Lines) ->
// the reference's on-disk dataset (train/ and test/ with dataset.json and all__*.npy), plus the
// tokenizer files and build.json. Format details: docs/data.md.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace trm::data {

enum class ChatFormat { kAuto, kShareGpt, kAlpaca, kOpenAssistant };

// "auto" | "sharegpt" | "alpaca" | "openassistant"; InvalidArgument otherwise.
ChatFormat ParseChatFormat(const std::string& name);
const char* ChatFormatName(ChatFormat format);

struct BuildOptions {
  std::string input;                 // JSON array or JSON Lines file
  ChatFormat format = ChatFormat::kAuto;  // auto: decided by the first conversation's fields
  std::string tokenizer = "gpt2";    // Tokenizer::Load spec
  int64_t max_length = 2048;         // row length; longer conversations are truncated
  std::string output_dir;
  double train_split = 0.95;         // the first floor(n * split) conversations go to train/
  bool include_system = false;
  uint64_t seed = 42;                // used by subsample_size only: the split is not shuffled
  int64_t subsample_size = 0;        // > 0: keep that many conversations, drawn uniformly
  bool loss_on_assistant = false;    // labels -100 except assistant replies and <|endassistant|>
  bool pack = false;                 // several conversations per row
  bool progress = false;             // progress bar with rate on stderr
};

struct BuildSummary {
  std::string format;                // the one used (after auto-detection)
  uint64_t records = 0;              // read from the input
  uint64_t empty_skipped = 0;        // no turn with text (after dropping system turns)
  uint64_t conversations = 0;        // kept (after subsampling)
  uint64_t train_conversations = 0, test_conversations = 0;
  uint64_t train_rows = 0, test_rows = 0;  // equal to the conversations unless pack
  uint64_t tokens = 0;               // after truncation
  uint64_t trainable_tokens = 0;     // labels that are not -100
  uint64_t truncated_conversations = 0, truncated_tokens = 0;
  uint64_t longest_conversation = 0;  // tokens, before truncation
  std::string content_sha256;        // over the written arrays (build.json lists each file's)
  std::string input_sha256;
  double seconds = 0;
};

// Builds the dataset. Everything is written under a temporary sibling of output_dir
// (output_dir + ".tmp-<pid>") and renamed into place at the end, so a failure leaves no half
// dataset; an existing output_dir is replaced only if it is a dataset (has build.json or
// train/dataset.json) or empty. Throws trm::Error: InvalidArgument for bad options or input
// (naming file, line and column, or the conversation index), NotFound, IoError.
BuildSummary BuildDataset(const BuildOptions& options);

}  // namespace trm::data
