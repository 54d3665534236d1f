// trmctl pull against a fake coordinator: resumes a broken download from the bytes it has,
// verifies every file, and leaves nothing behind when a file is corrupt. Also dataset push.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "fake_coordinator.h"
#include "trm/cli/commands.h"
#include "trm/common/file_util.h"

namespace fs = std::filesystem;

namespace trm::cli {
namespace {

void WriteBytes(const fs::path& p, size_t n, char seed) {
  fs::create_directories(p.parent_path());
  std::string s(n, '\0');
  for (size_t i = 0; i < n; ++i) s[i] = static_cast<char>(seed + i * 7 % 251);
  std::ofstream(p, std::ios::binary) << s;
}

class CliPull : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() /
            ("trm_cli_pull_" + std::to_string(::getpid()) + "_" +
             ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    const fs::path ckpt = root_ / "server" / "step_20";
    // Over one 1 MiB chunk, so the model file arrives in two chunks.
    WriteBytes(ckpt / "model.safetensors", (1 << 20) + 12345, 'a');
    WriteBytes(ckpt / "optimizer" / "moments.bin", 70000, 'b');
    WriteBytes(ckpt / "meta.json", 300, 'c');
    server_.jobs.checkpoint_dir = ckpt.string();
    server_.jobs.manifest = rpc::BuildManifest(ckpt.string(), "step_20");
    out_dir_ = (root_ / "pulled").string();
  }
  void TearDown() override { fs::remove_all(root_); }
  Stubs stubs() { return server_.Connect()(server_.address()); }

