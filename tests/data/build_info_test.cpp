#include "trm/data/build_info.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "test_util.h"
#include "trm/common/error.h"

namespace trm::data {
namespace {

using testing::TempDir;
using testing::WriteText;

const std::string kDigest = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";

// Expects kDataLoss naming build.json and `field_text`.
void ExpectDataLoss(const std::string& dir, const std::string& field_text) {
  try {
    ContentDigest(dir);
    ADD_FAILURE() << "accepted a damaged build.json in " << dir;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kDataLoss) << e.what();
    EXPECT_NE(std::string(e.what()).find(dir + "/build.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(field_text), std::string::npos) << e.what();
  }
}

TEST(BuildInfoTest, DigestOfABuiltDatasetAndNoneWithoutBuildJson) {
  TempDir dir;
  EXPECT_EQ(ContentDigest(dir.path()), "");  // built by the reference's scripts: no build.json
  WriteText(dir / "build.json", R"({"format": "trm-chat", "content_sha256": ")" + kDigest + R"("})");
  EXPECT_EQ(ContentDigest(dir.path()), kDigest);
}

// A damaged build.json used to read as "no digest", so two different datasets passed the ranks'
// agreement check as the same.
TEST(BuildInfoTest, DamagedBuildJsonIsDataLossNamingTheFileAndField) {
  TempDir dir;
  WriteText(dir / "build.json", R"({"content_sha256": ")" + kDigest.substr(0, 20));  // truncated
  ExpectDataLoss(dir.path(), "not valid JSON");
  WriteText(dir / "build.json", "{}");
  ExpectDataLoss(dir.path(), "content_sha256");
  WriteText(dir / "build.json", R"({"content_sha256": 7})");
  ExpectDataLoss(dir.path(), "content_sha256");
  WriteText(dir / "build.json", R"({"content_sha256": "XYZ"})");
  ExpectDataLoss(dir.path(), "64 lower-case hex digits");
}

}  // namespace
}  // namespace trm::data
