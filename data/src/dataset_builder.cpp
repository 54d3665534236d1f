#include "trm/data/dataset_builder.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>

#include "chat_records.h"
#include "json_records.h"
#include "prng.h"
#include "progress.h"
#include "trm/common/sha256.h"
#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/data/chat_template.h"
#include "trm/data/npy.h"
#include "trm/data/special_tokens.h"
#include "trm/data/tokenizer.h"

namespace fs = std::filesystem;

namespace trm::data {

ChatFormat ParseChatFormat(const std::string& name) {
  if (name == "auto") return ChatFormat::kAuto;
  if (name == "sharegpt") return ChatFormat::kShareGpt;
  if (name == "alpaca") return ChatFormat::kAlpaca;
  if (name == "openassistant") return ChatFormat::kOpenAssistant;
  InvalidArgument("--format: unknown format '" + name + "' (expected sharegpt, alpaca, openassistant or auto)");
}

const char* ChatFormatName(ChatFormat format) {
  switch (format) {
    case ChatFormat::kAuto: return "auto";
    case ChatFormat::kShareGpt: return "sharegpt";
    case ChatFormat::kAlpaca: return "alpaca";
    case ChatFormat::kOpenAssistant: return "openassistant";
  }
  return "?";
}

namespace {

constexpr int32_t kIgnoreLabel = -100;

void MakeDirs(const fs::path& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) FileError(dir.string() + ": cannot create directory", ec);
}

// The build's working directory; removed with its contents unless committed.
class Staging {
 public:
  explicit Staging(fs::path path) : path_(std::move(path)) {
    std::error_code ec;
    fs::remove_all(path_, ec);
    fs::create_directories(path_, ec);
    if (ec) FileError(path_.string() + ": cannot create", ec);
  }
  ~Staging() {
    if (!committed_) {
      std::error_code ec;
      fs::remove_all(path_, ec);
    }
  }
  const fs::path& path() const { return path_; }
  void Commit() { committed_ = true; }

 private:
  fs::path path_;
  bool committed_ = false;
};

class RawWriter {
 public:
  explicit RawWriter(const fs::path& path) : path_(path.string()), f_(std::fopen(path_.c_str(), "wb")) {
    if (f_ == nullptr) FileError(path_ + ": cannot create", errno);
  }
  ~RawWriter() {
    if (f_ != nullptr) std::fclose(f_);
  }
  void Write(const void* p, size_t n) {
    if (n > 0 && std::fwrite(p, 1, n, f_) != n) FileError(path_ + ": write failed", errno);
  }
  void Close() {
    const bool ok = std::fclose(f_) == 0;
    const int err = errno;
    f_ = nullptr;
    if (!ok) FileError(path_ + ": write failed", err);
  }

 private:
  std::string path_;
  std::FILE* f_;
};

bool IsEmpty(const std::vector<Turn>& turns, bool include_system) {
  for (const Turn& t : turns) {
    if ((t.role != Role::kSystem || include_system) && !t.text.empty()) return false;
  }
  return true;
}

bool LooksLikeDataset(const fs::path& dir) {
  std::error_code ec;
  return fs::exists(dir / "build.json", ec) || fs::exists(dir / "train" / "dataset.json", ec) ||
         fs::is_empty(dir, ec);
}

void CheckOptions(const BuildOptions& o) {
  if (o.input.empty()) InvalidArgument("--input is required");
  if (o.output_dir.empty()) InvalidArgument("--output-dir is required");
  if (o.max_length < 2 || o.max_length > (int64_t{1} << 24)) {
    InvalidArgument("--max-length: expected 2 .. 16777216, got " + std::to_string(o.max_length));
  }
  if (!(o.train_split > 0.0 && o.train_split <= 1.0)) {
    InvalidArgument("--train-split: expected a fraction in (0, 1], got " + std::to_string(o.train_split));
  }
  if (o.subsample_size < 0) InvalidArgument("--subsample-size: expected >= 0");
  const fs::path out(o.output_dir);
  std::error_code ec;
  if (fs::exists(out, ec)) {
    if (!fs::is_directory(out, ec)) InvalidArgument(o.output_dir + ": exists and is not a directory");
    if (!LooksLikeDataset(out)) {
      InvalidArgument(o.output_dir + ": exists and is not a dataset (no build.json or train/dataset.json); "
                      "refusing to replace it");
    }
  }
}

// Rows of one split: row r holds the selected conversations [begin[r], begin[r + 1]).
std::vector<size_t> PlanRows(const std::vector<uint32_t>& lengths, const std::vector<uint32_t>& convs,
                             size_t first, size_t last, bool pack, size_t row_len) {
  std::vector<size_t> begin;
  size_t used = row_len;  // forces a new row for the first conversation
  for (size_t i = first; i < last; ++i) {
    const size_t n = lengths[convs[i]];
    if (!pack || used + n > row_len) {
      begin.push_back(i);
      used = 0;
    }
    used += n;
  }
  begin.push_back(last);
  return begin;
}

// Reads the staged conversations back in increasing order (train then test), sequentially, so
// phase 2 needs memory for one row whatever the dataset size.
class StagedReader {
 public:
  StagedReader(const fs::path& dir, const std::vector<uint32_t>* lengths)
      : tokens_(Open(dir / "tokens.bin")), mask_(Open(dir / "mask.bin")), lengths_(lengths) {}
  ~StagedReader() {
    std::fclose(tokens_);
    std::fclose(mask_);
  }
  // Conversation c (>= every c asked before) into *t / *m.
  void Read(uint32_t c, std::vector<int32_t>* t, std::vector<uint8_t>* m) {
    if (c != next_) {  // subsampling skipped some: seek past them
      uint64_t skip = 0;
      for (uint32_t i = next_; i < c; ++i) skip += (*lengths_)[i];
      Seek(tokens_, static_cast<long>(skip * sizeof(int32_t)));
      Seek(mask_, static_cast<long>(skip));
    }
    const size_t n = (*lengths_)[c];
    t->resize(n);
    m->resize(n);
    if (std::fread(t->data(), sizeof(int32_t), n, tokens_) != n || std::fread(m->data(), 1, n, mask_) != n) {
      IoError("staged tokens: short read");
    }
    next_ = c + 1;
  }

