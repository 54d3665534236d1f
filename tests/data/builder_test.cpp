// trm-data build on the shared real datasets and on small hand-written inputs.
#include "trm/data/dataset_builder.h"

#include <gtest/gtest.h>

#include "test_util.h"
#include "trm/common/error.h"
#include "trm/data/dataset_reader.h"
#include "trm/data/special_tokens.h"
#include "trm/data/tokenizer.h"

namespace trm::data {
namespace {

namespace fs = std::filesystem;
using testing::TempDir;
using testing::WriteText;

constexpr int32_t kIgnore = -100;

std::string ShareGpt() { return testing::SharedDir() + "/data/sharegpt_fastchat_dummy.json"; }
std::string Alpaca() { return testing::SharedDir() + "/data/alpaca_gpteacher_roleplay.json"; }

BuildOptions Options(const std::string& input, const std::string& out, int64_t max_length) {
  BuildOptions o;
  o.input = input;
  o.output_dir = out;
  o.max_length = max_length;
  return o;
}

// Rows of train then test as (inputs, labels) vectors.
struct Rows {
  std::vector<std::vector<int32_t>> inputs, labels;
};
Rows ReadRows(const std::string& dir) {
  Rows r;
  for (const char* split : {"train", "test"}) {
    const DatasetSplit s = DatasetSplit::Open(dir, split);
    for (int64_t i = 0; i < s.rows(); ++i) {
      r.inputs.emplace_back(s.inputs(i), s.inputs(i) + s.seq_len());
      r.labels.emplace_back(s.labels(i), s.labels(i) + s.seq_len());
    }
  }
  return r;
}

// The tokens of an unpacked row: inputs up to the pad that replaced the last token, plus that
// token (the last label).
std::vector<int32_t> RowTokens(const std::vector<int32_t>& in, const std::vector<int32_t>& lab, int32_t pad) {
  const size_t n = static_cast<size_t>(std::find(in.begin(), in.end(), pad) - in.begin());
  std::vector<int32_t> t(in.begin(), in.begin() + static_cast<long>(n));
  t.push_back(lab[n - 1]);
  return t;
}

// A built dataset shared by several tests (building once keeps the suite fast).
const std::string& ShareGptDataset() {
  static TempDir dir;  // removed at exit
  static const std::string path = [] {
    BuildDataset(Options(ShareGpt(), dir / "sharegpt", 256));
    return dir / "sharegpt";
  }();
  return path;
}

TEST(Builder, ShareGptCountsShiftAndMarkers) {
  const std::string dir = ShareGptDataset();
  const auto build = nlohmann::json::parse(testing::ReadText(dir + "/build.json"));
  EXPECT_EQ(build["counts"]["records"], 500);
  EXPECT_EQ(build["counts"]["conversations"], 500);
  EXPECT_EQ(build["counts"]["train_conversations"], 475);
  EXPECT_EQ(build["counts"]["test_conversations"], 25);
  EXPECT_EQ(build["counts"]["empty_skipped"], 0);
  EXPECT_EQ(build["format"], "sharegpt");
  EXPECT_EQ(build["truncation"]["truncated_conversations"], 0);
  EXPECT_EQ(build["content_sha256"].get<std::string>().size(), 64u);

  const DatasetSplit train = DatasetSplit::Open(dir, "train");
  EXPECT_EQ(train.rows(), 475);
  EXPECT_EQ(train.meta().seq_len, 256);
  EXPECT_EQ(train.meta().vocab_size, 50266);
  EXPECT_EQ(train.meta().pad_id, 50257);
  const auto meta = nlohmann::json::parse(testing::ReadText(dir + "/train/dataset.json"));
  for (const char* key : {"seq_len", "vocab_size", "pad_id", "ignore_label_id", "blank_identifier_id",
                          "num_puzzle_identifiers", "total_groups", "mean_puzzle_examples", "total_puzzles", "sets"}) {
    EXPECT_TRUE(meta.contains(key)) << key;
  }

  Tokenizer tok = Tokenizer::Load(dir + "/tokenizer");
  const ChatTokenIds ids = ChatTokenIds::Of(tok);
  const auto conversations = nlohmann::json::parse(testing::ReadText(ShareGpt()));
  const Rows rows = ReadRows(dir);
  ASSERT_EQ(rows.inputs.size(), 500u);
  for (size_t r = 0; r < rows.inputs.size(); ++r) {
    const auto& in = rows.inputs[r];
    const auto& lab = rows.labels[r];
    const std::vector<int32_t> t = RowTokens(in, lab, ids.pad);
    const size_t n = t.size();
    // The shift: inputs = tokens[:-1] + [pad], labels = tokens[1:] + [-100], then padding.
    for (size_t j = 0; j + 1 < n; ++j) ASSERT_EQ(lab[j], t[j + 1]) << "row " << r << " pos " << j;
    EXPECT_EQ(in[n - 1], ids.pad);
    EXPECT_EQ(lab[n - 1], kIgnore);
    for (size_t j = n; j < in.size(); ++j) ASSERT_TRUE(in[j] == ids.pad && lab[j] == kIgnore);
    // Markers in place: the rendered text, decoded back.
    std::string want;
    const auto& turns = conversations[r]["conversations"];
    for (size_t k = 0; k < turns.size(); ++k) {
      const std::string role = turns[k]["from"] == "human" ? "user" : "assistant";
      want += (k ? "<|sep|>" : "") + ("<|" + role + "|>") + turns[k]["value"].get<std::string>() + "<|end" + role + "|>";
    }
    want += "<|endoftext|>";
    ASSERT_EQ(tok.Decode(t), want) << "row " << r;
    EXPECT_EQ(t.front(), ids.user);
    EXPECT_EQ(t.back(), ids.endoftext);
  }
}

TEST(Builder, AlpacaJoinsInstructionAndInputAndTruncates) {
  TempDir tmp;
  BuildOptions o = Options(Alpaca(), tmp / "alpaca", 128);
  o.format = ChatFormat::kAlpaca;
  const BuildSummary s = BuildDataset(o);
  EXPECT_EQ(s.records, 3146u);
  EXPECT_EQ(s.conversations, 3146u);
  EXPECT_EQ(s.train_conversations, 2988u);  // int(3146 * 0.95)
  EXPECT_EQ(s.test_conversations, 158u);
  EXPECT_GT(s.truncated_conversations, 0u);
  EXPECT_GT(s.longest_conversation, 128u);

  Tokenizer tok = Tokenizer::Load("gpt2");
  const ChatTokenIds ids = ChatTokenIds::Of(tok);
  const Rows rows = ReadRows(tmp / "alpaca");
  const auto examples = nlohmann::json::parse(testing::ReadText(Alpaca()));
  uint64_t truncated = 0;
  for (size_t r = 0; r < rows.inputs.size(); ++r) {
    const std::vector<int32_t> t = RowTokens(rows.inputs[r], rows.labels[r], ids.pad);
    ASSERT_LE(t.size(), 128u);
    if (t.back() != ids.endoftext) ++truncated;
    const auto& ex = examples[r];
    std::string user = ex["instruction"].get<std::string>();
    if (!ex["input"].get<std::string>().empty()) user += "\n\n" + ex["input"].get<std::string>();
    const std::string want = "<|user|>" + user + "<|enduser|><|sep|><|assistant|>" +
                             ex["output"].get<std::string>() + "<|endassistant|><|endoftext|>";
    const std::string got = tok.Decode(t);
    if (t.back() == ids.endoftext) {
      ASSERT_EQ(got, want) << "row " << r;
    } else {
      ASSERT_EQ(t.size(), 128u);
      ASSERT_EQ(tok.Encode(want, true).size() > 128, true);
      ASSERT_TRUE(std::equal(t.begin(), t.end(), tok.Encode(want, true).begin())) << "row " << r;
    }
  }
  EXPECT_EQ(truncated, s.truncated_conversations);
}

TEST(Builder, LossOnAssistantMasksEverythingButRepliesAndTheirEnd) {
  TempDir tmp;
  BuildOptions o = Options(ShareGpt(), tmp / "masked", 256);
  o.loss_on_assistant = true;
  const BuildSummary s = BuildDataset(o);
  const Rows all = ReadRows(ShareGptDataset());
  const Rows masked = ReadRows(tmp / "masked");
  Tokenizer tok = Tokenizer::Load("gpt2");
  const ChatTokenIds ids = ChatTokenIds::Of(tok);
  uint64_t trained = 0;
  for (size_t r = 0; r < all.inputs.size(); ++r) {
    ASSERT_EQ(all.inputs[r], masked.inputs[r]);
    const std::vector<int32_t> t = RowTokens(all.inputs[r], all.labels[r], ids.pad);
    bool in_reply = false;  // is t[j] part of an assistant reply (or its end marker)?
    for (size_t j = 1; j < t.size(); ++j) {
      if (t[j - 1] == ids.assistant) in_reply = true;
      if (t[j - 1] == ids.endassistant) in_reply = false;
      const bool want = in_reply;  // includes t[j] == <|endassistant|>
      EXPECT_EQ(masked.labels[r][j - 1], want ? t[j] : kIgnore) << "row " << r << " pos " << j - 1;
      trained += want;
    }
  }
  EXPECT_EQ(s.trainable_tokens, trained);
  EXPECT_GT(trained, 0u);
  EXPECT_LT(trained, s.tokens);
}

TEST(Builder, PackPutsWholeConversationsInRowsWithTheirOwnBoundaries) {
  TempDir tmp;
  BuildOptions o = Options(ShareGpt(), tmp / "packed", 256);
  o.pack = true;
  const BuildSummary s = BuildDataset(o);
  EXPECT_EQ(s.conversations, 500u);
  EXPECT_LT(s.train_rows, 475u / 2);
  const int32_t pad = 50257;
  const Rows single = ReadRows(ShareGptDataset());
  // Each conversation's slice, as in its own row: the first n entries of inputs and labels.
  auto slice = [&](size_t c, bool labels) {
    const auto& in = single.inputs[c];
    const size_t n = static_cast<size_t>(std::find(in.begin(), in.end(), pad) - in.begin()) + 1;
    const auto& src = labels ? single.labels[c] : in;
    return std::vector<int32_t>(src.begin(), src.begin() + static_cast<long>(n));
  };
  for (const char* split : {"train", "test"}) {
    const DatasetSplit packed = DatasetSplit::Open(tmp / "packed", split);
    size_t c = std::string(split) == "train" ? 0 : 475;
    const size_t end = std::string(split) == "train" ? 475 : 500;
    for (int64_t r = 0; r < packed.rows(); ++r) {
      std::vector<int32_t> in, lab;
      while (c < end && in.size() + slice(c, false).size() <= 256) {
        const auto a = slice(c, false), b = slice(c, true);
        in.insert(in.end(), a.begin(), a.end());
        lab.insert(lab.end(), b.begin(), b.end());
        ++c;
      }
      ASSERT_FALSE(in.empty());
      in.resize(256, pad);
      lab.resize(256, kIgnore);
      ASSERT_EQ(std::vector<int32_t>(packed.inputs(r), packed.inputs(r) + 256), in) << split << " row " << r;
      ASSERT_EQ(std::vector<int32_t>(packed.labels(r), packed.labels(r) + 256), lab) << split << " row " << r;
    }
    EXPECT_EQ(c, end);
  }
}

TEST(Builder, JsonLinesOpenAssistantSystemTurnsAndEmptyConversations) {
  TempDir tmp;
  WriteText(tmp / "in.jsonl",
            "{\"messages\": [{\"role\": \"system\", \"content\": \"Be brief.\"}, {\"role\": \"user\", \"content\": \"Hi\"}, "
            "{\"role\": \"assistant\", \"content\": \"Hello!\"}]}\n"
            "\n"
            "{\"messages\": []}\n"
            "{\"messages\": [{\"role\": \"system\", \"content\": \"only system\"}]}\n"
            "{\"messages\": [{\"role\": \"prompter\", \"content\": \"2+2?\"}, {\"role\": \"assistant\", \"content\": \"4\"}]}\n");
  BuildOptions o = Options(tmp / "in.jsonl", tmp / "out", 64);
  o.tokenizer = "byte";
  o.train_split = 0.5;
  BuildSummary s = BuildDataset(o);
  EXPECT_EQ(s.format, "openassistant");
  EXPECT_EQ(s.records, 4u);
  EXPECT_EQ(s.empty_skipped, 2u);
  EXPECT_EQ(s.conversations, 2u);
  EXPECT_EQ(s.train_conversations, 1u);
  Tokenizer tok = Tokenizer::Load(tmp / "out/tokenizer");
  EXPECT_EQ(tok.vocab_size(), 266);
  Rows rows = ReadRows(tmp / "out");
  EXPECT_EQ(tok.Decode(RowTokens(rows.inputs[0], rows.labels[0], 257)),
            "<|user|>Hi<|enduser|><|sep|><|assistant|>Hello!<|endassistant|><|endoftext|>");
  EXPECT_EQ(tok.Decode(RowTokens(rows.inputs[1], rows.labels[1], 257)),
            "<|user|>2+2?<|enduser|><|sep|><|assistant|>4<|endassistant|><|endoftext|>");

  o.include_system = true;
  s = BuildDataset(o);  // replaces the previous build
  EXPECT_EQ(s.empty_skipped, 1u);
  rows = ReadRows(tmp / "out");
  EXPECT_EQ(tok.Decode(RowTokens(rows.inputs[0], rows.labels[0], 257)),
            "<|system|>Be brief.<|endsystem|><|sep|><|user|>Hi<|enduser|><|sep|><|assistant|>Hello!<|endassistant|>"
            "<|endoftext|>");
  EXPECT_EQ(rows.inputs.size(), 3u);
}

TEST(Builder, SameInputSameContentHashAndSubsampleIsSeeded) {
  TempDir tmp;
  BuildOptions o = Options(ShareGpt(), tmp / "a", 128);
  o.tokenizer = "byte";
  const BuildSummary a = BuildDataset(o);
  o.output_dir = tmp / "b";
  const BuildSummary b = BuildDataset(o);
  EXPECT_EQ(a.content_sha256, b.content_sha256);
  EXPECT_EQ(a.input_sha256, b.input_sha256);

  o.subsample_size = 100;
  o.output_dir = tmp / "c";
  const BuildSummary c = BuildDataset(o);
  EXPECT_EQ(c.conversations, 100u);
  EXPECT_EQ(c.train_conversations, 95u);
  o.output_dir = tmp / "d";
  EXPECT_EQ(BuildDataset(o).content_sha256, c.content_sha256);
  o.seed = 7;
  o.output_dir = tmp / "e";
  EXPECT_NE(BuildDataset(o).content_sha256, c.content_sha256);
}

// Runs a build expected to fail and returns its message; checks nothing was left behind.
std::string BuildError(const std::string& input_text, ChatFormat format = ChatFormat::kAuto,
                       const std::string& name = "in.json") {
  TempDir tmp;
  WriteText(tmp / name, input_text);
  BuildOptions o = Options(tmp / name, tmp / "out", 64);
  o.tokenizer = "byte";
  o.format = format;
  try {
    BuildDataset(o);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kInvalidArgument) << e.what();
    for (const auto& entry : fs::directory_iterator(tmp.path())) {
      EXPECT_EQ(entry.path().filename(), name) << "left behind: " << entry.path();
    }
    return e.what();
  }
  ADD_FAILURE() << "no error for: " << input_text;
  return "";
}

TEST(Builder, MalformedJsonNamesFileLineAndColumn) {
  const std::string ok = "{\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}]}";
  std::string m = BuildError("[\n  " + ok + ",\n  {\"conversations\": [}\n]\n");
  EXPECT_NE(m.find("in.json:3:22: malformed JSON in conversation 1"), std::string::npos) << m;
  m = BuildError("[\n" + ok + ",\n{\"conversations\": [{\"from\": \"human\", \"value\": hi}]}\n]");
  EXPECT_NE(m.find("in.json:3:47: malformed JSON in conversation 1"), std::string::npos) << m;
  m = BuildError("[\n" + ok + "\n" + ok + "\n]");
  EXPECT_NE(m.find("in.json:3:1: expected ',' or ']' after conversation 0"), std::string::npos) << m;
  m = BuildError("[\n" + ok + ",\n" + ok);
  EXPECT_NE(m.find("in.json:3:"), std::string::npos) << m;
  EXPECT_NE(m.find("not closed"), std::string::npos) << m;
  m = BuildError(ok + "\n" + ok + "\n{\"conversations\": [,]}\n", ChatFormat::kAuto, "in.jsonl");
  EXPECT_NE(m.find("in.jsonl:3:20: malformed JSON in conversation 2"), std::string::npos) << m;
  m = BuildError("\"just a string\"");
  EXPECT_NE(m.find("in.json:1:1: expected a JSON array"), std::string::npos) << m;
}

TEST(Builder, BadConversationsNameTheirIndex) {
  std::string m = BuildError(R"([{"conversations": [{"from": "human", "value": "a"}]},
                                 {"conversations": [{"from": "robot", "value": "b"}]}])");
  EXPECT_NE(m.find("in.json: conversation 1: turn 0: unknown role \"robot\""), std::string::npos) << m;
  m = BuildError(R"([{"conversations": [{"from": "human", "value": "a"}, {"from": "gpt"}]}])");
  EXPECT_NE(m.find("conversation 0: turn 1: missing field \"value\""), std::string::npos) << m;
  m = BuildError(R"([{"instruction": "a", "output": "b"}, {"instruction": "c", "input": ""}])");
  EXPECT_NE(m.find("conversation 1: missing field \"output\""), std::string::npos) << m;
  m = BuildError(R"([{"instruction": "a", "output": 3}])");
  EXPECT_NE(m.find("conversation 0: field \"output\": expected a string, got number"), std::string::npos) << m;
  m = BuildError(R"([{"text": "a"}])");
  EXPECT_NE(m.find("conversation 0: cannot tell the format"), std::string::npos) << m;
  m = BuildError(R"([{"instruction": "a", "output": "b"}])", ChatFormat::kShareGpt);
  EXPECT_NE(m.find("conversation 0: missing field \"conversations\""), std::string::npos) << m;
  m = BuildError(R"([{"conversations": []}])");
  EXPECT_NE(m.find("no conversations to build from (1 records, 1 empty)"), std::string::npos) << m;
}

TEST(Builder, RefusesToReplaceADirectoryThatIsNotADataset) {
  TempDir tmp;
  fs::create_directories(tmp / "mine");
  WriteText(tmp / "mine/notes.txt", "keep me");
  BuildOptions o = Options(ShareGpt(), tmp / "mine", 64);
  o.tokenizer = "byte";
  try {
    BuildDataset(o);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("is not a dataset"), std::string::npos);
  }
  EXPECT_EQ(testing::ReadText(tmp / "mine/notes.txt"), "keep me");
}

}  // namespace
}  // namespace trm::data
