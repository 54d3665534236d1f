// `trm-eval generate` end to end through RunGenerateCommand, on a freshly initialised tiny model
// saved as a checkpoint: known answers (some right, some wrong) give known exact match and F1,
// batching does not change a completion, and bad input exits 2 with nothing written.
#include "trm/worker/generation_eval.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <torch/torch.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "trm/data/tokenizer.h"
#include "trm/model/trm.h"
#include "trm/worker/checkpoint.h"

namespace trm::worker {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

model::ArchConfig TinyArch() {
  model::ArchConfig c;
  c.vocab_size = 266;  // the byte tokenizer with the chat tokens
  c.seq_len = 48;
  c.hidden_size = 32;
  c.num_heads = 2;
  c.expansion = 2;
  c.L_layers = 1;
  c.H_cycles = 2;
  c.L_cycles = 1;
  c.halt_max_steps = 2;
  c.forward_dtype = model::ForwardDtype::kFloat32;
  return c;
}

void WriteText(const fs::path& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

std::vector<json> ReadLines(const fs::path& path) {
  std::ifstream in(path);
  std::vector<json> out;
  for (std::string line; std::getline(in, line);) out.push_back(json::parse(line));
  return out;
}

struct Result {
  int code;
  std::string out, err;
};

class GenerationEvalTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "trm_gen_eval_XXXXXX").string();
    ASSERT_NE(mkdtemp(tmpl.data()), nullptr);
    root_ = tmpl;
    // An untrained model whose LM head can only pick lowercase letters: rows 'n'..'z' are the
    // negated rows 'a'..'m' and every other row is zero, so the largest logit is always a
    // letter's (positive) one. Greedy completions are then max_new_tokens letters, one word,
    // which makes the expected scores computable by hand.
    torch::manual_seed(11);
    model::Trm m(TinyArch());
    {
      torch::NoGradGuard no_grad;
      at::Tensor w = m->inner->lm_head->weight;
      at::Tensor first = w.slice(0, 'a', 'n').clone();
      w.zero_();
      w.slice(0, 'a', 'n').copy_(first);
      w.slice(0, 'n', 'z' + 1).copy_(-first);
    }
    data::Tokenizer::Load("byte").Save((root_ / "tokenizer").string());
    CheckpointContents c;
    c.model = m->StateDict();
    c.state = {{"step", 1}};
    c.arch = TinyArch().ToJson();
    c.tokenizer_dir = (root_ / "tokenizer").string();
    checkpoint_ = SaveCheckpoint((root_ / "run").string(), c, 0);
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  // Runs `trm-eval generate ARGS` on the run directory (its newest checkpoint) unless args name
  // --checkpoint themselves.
  Result Run(std::vector<std::string> args) {
    std::vector<std::string> all = {"generate"};
    if (std::find(args.begin(), args.end(), "--checkpoint") == args.end()) all.insert(all.end(), {"--checkpoint", (root_ / "run").string()});
    all.insert(all.end(), {"--threads", "1", "--no-progress"});
    all.insert(all.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (std::string& a : all) argv.push_back(a.data());
    ::testing::internal::CaptureStdout();
    ::testing::internal::CaptureStderr();
    const int code = RunGenerateCommand(static_cast<int>(argv.size()), argv.data());
    Result r{code, ::testing::internal::GetCapturedStdout(), ::testing::internal::GetCapturedStderr()};
    return r;
  }

  // Four prompts of different lengths, with the given references.
  fs::path Prompts(const std::string& name, const std::vector<std::string>& references) {
    const std::vector<std::string> prompts = {"Hi", "What is the capital of France?", "2+2=", "Tell me a story"};
    std::string text;
    for (size_t i = 0; i < prompts.size(); ++i) text += json{{"prompt", prompts[i]}, {"reference", references[i]}}.dump() + "\n";
    WriteText(root_ / name, text);
    return root_ / name;
  }

  // The greedy completions of the four prompts.
  std::vector<std::string> Completions(const std::vector<std::string>& extra = {}) {
    std::vector<std::string> args = {"--prompts", Prompts("any.jsonl", {"x", "x", "x", "x"}).string(), "--output",
                                     (root_ / "completions.jsonl").string(), "--max-new-tokens", "5"};
    args.insert(args.end(), extra.begin(), extra.end());
    Result r = Run(args);
    EXPECT_EQ(r.code, 0) << r.err;
    std::vector<std::string> out;
    for (const json& line : ReadLines(root_ / "completions.jsonl")) out.push_back(line.at("completion"));
    return out;
  }

  fs::path root_;
  std::string checkpoint_;
};

TEST_F(GenerationEvalTest, KnownAnswersGiveKnownExactMatchAndF1) {
  const std::vector<std::string> c = Completions({"--batch-size", "3"});
  ASSERT_EQ(c.size(), 4u);
  for (const std::string& s : c) {
    ASSERT_EQ(s.size(), 5u) << s;
    ASSERT_EQ(s.find_first_not_of("abcdefghijklmnopqrstuvwxyz"), std::string::npos) << s;
  }
  ASSERT_NE(c[2], "zebra");
  // Right: c0 as it is, c1 up to case, an article and punctuation. Wrong: an unrelated word, and
  // c3 plus one more word (precision 1/1, recall 1/2: F1 2/3).
  const fs::path known = Prompts("known.jsonl", {c[0], "The " + c[1] + ".", "zebra", c[3] + " zebra"});
  for (const char* batch : {"3", "1", "8"}) {
    const fs::path output = root_ / (std::string("scored_") + batch + ".jsonl");
    Result r = Run({"--prompts", known.string(), "--max-new-tokens", "5", "--batch-size", batch, "--output", output.string()});
    ASSERT_EQ(r.code, 0) << r.err;
    ASSERT_EQ(r.out.find('\n'), r.out.size() - 1) << "one line on stdout: " << r.out;
    const json summary = json::parse(r.out);
    EXPECT_EQ(summary.at("checkpoint"), checkpoint_);
    EXPECT_EQ(summary.at("prompts"), known.string());
    EXPECT_EQ(summary.at("rows"), 4);
    EXPECT_DOUBLE_EQ(summary.at("metrics").at("exact_match").get<double>(), 0.5);
    EXPECT_DOUBLE_EQ(summary.at("metrics").at("f1").get<double>(), (1.0 + 1.0 + 0.0 + 2.0 / 3.0) / 4.0);
    EXPECT_DOUBLE_EQ(summary.at("metrics").at("mean_length").get<double>(), 5.0);
    const std::vector<json> lines = ReadLines(output);
    ASSERT_EQ(lines.size(), 4u);
    const std::vector<int> exact = {1, 1, 0, 0};
    const std::vector<double> f1 = {1.0, 1.0, 0.0, 2.0 / 3.0};
    for (size_t i = 0; i < 4; ++i) {
      EXPECT_EQ(lines[i].at("completion"), c[i]) << "batch " << batch << " row " << i;
      EXPECT_EQ(lines[i].at("answer"), c[i]);
      EXPECT_EQ(lines[i].at("exact_match"), exact[i]);
      EXPECT_DOUBLE_EQ(lines[i].at("f1").get<double>(), f1[i]);
      EXPECT_EQ(lines[i].at("tokens"), 5);
    }
    EXPECT_EQ(lines[1].at("prompt"), "What is the capital of France?");
    EXPECT_EQ(lines[1].at("reference"), "The " + c[1] + ".");
    std::vector<std::string> keys;
    for (auto it = lines[0].begin(); it != lines[0].end(); ++it) keys.push_back(it.key());
    EXPECT_EQ(keys.size(), 8u);
  }
}

TEST_F(GenerationEvalTest, AnswerRegexComparesTheExtractedAnswers) {
  const std::vector<std::string> c = Completions();
  ASSERT_EQ(c.size(), 4u);
  ASSERT_NE(c[1].substr(0, 3), "zzz");
  // The first three letters are the answer; "ZZZ" and "12" have no match and are compared whole.
  const fs::path known = Prompts("regex.jsonl", {c[0].substr(0, 3) + "qq", "ZZZ", c[2], "12"});
  Result r = Run({"--prompts", known.string(), "--max-new-tokens", "5", "--answer-regex", "^([a-z]{3})", "--output",
                  (root_ / "regex_out.jsonl").string()});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_DOUBLE_EQ(json::parse(r.out).at("metrics").at("exact_match").get<double>(), 0.5);
  EXPECT_DOUBLE_EQ(json::parse(r.out).at("metrics").at("f1").get<double>(), 0.5);
  const std::vector<json> lines = ReadLines(root_ / "regex_out.jsonl");
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0].at("answer"), c[0].substr(0, 3));
  EXPECT_EQ(lines[0].at("reference_answer"), c[0].substr(0, 3));
  EXPECT_EQ(lines[1].at("reference_answer"), "ZZZ");
  EXPECT_EQ(lines[1].at("exact_match"), 0);

  // A pattern no completion matches: every row scores 0 and has no answer.
  r = Run({"--prompts", known.string(), "--max-new-tokens", "5", "--answer-regex", "####\\s*([0-9]+)", "--output",
           (root_ / "none.jsonl").string()});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_DOUBLE_EQ(json::parse(r.out).at("metrics").at("exact_match").get<double>(), 0.0);
  EXPECT_DOUBLE_EQ(json::parse(r.out).at("metrics").at("f1").get<double>(), 0.0);
  for (const json& line : ReadLines(root_ / "none.jsonl")) EXPECT_TRUE(line.at("answer").is_null());
}

