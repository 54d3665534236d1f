// The prompt files of `trm-eval generate`: prompt/reference JSON Lines and the chat formats, and
// their errors naming the file and line.
#include "trm/data/eval_prompts.h"

#include <gtest/gtest.h>

#include "test_util.h"
#include "trm/common/error.h"
#include "trm/data/tokenizer.h"

namespace trm::data {
namespace {

using testing::TempDir;
using testing::WriteText;

// The trm::Error `f` throws (its code and message), or fails the test.
template <typename F>
Error ErrorOf(F f) {
  try {
    f();
  } catch (const Error& e) {
    return e;
  }
  ADD_FAILURE() << "expected a trm::Error";
  return Error(Code::kInternal, "none");
}

TEST(EvalPromptsTest, ReadsPromptReferenceLines) {
  TempDir dir;
  WriteText(dir / "p.jsonl",
            "{\"prompt\": \"What is 2+2?\", \"reference\": \"4\"}\n"
            "\n"
            "{\"reference\": \"Paris\", \"prompt\": \"Capital of France?\", \"id\": 7}\n");
  EvalPromptFile f = ReadEvalPrompts(dir / "p.jsonl");
  EXPECT_EQ(f.format, "prompt_reference");
  ASSERT_EQ(f.prompts.size(), 2u);
  EXPECT_EQ(f.prompts[0].prompt, "What is 2+2?");
  EXPECT_EQ(f.prompts[0].reference, "4");
  ASSERT_EQ(f.prompts[0].context.size(), 1u);
  EXPECT_EQ(f.prompts[0].context[0].role, Role::kUser);
  EXPECT_EQ(f.prompts[1].reference, "Paris");
  EXPECT_EQ(f.prompts[1].where, dir / "p.jsonl" + ":3");
}

TEST(EvalPromptsTest, ShareGptLastAssistantTurnIsTheReference) {
  TempDir dir;
  WriteText(dir / "s.json", R"([
  {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                     {"from": "gpt", "value": "Hello!"}, {"from": "human", "value": "2+2?"},
                     {"from": "gpt", "value": "4"}, {"from": "human", "value": "thanks"}]},
  {"conversations": [{"from": "human", "value": "Name a colour"}, {"from": "gpt", "value": "Red"}]}
])");
  EvalPromptFile f = ReadEvalPrompts(dir / "s.json");
  EXPECT_EQ(f.format, "sharegpt");
  ASSERT_EQ(f.prompts.size(), 2u);
  const EvalPrompt& p = f.prompts[0];
  EXPECT_EQ(p.reference, "4");
  ASSERT_EQ(p.context.size(), 4u);  // system, user, assistant, user; the trailing user turn is dropped
  EXPECT_EQ(p.context[3].text, "2+2?");
  EXPECT_EQ(p.prompt, "Be brief.\nHi\nHello!\n2+2?");
  EXPECT_EQ(f.prompts[1].reference, "Red");
  EXPECT_EQ(f.prompts[1].where, dir / "s.json" + ":5");  // the line its object starts on
}

TEST(EvalPromptsTest, AlpacaAndOpenAssistant) {
  TempDir dir;
  WriteText(dir / "a.jsonl",
            "{\"instruction\": \"Add the numbers\", \"input\": \"2 and 3\", \"output\": \"5\"}\n"
            "{\"instruction\": \"Say yes\", \"output\": \"yes\"}\n");
  EvalPromptFile a = ReadEvalPrompts(dir / "a.jsonl");
  EXPECT_EQ(a.format, "alpaca");
  ASSERT_EQ(a.prompts.size(), 2u);
  EXPECT_EQ(a.prompts[0].prompt, "Add the numbers\n\n2 and 3");
  EXPECT_EQ(a.prompts[0].reference, "5");
  EXPECT_EQ(a.prompts[1].reference, "yes");

  WriteText(dir / "o.jsonl",
            "{\"messages\": [{\"role\": \"prompter\", \"content\": \"Q\"}, {\"role\": \"assistant\", \"content\": \"A\"}]}\n");
  EvalPromptFile o = ReadEvalPrompts(dir / "o.jsonl");
  EXPECT_EQ(o.format, "openassistant");
  ASSERT_EQ(o.prompts.size(), 1u);
  EXPECT_EQ(o.prompts[0].prompt, "Q");
  EXPECT_EQ(o.prompts[0].reference, "A");
}

