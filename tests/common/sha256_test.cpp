#include "trm/common/sha256.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "trm/common/error.h"

namespace trm {
namespace {

// FIPS 180-4's examples: build.json's content digests and the checkpoint manifests depend on
// these being SHA-256 exactly (datasets built before the data library moved to OpenSSL's keep
// their hashes).
TEST(Sha256Test, KnownVectors) {
  EXPECT_EQ(Sha256Hex(""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  EXPECT_EQ(Sha256Hex("abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(Sha256Hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
}

TEST(Sha256Test, IncrementalEqualsOneShotAndResetsAfterDigest) {
  Sha256 h;
  const std::string million(1000000, 'a');
  for (size_t i = 0; i < million.size(); i += 997) h.Update(million.data() + i, std::min<size_t>(997, million.size() - i));
  EXPECT_EQ(h.HexDigest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  h.Update("abc");
  EXPECT_EQ(h.HexDigest(), Sha256Hex("abc"));
}

TEST(Sha256Test, FileDigestAndMissingFileNamesIt) {
  const std::filesystem::path p = std::filesystem::temp_directory_path() / ("trm_sha_" + std::to_string(::getpid()));
  { std::ofstream(p) << "abc"; }
  EXPECT_EQ(Sha256File(p.string()), Sha256Hex("abc"));
  std::filesystem::remove(p);
  try {
    Sha256File(p.string());
    ADD_FAILURE() << "a missing file hashed";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kNotFound);
    EXPECT_NE(std::string(e.what()).find(p.string()), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace trm
