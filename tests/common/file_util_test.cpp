#include "trm/common/file_util.h"

#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>

#include <filesystem>

#include "trm/common/error.h"

namespace trm {
namespace {

namespace fs = std::filesystem;

class FileUtilTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("trm_file_util_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(FileUtilTest, AtomicWriteReplacesAndLeavesNoTemporary) {
  std::string p = (dir_ / "a.bin").string();
  WriteFileAtomic(p, std::string("first\0x", 7));
  EXPECT_EQ(ReadFile(p), std::string("first\0x", 7));
  WriteFileAtomic(p, "second");
  EXPECT_EQ(ReadFile(p), "second");
  int entries = 0;
  for (auto& e : fs::directory_iterator(dir_)) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

TEST_F(FileUtilTest, MissingFileIsNotFoundNamingThePath) {
  std::string p = (dir_ / "missing.bin").string();
  try {
    ReadFile(p);
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kNotFound);
    EXPECT_NE(std::string(e.what()).find(p), std::string::npos);
  }
}

TEST_F(FileUtilTest, UnwritableDirectoryIsIoError) {
  std::string p = (dir_ / "no_such_dir" / "x.bin").string();
  try {
    WriteFileAtomic(p, "data");
    FAIL();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kIoError);
    EXPECT_NE(std::string(e.what()).find("no_such_dir"), std::string::npos);
  }
}

// A full disk (here: a file size limit, which fails writes the same way) is kResourceExhausted
// naming the file, so callers can tell it from other I/O errors; no temporary is left.
TEST_F(FileUtilTest, FullDiskIsResourceExhaustedAndLeavesNoTemporary) {
  const std::string p = (dir_ / "big.bin").string();
  struct rlimit old {};
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old), 0);
  auto* old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  Code code = Code::kInternal;
  std::string what;
  try {
    WriteFileAtomic(p, std::string(100000, 'x'));
  } catch (const Error& e) {
    code = e.code();
    what = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_EQ(code, Code::kResourceExhausted) << what;
  EXPECT_NE(what.find("big.bin"), std::string::npos) << what;
  EXPECT_NE(what.find("File too large"), std::string::npos) << what;
  EXPECT_FALSE(fs::exists(p));
  for (const auto& e : fs::directory_iterator(dir_)) EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos);
}

}  // namespace
}  // namespace trm
