#include "trm/common/error.h"

#include <gtest/gtest.h>

namespace trm {
namespace {

TEST(ErrorTest, CarriesCodeAndMessage) {
  try {
    InvalidArgument("config.yaml: arch.hidden_size: expected a positive integer");
    FAIL() << "InvalidArgument returned";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kInvalidArgument);
    EXPECT_STREQ(e.what(), "config.yaml: arch.hidden_size: expected a positive integer");
    EXPECT_STREQ(CodeName(e.code()), "INVALID_ARGUMENT");
  }
}

TEST(ErrorTest, IsAStdException) {
  EXPECT_THROW(DataLoss("x"), std::runtime_error);
  EXPECT_STREQ(CodeName(Code::kDataLoss), "DATA_LOSS");
}

}  // namespace
}  // namespace trm
