#include "trm/common/flag_values.h"

#include "trm/common/error.h"

namespace trm {

int64_t IntFlag(const std::string& flag, const std::string& value, int64_t min) {
  try {
    size_t used = 0;
    const long long n = std::stoll(value, &used);
    if (used == value.size() && n >= min) return n;
  } catch (const std::exception&) {
  }
  InvalidArgument(flag + ": expected an integer of at least " + std::to_string(min) + ", got '" + value + "'");
}

double NumberFlag(const std::string& flag, const std::string& value) {
  try {
    size_t used = 0;
    const double d = std::stod(value, &used);
    if (used == value.size()) return d;
  } catch (const std::exception&) {
  }
  InvalidArgument(flag + ": expected a number, got '" + value + "'");
}

}  // namespace trm