 private:
  static std::FILE* Open(const fs::path& p) {
    std::FILE* f = std::fopen(p.c_str(), "rb");
    if (f == nullptr) FileError(p.string() + ": cannot open", errno);
    return f;
  }
  static void Seek(std::FILE* f, long delta) {
    if (std::fseek(f, delta, SEEK_CUR) != 0) IoError("staged tokens: seek failed");
  }
  std::FILE* tokens_;
  std::FILE* mask_;
  const std::vector<uint32_t>* lengths_;
  uint32_t next_ = 0;
};

struct SplitContext {
  const BuildOptions* options;
  const std::vector<uint32_t>* convs;  // selected conversations, in input order
  StagedReader* staged;
  int32_t pad_id;
  int32_t vocab_size;
};

// Writes {dir}/{split}/ and returns the SHA-256 of each array by relative path.
void WriteSplit(const SplitContext& ctx, const fs::path& dir, const std::string& split,
                const std::vector<size_t>& row_begin, uint64_t* trainable,
                nlohmann::ordered_json* file_hashes) {
  const fs::path sdir = dir / split;
  MakeDirs(sdir);
  const int64_t n = static_cast<int64_t>(row_begin.size()) - 1;
  const int64_t len = ctx.options->max_length;
  NpyInt32Writer inputs((sdir / "all__inputs.npy").string(), {n, len});
  NpyInt32Writer labels((sdir / "all__labels.npy").string(), {n, len});
  std::vector<int32_t> in_row(static_cast<size_t>(len)), label_row(static_cast<size_t>(len));
  std::vector<int32_t> t;
  std::vector<uint8_t> mk;
  for (int64_t r = 0; r < n; ++r) {
    std::fill(in_row.begin(), in_row.end(), ctx.pad_id);
    std::fill(label_row.begin(), label_row.end(), kIgnoreLabel);
    size_t o = 0;
    for (size_t i = row_begin[r]; i < row_begin[r + 1]; ++i) {
      // The reference's shift: inputs = tokens[:-1] + [pad], labels = tokens[1:] + [-100]. A
      // packed conversation keeps exactly that layout in its slice of the row, so no label
      // crosses into the next conversation.
      ctx.staged->Read((*ctx.convs)[i], &t, &mk);
      const size_t m = t.size();
      for (size_t j = 0; j + 1 < m; ++j) {
        in_row[o + j] = t[j];
        const bool train = !ctx.options->loss_on_assistant || mk[j + 1] != 0;
        label_row[o + j] = train ? t[j + 1] : kIgnoreLabel;
        *trainable += train ? 1 : 0;
      }
      o += m;
    }
    inputs.Write(in_row.data(), in_row.size());
    labels.Write(label_row.data(), label_row.size());
  }
  (*file_hashes)[split + "/all__inputs.npy"] = inputs.Close();
  (*file_hashes)[split + "/all__labels.npy"] = labels.Close();

  // Reference bookkeeping arrays: each row is its own puzzle and group.
  std::vector<int32_t> ids(static_cast<size_t>(n) + 1);
  std::iota(ids.begin(), ids.end(), 0);
  const std::pair<const char*, int64_t> extra[] = {
      {"all__puzzle_identifiers.npy", n}, {"all__puzzle_indices.npy", n + 1}, {"all__group_indices.npy", n + 1}};
  for (const auto& [name, count] : extra) {
    NpyInt32Writer w((sdir / name).string(), {count});
    w.Write(ids.data(), static_cast<size_t>(count));
    (*file_hashes)[split + "/" + name] = w.Close();
  }
  const nlohmann::ordered_json meta = {
      {"pad_id", ctx.pad_id},
      {"ignore_label_id", kIgnoreLabel},
      {"blank_identifier_id", 0},
      {"vocab_size", ctx.vocab_size},
      {"seq_len", len},
      {"num_puzzle_identifiers", n},
      {"total_groups", n},
      {"mean_puzzle_examples", 1.0},
      {"total_puzzles", n},
      {"sets", {"all"}},
  };
  WriteFileAtomic((sdir / "dataset.json").string(), meta.dump(2) + "\n");
}

// Phase 1: streams the input, renders and tokenizes each conversation into flat token and
// mask files in `staging`; returns each conversation's (possibly truncated) length.
std::vector<uint32_t> TokenizeInput(const BuildOptions& opt, Tokenizer& tok, const fs::path& staging,
                                    BuildSummary* sum) {
  const size_t row_len = static_cast<size_t>(opt.max_length);
  internal::JsonRecordReader reader(opt.input);
  internal::ProgressBar bar(opt.progress, reader.file_size());
  std::vector<uint32_t> lengths;
  {
    RawWriter tokens_out(staging / "tokens.bin");
    RawWriter mask_out(staging / "mask.bin");
    ChatFormat format = opt.format;
    nlohmann::json record;
    std::vector<Turn> turns;
    RenderedChat chat;
    while (reader.Next(&record)) {
      const std::string where = opt.input + ": conversation " + std::to_string(reader.records() - 1);
      if (format == ChatFormat::kAuto) {
        format = internal::DetectFormat(record);
        if (format == ChatFormat::kAuto) {
          InvalidArgument(where + ": cannot tell the format (expected a field \"conversations\", "
                          "\"messages\" or \"instruction\"); pass --format");
        }
      }
      internal::ParseRecord(record, format, where, &turns);
      if (IsEmpty(turns, opt.include_system)) {
        ++sum->empty_skipped;
        continue;
      }
      RenderChat(turns, opt.include_system, tok, &chat);
      size_t n = chat.tokens.size();
      sum->longest_conversation = std::max<uint64_t>(sum->longest_conversation, n);
      if (n > row_len) {
        ++sum->truncated_conversations;
        sum->truncated_tokens += n - row_len;
        n = row_len;
      }
      tokens_out.Write(chat.tokens.data(), n * sizeof(int32_t));
      mask_out.Write(chat.assistant_mask.data(), n);
      lengths.push_back(static_cast<uint32_t>(n));
      bar.Update(reader.bytes_read(), reader.records());
    }
    tokens_out.Close();
    mask_out.Close();
    sum->format = ChatFormatName(format);
  }
  bar.Finish();
  sum->records = reader.records();
  sum->input_sha256 = reader.InputSha256();
  if (lengths.empty()) {
    InvalidArgument(opt.input + ": no conversations to build from (" + std::to_string(sum->records) +
                    " records, " + std::to_string(sum->empty_skipped) + " empty)");
  }
  return lengths;
}

// The conversations kept: a seeded subsample kept in input order (all of them without one).
std::vector<uint32_t> ChooseConversations(const BuildOptions& opt, const std::vector<uint32_t>& lengths,
                                          BuildSummary* sum) {
  std::vector<uint32_t> convs(lengths.size());
  std::iota(convs.begin(), convs.end(), 0u);
  if (opt.subsample_size > 0 && static_cast<size_t>(opt.subsample_size) < convs.size()) {
    internal::SplitMix64 rng(internal::DeriveSeed(opt.seed, 0));
    internal::Shuffle(&convs, &rng);
    convs.resize(static_cast<size_t>(opt.subsample_size));
    std::sort(convs.begin(), convs.end());
  }
  sum->conversations = convs.size();
  for (uint32_t c : convs) sum->tokens += lengths[c];
  return convs;
}

nlohmann::ordered_json BuildJson(const BuildOptions& opt, const Tokenizer& tok, const ChatTokenIds& chat_ids,
                                 const BuildSummary& sum, const nlohmann::ordered_json& hashes) {
  return {
      {"tool", "trm-data build"},
      {"options",
       {{"input", opt.input},
        {"format", ChatFormatName(opt.format)},
        {"tokenizer", opt.tokenizer},
        {"max_length", opt.max_length},
        {"train_split", opt.train_split},
        {"include_system", opt.include_system},
        {"seed", opt.seed},
        {"subsample_size", opt.subsample_size},
        {"loss_on", opt.loss_on_assistant ? "assistant" : "all"},
        {"pack", opt.pack}}},
      {"format", sum.format},
      {"tokenizer", {{"name", tok.name()}, {"vocab_size", tok.vocab_size()}, {"pad_id", chat_ids.pad},
                     {"endoftext_id", chat_ids.endoftext}}},
      {"counts",
       {{"records", sum.records},
        {"empty_skipped", sum.empty_skipped},
        {"conversations", sum.conversations},
        {"train_conversations", sum.train_conversations},
        {"test_conversations", sum.test_conversations},
        {"train_rows", sum.train_rows},
        {"test_rows", sum.test_rows},
        {"tokens", sum.tokens},
        {"trainable_tokens", sum.trainable_tokens}}},
      {"truncation",
       {{"max_length", opt.max_length},
        {"truncated_conversations", sum.truncated_conversations},
        {"truncated_tokens", sum.truncated_tokens},
        {"longest_conversation", sum.longest_conversation}}},
      {"input_sha256", sum.input_sha256},
      {"content_sha256", sum.content_sha256},
      {"files_sha256", hashes},
  };
}

// Renames the finished build into place; a previous dataset there is moved aside first, then
// removed, so a crash leaves one of the two whole.
void CommitBuild(Staging* staging, const fs::path& out_clean, const std::string& output_dir) {
  std::error_code ec;
  fs::path old;
  if (fs::exists(out_clean, ec)) {
    if (!LooksLikeDataset(out_clean)) InvalidArgument(output_dir + ": exists and is not a dataset; refusing to replace it");
    old = out_clean.string() + ".old-" + std::to_string(::getpid());
    fs::remove_all(old, ec);
    fs::rename(out_clean, old, ec);
    if (ec) FileError(output_dir + ": cannot move the previous dataset aside", ec);
  }
  fs::rename(staging->path(), out_clean, ec);
  if (ec) FileError(output_dir + ": cannot rename the finished build into place", ec);
  staging->Commit();
  if (!old.empty()) fs::remove_all(old, ec);
}

}  // namespace

