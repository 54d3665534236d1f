// Data paths confined to --data-root directories: by the words (the coordinator) and after
// symlinks (the worker), tried with '..', relative and absolute paths, prefixes that are not
// parents, a symlink inside a root that points outside it, and a root that is itself a symlink.
#include "trm/common/path_confine.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <functional>

#include "trm/common/error.h"

namespace fs = std::filesystem;

namespace trm {
namespace {

// The code `fn` throws; kInternal stands for "did not throw" (no such code is thrown here).
Code CodeOf(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.code();
  }
  return Code::kInternal;
}

TEST(PathConfineTest, WordsAlone) {
  EXPECT_EQ(NormalAbsolutePath("/data/./a//b/", "p"), "/data/a/b");
  EXPECT_EQ(NormalAbsolutePath("/data/a/../../etc", "p"), "/etc");
  EXPECT_EQ(NormalAbsolutePath("/..", "p"), "/");
  EXPECT_EQ(CodeOf([] { NormalAbsolutePath("data/a", "p"); }), Code::kInvalidArgument);
  EXPECT_EQ(CodeOf([] { NormalAbsolutePath("", "p"); }), Code::kInvalidArgument);
  EXPECT_TRUE(PathWithin("/data", "/data"));
  EXPECT_TRUE(PathWithin("/data/a", "/data"));
  EXPECT_FALSE(PathWithin("/data2", "/data"));
  EXPECT_FALSE(PathWithin("/dat", "/data"));
  EXPECT_FALSE(PathWithin("/etc", "/data"));
  EXPECT_TRUE(PathWithin("/etc", "/"));
}

class ResolvedPathTest : public ::testing::Test {
 protected:
  void SetUp() override {
    base_ = fs::temp_directory_path() / ("trm_confine_" + std::to_string(::getpid()) + "_" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(base_);
    fs::create_directories(base_ / "real" / "ds");
    fs::create_directories(base_ / "outside" / "secret");
    fs::create_symlink(base_ / "outside", base_ / "real" / "escape");  // inside the root, pointing out
    fs::create_symlink(base_ / "real", base_ / "rootlink");             // a root that is a symlink
    fs::create_symlink(base_ / "real" / "ds", base_ / "real" / "alias");
  }
  void TearDown() override { fs::remove_all(base_); }
  fs::path base_;
};

TEST_F(ResolvedPathTest, SymlinksAreFollowedBeforeTheCheck) {
  const auto roots = ResolveDataRoots({(base_ / "rootlink").string()});
  ASSERT_EQ(roots.size(), 1u);
  EXPECT_EQ(roots[0].given, (base_ / "rootlink").string());
  EXPECT_EQ(roots[0].resolved, fs::canonical(base_ / "real").string());
  const std::string real_ds = fs::canonical(base_ / "real" / "ds").string();
  EXPECT_EQ(ResolveWithinRoots((base_ / "rootlink" / "ds").string(), roots), real_ds);
  EXPECT_EQ(ResolveWithinRoots((base_ / "real" / "ds").string(), roots), real_ds);
  EXPECT_EQ(ResolveWithinRoots((base_ / "real" / "alias").string(), roots), real_ds);  // a link that stays in
  try {
    ResolveWithinRoots((base_ / "rootlink" / "escape" / "secret").string(), roots);
    FAIL() << "a symlink out of the root was followed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kPermissionDenied);
    EXPECT_NE(std::string(e.what()).find("outside this worker's --data-root"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("outside/secret"), std::string::npos) << e.what();  // what it resolves to
  }
  EXPECT_EQ(CodeOf([&] { ResolveWithinRoots((base_ / "real" / ".." / "outside").string(), roots); }),
            Code::kPermissionDenied);
  EXPECT_EQ(CodeOf([&] { ResolveWithinRoots("/etc", roots); }), Code::kPermissionDenied);
  EXPECT_EQ(CodeOf([&] { ResolveWithinRoots((base_ / "real" / "missing").string(), roots); }), Code::kNotFound);
  EXPECT_EQ(CodeOf([&] { ResolveWithinRoots("relative", roots); }), Code::kInvalidArgument);
  // Below the data path: a link out (a tokenizer/ pointing at /etc, say) is refused; links that
  // stay inside, and cycles, are fine.
  fs::create_directories(base_ / "real" / "ds" / "train");
  fs::create_symlink(base_ / "real" / "ds", base_ / "real" / "ds" / "train" / "loop");  // a cycle
  fs::create_symlink(base_ / "real" / "alias", base_ / "real" / "ds" / "inside");
  EXPECT_NO_THROW(CheckTreeWithinRoots(real_ds, roots));
  EXPECT_EQ(CodeOf([&] { CheckTreeWithinRoots(real_ds, roots, 2); }), Code::kInvalidArgument);  // bounded
  fs::create_symlink(base_ / "outside" / "secret", base_ / "real" / "ds" / "train" / "tokenizer");
  try {
    CheckTreeWithinRoots(real_ds, roots);
    FAIL() << "a link out of the root below the data path was accepted";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kPermissionDenied);
    EXPECT_NE(std::string(e.what()).find("train/tokenizer links to"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(CheckTreeWithinRoots(real_ds, {}));  // no roots: nothing to check
  // No roots: anything that exists.
  EXPECT_EQ(ResolveWithinRoots((base_ / "outside").string(), {}), fs::canonical(base_ / "outside").string());
  // A root must exist and be a directory.
  EXPECT_EQ(CodeOf([&] { ResolveDataRoots({(base_ / "nope").string()}); }), Code::kInvalidArgument);
  EXPECT_EQ(CodeOf([&] { ResolveDataRoots({"relative/root"}); }), Code::kInvalidArgument);
}

}  // namespace
}  // namespace trm
