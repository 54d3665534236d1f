// Runs the built trm-data / trm-bench binaries as a user would.
#include <gtest/gtest.h>

#include <algorithm>

#include "test_util.h"

namespace trm::data {
namespace {

using testing::BinDir;
using testing::RunCommand;

TEST(TrmDataCli, EncodeAndDecodeGpt2) {
  const auto enc = RunCommand(BinDir() + "/trm-data encode --tokenizer gpt2",
                              "{\"text\": \"Hello world<|user|>\"}\n");
  ASSERT_EQ(enc.exit_code, 0) << enc.err;
  EXPECT_EQ(enc.out, "{\"ids\":[15496,995,27,91,7220,91,29]}\n");
  const auto special = RunCommand(BinDir() + "/trm-data encode --tokenizer gpt2 --special",
                                  "{\"text\": \"Hello world<|user|>\"}\n");
  EXPECT_EQ(special.out, "{\"ids\":[15496,995,50260]}\n");
  const auto dec = RunCommand(BinDir() + "/trm-data decode --tokenizer gpt2", special.out);
  ASSERT_EQ(dec.exit_code, 0) << dec.err;
  EXPECT_EQ(dec.out, "{\"text\":\"Hello world<|user|>\"}\n");
}

TEST(TrmDataCli, ErrorsGoToStderrWithNonZeroExit) {
  const auto bad = RunCommand(BinDir() + "/trm-data encode --tokenizer byte", "{\"text\": 1}\n");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_EQ(bad.err.rfind("error: stdin:1:", 0), 0u) << bad.err;
  const auto flag = RunCommand(BinDir() + "/trm-data encode --tokenizer byte --bogus");
  EXPECT_NE(flag.exit_code, 0);
  EXPECT_NE(flag.err.find("unknown argument '--bogus'"), std::string::npos) << flag.err;
  const auto missing = RunCommand(BinDir() + "/trm-data encode");
  EXPECT_NE(missing.err.find("--tokenizer is required"), std::string::npos) << missing.err;
}

TEST(TrmDataCli, BuildPrintsASummaryAndFailsCleanly) {
  testing::TempDir tmp;
  const auto ok = RunCommand(BinDir() + "/trm-data build --input " + testing::SharedDir() +
                             "/data/sharegpt_fastchat_dummy.json --tokenizer byte --max-length 128 "
                             "--loss-on assistant --pack --output-dir " + (tmp / "ds"));
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  EXPECT_NE(ok.out.find("500 conversations (train 475, test 25; 0 empty skipped)"), std::string::npos) << ok.out;
  EXPECT_TRUE(std::filesystem::exists(tmp / "ds/train/all__inputs.npy"));
  const auto build = nlohmann::json::parse(testing::ReadText(tmp / "ds/build.json"));
  EXPECT_EQ(build["options"]["loss_on"], "assistant");
  EXPECT_EQ(build["options"]["pack"], true);

  testing::WriteText(tmp / "bad.json", "[{\"conversations\": [{\"from\": \"human\", \"value\": 1}]}]");
  const auto bad = RunCommand(BinDir() + "/trm-data build --input " + (tmp / "bad.json") + " --tokenizer byte "
                              "--output-dir " + (tmp / "bad"));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("error: " + (tmp / "bad.json") + ": conversation 0: turn 0: field \"value\": expected a string"),
            std::string::npos) << bad.err;
  EXPECT_FALSE(std::filesystem::exists(tmp / "bad"));
  const auto flag = RunCommand(BinDir() + "/trm-data build --input x --output-dir y --max-length ten");
  EXPECT_NE(flag.err.find("--max-length: expected an integer, got 'ten'"), std::string::npos) << flag.err;
  const auto format = RunCommand(BinDir() + "/trm-data build --input x --output-dir y --format csv");
  EXPECT_NE(format.err.find("--format: unknown format 'csv'"), std::string::npos) << format.err;
}

TEST(TrmBenchCli, TokenizePrintsOneJsonLine) {
  const auto r = RunCommand(BinDir() + "/trm-bench tokenize --tokenizer gpt2 --reps 1 --input " +
                            testing::SharedDir() + "/data/sharegpt_fastchat_dummy.json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  ASSERT_EQ(std::count(r.out.begin(), r.out.end(), '\n'), 1) << r.out;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["bench"], "tokenize");
  EXPECT_GT(j["mb_per_s"].get<double>(), 0.0);
  EXPECT_EQ(j["bytes"].get<size_t>(), j["bytes"].get<size_t>());
  const auto unknown = RunCommand(BinDir() + "/trm-bench nope");
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE(unknown.err.find("unknown benchmark 'nope'"), std::string::npos);
}

}  // namespace
}  // namespace trm::data
