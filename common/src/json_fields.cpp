#include "trm/common/json_fields.h"

#include <cmath>

#include "trm/common/error.h"

namespace trm {

using nlohmann::json;

namespace {
// For messages: YAML strings may hold bytes that are not UTF-8, which a plain dump() throws on.
std::string Show(const json& v) { return v.dump(-1, ' ', false, json::error_handler_t::replace); }
}  // namespace

int64_t JsonInt(const json& v, const std::string& key) {
  if (v.is_number_integer() || v.is_number_unsigned()) return v.get<int64_t>();
  if (v.is_number_float()) {
    double d = v.get<double>();
    if (std::floor(d) == d && std::fabs(d) < 9e15) return static_cast<int64_t>(d);
  }
  InvalidArgument(key + ": expected an integer, got " + std::string(v.type_name()) + " " + Show(v));
}

double JsonNumber(const json& v, const std::string& key) {
  if (v.is_number()) return v.get<double>();
  InvalidArgument(key + ": expected a number, got " + std::string(v.type_name()) + " " + Show(v));
}

bool JsonBool(const json& v, const std::string& key) {
  if (v.is_boolean()) return v.get<bool>();
  InvalidArgument(key + ": expected true or false, got " + std::string(v.type_name()) + " " + Show(v));
}

std::string JsonString(const json& v, const std::string& key) {
  if (v.is_string()) return v.get<std::string>();
  InvalidArgument(key + ": expected a string, got " + std::string(v.type_name()) + " " + Show(v));
}

std::vector<std::string> JsonStringList(const json& v, const std::string& key) {
  if (v.is_null()) return {};
  if (v.is_string()) return {v.get<std::string>()};
  if (!v.is_array()) InvalidArgument(key + ": expected a list of strings, got " + Show(v));
  std::vector<std::string> out;
  for (const auto& e : v) {
    if (!e.is_string()) InvalidArgument(key + ": expected a list of strings, got element " + Show(e));
    out.push_back(e.get<std::string>());
  }
  return out;
}

}  // namespace trm
