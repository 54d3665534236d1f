#include "trm/model/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "trm/common/error.h"

namespace trm::model {
namespace {

std::string Header(const std::string& json) {
  uint64_t n = json.size();
  return std::string(reinterpret_cast<const char*>(&n), 8) + json;
}

// Expects Parse to throw DataLoss whose message contains the file name and `needle`.
void ExpectBad(const std::string& bytes, const std::string& needle) {
  try {
    SafetensorsFile::Parse(bytes, "bad.safetensors");
    ADD_FAILURE() << "parsed without error; expected: " << needle;
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kDataLoss) << e.what();
    EXPECT_NE(std::string(e.what()).find("bad.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

std::string ValidFile() {
  float a[6] = {1, 2, 3, 4, 5, 6};
  int32_t b[2] = {-7, 9};
  uint8_t c[3] = {1, 0, 1};
  return SerializeSafetensors({{"a", DType::kF32, {2, 3}, a}, {"b", DType::kI32, {2}, b}, {"c", DType::kBool, {3}, c},
                               {"empty", DType::kF32, {0, 4}, nullptr}},
                              {{"arch", "{\"x\":1}"}});
}

TEST(SafetensorsTest, RoundTrip) {
  SafetensorsFile f = SafetensorsFile::Parse(ValidFile(), "mem");
  EXPECT_EQ(f.Names(), (std::vector<std::string>{"a", "b", "c", "empty"}));
  EXPECT_EQ(f.metadata().at("arch"), "{\"x\":1}");
  const TensorView& a = f.Get("a");
  EXPECT_EQ(a.dtype, DType::kF32);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  ASSERT_EQ(a.nbytes, 24u);
  float back[6];
  std::memcpy(back, a.data, 24);
  EXPECT_EQ(back[5], 6.0f);
  const TensorView& b = f.Get("b");
  int32_t bb[2];
  std::memcpy(bb, b.data, 8);
  EXPECT_EQ(bb[0], -7);
  EXPECT_EQ(f.Get("empty").numel(), 0);
  EXPECT_THROW(f.Get("nope"), Error);
}

TEST(SafetensorsTest, HeaderIsPaddedToEightBytes) {
  std::string s = ValidFile();
  uint64_t n;
  std::memcpy(&n, s.data(), 8);
  EXPECT_EQ((8 + n) % 8, 0u);
}

TEST(SafetensorsTest, MalformedFilesGiveClearErrors) {
  ExpectBad("", "too short");
  ExpectBad("abc", "too short");
  ExpectBad(Header("{}").substr(0, 8) + "{", "runs past the end");
  {
    uint64_t huge = 1ull << 40;
    ExpectBad(std::string(reinterpret_cast<const char*>(&huge), 8) + "{}", "exceeds the 100 MiB limit");
  }
  ExpectBad(Header("{not json"), "not valid JSON");
  ExpectBad(Header("[]"), "not a JSON object");
  ExpectBad(Header(R"({"t":{"dtype":"F33","shape":[1],"data_offsets":[0,4]}})") + "abcd", "unknown dtype 'F33'");
  ExpectBad(Header(R"({"t":{"shape":[1],"data_offsets":[0,4]}})") + "abcd", "missing or non-string dtype");
  ExpectBad(Header(R"({"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})") + "abcd", "non-negative integer");
  ExpectBad(Header(R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})") + "abcd", "more bytes than");
  ExpectBad(Header(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})") + "abcd", "past the data section");
  ExpectBad(Header(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[4,0]}})") + "abcd", "begin 4 > end 0");
  ExpectBad(Header(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,2]}})") + "abcd", "need 4");
  ExpectBad(Header(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0]}})") + "abcd", "data_offsets must be");
  ExpectBad(Header(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"u":{"dtype":"I32","shape":[1],"data_offsets":[2,6]}})") +
                "abcdefgh",
            "overlap");
  ExpectBad(Header(R"({"t":{"dtype":"F32","shape":[1],"data_offsets":[0,4],"x":1}})") + "abcd", "unknown field 'x'");
  ExpectBad(Header(R"({"__metadata__":{"k":1}})"), "__metadata__.k: expected a string");
  ExpectBad(Header(R"({"t":{"dtype":"F32","shape":[4294967296,4294967296,4294967296],"data_offsets":[0,4]}})") + "abcd",
            "more bytes than");
}

TEST(SafetensorsTest, TruncatedFileIsDetected) {
  std::string s = ValidFile();
  ExpectBad(s.substr(0, s.size() - 1), "past the data section");
}

// Random corruption must only ever produce trm::Error, never a crash or another exception.
TEST(SafetensorsTest, RandomCorruptionNeverCrashes) {
  const std::string good = ValidFile();
  std::mt19937 rng(1234);
  int errors = 0;
  for (int i = 0; i < 3000; ++i) {
    std::string s = good;
    int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      switch (rng() % 3) {
        case 0: s[rng() % s.size()] = static_cast<char>(rng()); break;
        case 1: s.resize(rng() % s.size()); break;
        case 2: s.insert(rng() % (s.size() + 1), 1, static_cast<char>("{}[],:\"0123456789"[rng() % 17])); break;
      }
      if (s.empty()) break;
    }
    try {
      SafetensorsFile f = SafetensorsFile::Parse(s, "fuzz");
      for (const auto& n : f.Names()) {
        const TensorView& v = f.Get(n);
        // Every exposed byte range lies inside the buffer.
        volatile uint8_t sink = 0;
        for (size_t k = 0; k < v.nbytes; ++k) sink = sink + v.data[k];
      }
    } catch (const Error&) {
      ++errors;
    }
  }
  EXPECT_GT(errors, 1000);
}

}  // namespace
}  // namespace trm::model