BuildSummary BuildDataset(const BuildOptions& opt) {
  const auto t0 = std::chrono::steady_clock::now();
  CheckOptions(opt);
  Tokenizer tok = Tokenizer::Load(opt.tokenizer);
  const ChatTokenIds chat_ids = ChatTokenIds::Of(tok);
  const size_t row_len = static_cast<size_t>(opt.max_length);

  const fs::path out = fs::path(opt.output_dir).lexically_normal();
  const fs::path out_clean = out.has_filename() ? out : out.parent_path();
  if (!out_clean.parent_path().empty()) MakeDirs(out_clean.parent_path());
  Staging staging(out_clean.string() + ".tmp-" + std::to_string(::getpid()));

  BuildSummary sum;
  const std::vector<uint32_t> lengths = TokenizeInput(opt, tok, staging.path(), &sum);
  // Subsample, then split without shuffling, as the reference.
  const std::vector<uint32_t> convs = ChooseConversations(opt, lengths, &sum);
  const size_t n_train = static_cast<size_t>(static_cast<double>(convs.size()) * opt.train_split);
  sum.train_conversations = n_train;
  sum.test_conversations = convs.size() - n_train;

  // Phase 2: the arrays, split by split.
  nlohmann::ordered_json hashes = nlohmann::ordered_json::object();
  {
    StagedReader staged(staging.path(), &lengths);
    const SplitContext ctx{&opt, &convs, &staged, chat_ids.pad, tok.vocab_size()};
    const std::vector<size_t> train_rows = PlanRows(lengths, convs, 0, n_train, opt.pack, row_len);
    const std::vector<size_t> test_rows = PlanRows(lengths, convs, n_train, convs.size(), opt.pack, row_len);
    sum.train_rows = train_rows.size() - 1;
    sum.test_rows = test_rows.size() - 1;
    WriteSplit(ctx, staging.path(), "train", train_rows, &sum.trainable_tokens, &hashes);
    WriteSplit(ctx, staging.path(), "test", test_rows, &sum.trainable_tokens, &hashes);
  }
  std::error_code rm_ec;
  fs::remove(staging.path() / "tokens.bin", rm_ec);
  fs::remove(staging.path() / "mask.bin", rm_ec);
  tok.Save((staging.path() / "tokenizer").string());

  trm::Sha256 content;
  for (const auto& [name, hash] : hashes.items()) content.Update(name + " " + hash.get<std::string>() + "\n");
  sum.content_sha256 = content.HexDigest();
  sum.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  WriteFileAtomic((staging.path() / "build.json").string(), BuildJson(opt, tok, chat_ids, sum, hashes).dump(2) + "\n");
  CommitBuild(&staging, out_clean, opt.output_dir);
  return sum;
}

}  // namespace trm::data