// A ShareGPT conversation asks the same question as the JSONL prompt of its first user turn (the
// same chat rendering); --raw continues the plain text instead.
TEST_F(GenerationEvalTest, ConversationFilesUseTheChatTemplate) {
  const std::vector<std::string> c = Completions();
  ASSERT_EQ(c.size(), 4u);
  WriteText(root_ / "chat.json",
            json::array({{{"conversations", {{{"from", "human"}, {"value", "Hi"}}, {{"from", "gpt"}, {"value", c[0]}}}}},
                         {{"conversations", {{{"from", "human"}, {"value", "2+2="}}, {{"from", "gpt"}, {"value", "four"}}}}}})
                .dump());
  Result r = Run({"--prompts", (root_ / "chat.json").string(), "--max-new-tokens", "5"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_EQ(json::parse(r.out).at("rows"), 2);
  EXPECT_DOUBLE_EQ(json::parse(r.out).at("metrics").at("exact_match").get<double>(), 0.5);

  const std::vector<std::string> raw = Completions({"--raw"});
  ASSERT_EQ(raw.size(), 4u);
  EXPECT_NE(raw, c);  // no chat markers around the prompt: other positions, other tokens
}

TEST_F(GenerationEvalTest, BadInputExitsTwoAndWritesNothing) {
  const fs::path good = Prompts("good.jsonl", {"a", "b", "c", "d"});
  const fs::path out = root_ / "out.jsonl";
  auto expect_bad = [&](std::vector<std::string> args, const std::string& message) {
    args.insert(args.end(), {"--output", out.string()});
    Result r = Run(args);
    EXPECT_EQ(r.code, 2) << r.err;
    EXPECT_NE(r.err.find(message), std::string::npos) << "expected '" << message << "' in: " << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
    EXPECT_FALSE(fs::exists(out));
  };
  WriteText(root_ / "empty.jsonl", "");
  expect_bad({"--prompts", (root_ / "empty.jsonl").string()}, "no prompts");
  expect_bad({"--prompts", (root_ / "missing.jsonl").string()}, "missing.jsonl: no such file");
  expect_bad({"--prompts", good.string(), "--answer-regex", "([0-9]"}, "not a valid ECMAScript regular expression");
  expect_bad({"--prompts", good.string(), "--batch-size", "0"}, "--batch-size: expected an integer of at least 1");
  expect_bad({"--prompts", good.string(), "--frobnicate"}, "unknown option --frobnicate");
  expect_bad({"--prompts", good.string(), "--device", "tpu"}, "--device: expected auto, cpu or cuda");
  expect_bad({"--checkpoint", (root_ / "nowhere").string(), "--prompts", good.string()}, "nowhere");
  WriteText(root_ / "long.jsonl", "{\"prompt\": \"ok\", \"reference\": \"x\"}\n" +
                                      json{{"prompt", std::string(60, 'x')}, {"reference", "x"}}.dump() + "\n");
  expect_bad({"--prompts", (root_ / "long.jsonl").string()},
             (root_ / "long.jsonl").string() + ":2: the prompt is 64 tokens, longer than the model's context (seq_len 48)");
  WriteText(root_ / "bad_line.jsonl", "{\"prompt\": \"ok\", \"reference\": \"x\"}\n{\"prompt\": \"no reference\"}\n");
  expect_bad({"--prompts", (root_ / "bad_line.jsonl").string()}, "bad_line.jsonl:2: missing field \"reference\"");

  // A damaged checkpoint fails its manifest check.
  const fs::path weights = fs::path(checkpoint_) / "model.safetensors";
  std::fstream f(weights, std::ios::in | std::ios::out | std::ios::binary);
  f.seekp(-4, std::ios::end);
  f.write("\x01\x02\x03\x04", 4);
  f.close();
  expect_bad({"--checkpoint", checkpoint_, "--prompts", good.string()}, "model.safetensors");
}

}  // namespace
}  // namespace trm::worker