  testing::FakeServer server_;
  fs::path root_;
  std::string out_dir_;
};

TEST_F(CliPull, ResumesAfterABrokenStreamAndVerifies) {
  server_.jobs.download_break_after_chunks = 1;  // the first two streams die after one chunk
  server_.jobs.download_breaks = 2;
  std::ostringstream out, err;
  ASSERT_EQ(cli::Run({"pull", "job-1", "-o", out_dir_, "--coordinator", server_.address()}, server_.Connect(),
                Io{&out, &err, false}),
            0);
  EXPECT_NE(out.str().find("pulled step_20 to " + out_dir_), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("MB/s"), std::string::npos);
  for (const auto& f : server_.jobs.manifest.files())
    EXPECT_EQ(ReadFile(out_dir_ + "/" + f.path()), ReadFile(server_.jobs.checkpoint_dir + "/" + f.path())) << f.path();
  EXPECT_FALSE(fs::exists(out_dir_ + ".partial"));

  const auto& reqs = server_.jobs.download_requests;
  ASSERT_EQ(reqs.size(), 3u);
  EXPECT_EQ(reqs[0].offset(), 0u);
  EXPECT_EQ(reqs[0].selector(), "latest");
  // Files in manifest order: meta.json (300 B), model (1 MiB + ...): one chunk each before a break.
  EXPECT_EQ(reqs[1].offset(), 300u);
  EXPECT_EQ(reqs[2].offset(), 300u + (1u << 20));
  // Once the manifest named the checkpoint, resumes ask for that one, not whatever is latest now.
  EXPECT_EQ(reqs[1].selector(), "step_20");
}

TEST_F(CliPull, WeightsOnlyAsksForIt) {
  std::ostringstream out, err;
  ASSERT_EQ(cli::Run({"pull", "job-1", "-o", out_dir_, "--weights-only", "--coordinator", server_.address()},
                     server_.Connect(), Io{&out, &err, false}),
            0);
  ASSERT_EQ(server_.jobs.download_requests.size(), 1u);
  EXPECT_TRUE(server_.jobs.download_requests[0].weights_only());
  EXPECT_NE(out.str().find("weights only"), std::string::npos) << out.str();
}

TEST_F(CliPull, RejectsACorruptedFileAndLeavesNothing) {
  // Same size, different bytes: only the SHA-256 check can notice.
  const fs::path victim = fs::path(server_.jobs.checkpoint_dir) / "optimizer" / "moments.bin";
  WriteBytes(victim, 70000, 'z');
  server_.jobs.download_break_after_chunks = 2;
  PullOptions o;
  o.job_id = "job-1";
  o.out_dir = out_dir_;
  try {
    Pull(stubs().jobs.get(), o);
    FAIL() << "expected a DataLoss error";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kDataLoss);
    EXPECT_NE(std::string(e.what()).find("optimizer/moments.bin"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(fs::exists(out_dir_));
  EXPECT_FALSE(fs::exists(out_dir_ + ".partial"));
}

TEST_F(CliPull, RejectsAManifestWhoseHashDoesNotMatch) {
  server_.jobs.manifest.set_content_sha256(std::string(64, '0'));
  PullOptions o;
  o.job_id = "job-1";
  o.out_dir = out_dir_;
  EXPECT_THROW(Pull(stubs().jobs.get(), o), Error);
  EXPECT_FALSE(fs::exists(out_dir_));
}

TEST_F(CliPull, GivesUpAfterTheRetries) {
  server_.jobs.download_break_after_chunks = 0;  // never any progress
  server_.jobs.download_breaks = 1000;
  PullOptions o;
  o.job_id = "job-1";
  o.out_dir = out_dir_;
  o.retries = 2;
  o.initial_backoff = std::chrono::milliseconds(10);
  try {
    Pull(stubs().jobs.get(), o);
    FAIL() << "expected an error";
  } catch (const RpcError& e) {
    EXPECT_EQ(e.code(), Code::kUnavailable);
  }
  EXPECT_EQ(server_.jobs.download_requests.size(), 3u);
  EXPECT_FALSE(fs::exists(out_dir_ + ".partial"));
}

TEST_F(CliPull, RefusesANonEmptyDirectoryUnlessForced) {
  WriteBytes(fs::path(out_dir_) / "old.txt", 10, 'x');
  PullOptions o;
  o.job_id = "job-1";
  o.out_dir = out_dir_;
  EXPECT_THROW(Pull(stubs().jobs.get(), o), UsageError);
  EXPECT_TRUE(server_.jobs.download_requests.empty());
  o.force = true;
  const PullResult r = Pull(stubs().jobs.get(), o);
  EXPECT_EQ(r.name, "step_20");
  EXPECT_EQ(r.bytes, server_.jobs.manifest.total_bytes());
  EXPECT_FALSE(fs::exists(fs::path(out_dir_) / "old.txt"));
  EXPECT_TRUE(fs::exists(fs::path(out_dir_) / "meta.json"));
}

TEST_F(CliPull, UnknownJobIsAnRpcError) {
  std::ostringstream out, err;
  try {
    cli::Run({"pull", "job-7", "-o", out_dir_, "--coordinator", server_.address()}, server_.Connect(), Io{&out, &err, false});
    FAIL() << "expected an error";
  } catch (const RpcError& e) {
    EXPECT_EQ(e.code(), Code::kNotFound);
    EXPECT_EQ(ExitCodeFor(e), 1);
  }
  EXPECT_FALSE(fs::exists(out_dir_));
}

TEST_F(CliPull, DatasetPushSendsTheManifestThenTheFiles) {
  const fs::path ds = root_ / "my-data";
  WriteBytes(ds / "train" / "dataset.json", 200, 'd');
  WriteBytes(ds / "train" / "all__inputs.npy", (1 << 20) + 5, 'e');
  WriteBytes(ds / "test" / "dataset.json", 100, 'f');
  server_.datasets.received_dir = (root_ / "server_ds").string();
  std::ostringstream out, err;
  ASSERT_EQ(cli::Run({"dataset", "push", ds.string() + "/", "--coordinator", server_.address()}, server_.Connect(),
                Io{&out, &err, false}),
            0);
  const v1::Manifest m = rpc::BuildManifest(ds.string(), "my-data");
  EXPECT_EQ(out.str().substr(0, out.str().find('\n')), "my-data " + m.content_sha256());
  EXPECT_EQ(ReadFile(server_.datasets.received_dir + "/train/all__inputs.npy"),
            ReadFile((ds / "train" / "all__inputs.npy").string()));
  // Not a built dataset: refused locally.
  const fs::path bad = root_ / "not-a-dataset";
  WriteBytes(bad / "x.txt", 1, 'x');
  EXPECT_THROW(cli::Run({"dataset", "push", bad.string(), "--coordinator", server_.address()}, server_.Connect(),
                   Io{&out, &err, false}),
               UsageError);
}

TEST_F(CliPull, PromptsPushHoldsOnePromptsFile) {
  const fs::path qa = root_ / "qa";
  WriteBytes(qa / "prompts.jsonl", 100, 'q');
  server_.datasets.received_dir = (root_ / "server_qa").string();
  std::ostringstream out, err;
  // Not a built dataset: refused without --prompts, sent with it.
  EXPECT_THROW(cli::Run({"dataset", "push", qa.string(), "--coordinator", server_.address()}, server_.Connect(),
                        Io{&out, &err, false}),
               UsageError);
  ASSERT_EQ(cli::Run({"dataset", "push", qa.string(), "--prompts", "--coordinator", server_.address()},
                     server_.Connect(), Io{&out, &err, false}),
            0);
  EXPECT_EQ(ReadFile(server_.datasets.received_dir + "/prompts.jsonl"), ReadFile((qa / "prompts.jsonl").string()));
  WriteBytes(qa / "more.json", 10, 'm');  // two prompts files: which one?
  EXPECT_THROW(cli::Run({"dataset", "push", qa.string(), "--prompts", "--coordinator", server_.address()},
                        server_.Connect(), Io{&out, &err, false}),
               UsageError);
}

}  // namespace
}  // namespace trm::cli