TEST(EvalPromptsTest, BadLinesNameTheFileTheLineAndWhatWasExpected) {
  TempDir dir;
  const std::string p = dir / "p.jsonl";
  auto message = [&](const std::string& text) {
    WriteText(p, text);
    Error e = ErrorOf([&] { ReadEvalPrompts(p); });
    EXPECT_EQ(e.code(), Code::kInvalidArgument) << e.what();
    return std::string(e.what());
  };
  const std::string good = "{\"prompt\": \"a\", \"reference\": \"b\"}\n";
  EXPECT_EQ(message(good + good + "{\"prompt\": \"c\"}\n"),
            p + ":3: missing field \"reference\" (expected {\"prompt\": TEXT, \"reference\": TEXT})");
  EXPECT_EQ(message(good + "{\"prompt\": 5, \"reference\": \"b\"}\n"),
            p + ":2: field \"prompt\": expected a string, got number");
  EXPECT_NE(message(good + "{\"prompt\": \"x\", \n").find(p + ":2:"), std::string::npos);
  EXPECT_NE(message("{\"text\": \"x\"}\n").find(p + ":1: cannot tell the format"), std::string::npos);
  EXPECT_EQ(message("{\"conversations\": [{\"from\": \"human\", \"value\": \"hi\"}]}\n"),
            p + ":1: expected an assistant turn (the reference), found none");
  EXPECT_EQ(message("{\"conversations\": [{\"from\": \"gpt\", \"value\": \"hi\"}]}\n"),
            p + ":1: expected a turn before the last assistant turn (the prompt), found none");
  EXPECT_NE(message("{\"conversations\": [{\"from\": \"robot\", \"value\": \"hi\"}]}\n").find(p + ":1: turn 0: unknown role"),
            std::string::npos);
  EXPECT_EQ(message("\n\n"), p + ": no prompts (expected one JSON object a line)");
  EXPECT_EQ(ErrorOf([&] { ReadEvalPrompts(dir / "missing.jsonl"); }).code(), Code::kNotFound);
}

TEST(EvalPromptsTest, GenerationPromptRendersLikeTrainingData) {
  Tokenizer tok = Tokenizer::Load("byte");
  // One user turn: the chat prompt of trm-generate.
  EXPECT_EQ(RenderGenerationPrompt({{Role::kUser, "hi"}}, false, tok), RenderPrompt("hi", tok));
  // Several turns: the training rendering of the context, cut before its <|endoftext|>, then the
  // assistant header.
  const std::vector<Turn> context = {{Role::kSystem, "sys"}, {Role::kUser, "a"}, {Role::kAssistant, "b"}, {Role::kUser, "c"}};
  RenderedChat full;
  std::vector<Turn> with_reply = context;
  with_reply.push_back({Role::kAssistant, "d"});
  RenderChat(with_reply, true, tok, &full);
  std::vector<int32_t> prompt = RenderGenerationPrompt(context, true, tok);
  ASSERT_LT(prompt.size(), full.tokens.size());
  EXPECT_TRUE(std::equal(prompt.begin(), prompt.end(), full.tokens.begin()));  // a prefix of the training row
  EXPECT_EQ(prompt.back(), *tok.SpecialId("<|assistant|>"));
  EXPECT_EQ(tok.Decode(prompt), "<|system|>sys<|endsystem|><|sep|><|user|>a<|enduser|><|sep|><|assistant|>b"
                                "<|endassistant|><|sep|><|user|>c<|enduser|><|sep|><|assistant|>");
  // System turns are dropped unless asked for, as the dataset builder does.
  EXPECT_EQ(tok.Decode(RenderGenerationPrompt({{Role::kSystem, "sys"}, {Role::kUser, "a"}}, false, tok)),
            "<|user|>a<|enduser|><|sep|><|assistant|>");
}

}  // namespace
}  // namespace trm::data
