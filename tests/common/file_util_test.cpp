#include "trm/common/file_util.h"

#include <gtest/gtest.h>
#include <unistd.h>

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

}  // namespace
}  // namespace trm
