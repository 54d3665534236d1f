#include "trm/data/text_codec.h"

#include <istream>
#include <nlohmann/json.hpp>
#include <ostream>

#include "json_records.h"
#include "trm/common/error.h"
#include "trm/data/tokenizer.h"

namespace trm::data {
namespace {

nlohmann::json ParseLine(const std::string& line, const std::string& where) {
  try {
    return nlohmann::json::parse(line);
  } catch (const nlohmann::json::parse_error& e) {
    // e.byte is 1-based within the line: the column.
    InvalidArgument(where + ":" + std::to_string(e.byte) + ": malformed JSON: " + internal::JsonErrorReason(e));
  } catch (const nlohmann::json::out_of_range& e) {  // a number too large for a double
    InvalidArgument(where + ": malformed JSON: " + internal::JsonErrorReason(e));
  }
}

bool Blank(const std::string& line) { return line.find_first_not_of(" \t\r") == std::string::npos; }

}  // namespace

size_t EncodeLines(std::istream& in, std::ostream& out, Tokenizer& tok, bool parse_special,
                   const std::string& source) {
  std::string line;
  std::vector<int32_t> ids;
  std::string buf;
  size_t line_no = 0, count = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (Blank(line)) continue;
    const std::string where = source + ":" + std::to_string(line_no);
    const nlohmann::json j = ParseLine(line, where);
    auto it = j.is_object() ? j.find("text") : j.end();
    if (!j.is_object() || it == j.end() || !it->is_string()) {
      InvalidArgument(where + ": expected an object with a string field \"text\"");
    }
    ids.clear();
    tok.Encode(it->get_ref<const std::string&>(), parse_special, &ids);
    buf.assign("{\"ids\":[");
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) buf.push_back(',');
      buf += std::to_string(ids[i]);
    }
    buf += "]}\n";
    out << buf;
    ++count;
  }
  return count;
}

size_t DecodeLines(std::istream& in, std::ostream& out, const Tokenizer& tok, const std::string& source) {
  std::string line;
  std::vector<int32_t> ids;
  size_t line_no = 0, count = 0;
  while (std::getline(in, line)) {
    ++line_no;
    if (Blank(line)) continue;
    const std::string where = source + ":" + std::to_string(line_no);
    const nlohmann::json j = ParseLine(line, where);
    auto it = j.is_object() ? j.find("ids") : j.end();
    if (!j.is_object() || it == j.end() || !it->is_array()) {
      InvalidArgument(where + ": expected an object with an array field \"ids\"");
    }
    ids.clear();
    for (const auto& v : *it) {
      if (!v.is_number_integer()) InvalidArgument(where + ": \"ids\": expected integers");
      ids.push_back(v.get<int32_t>());
    }
    std::string text;
    try {
      text = tok.Decode(ids);
    } catch (const Error& e) {
      InvalidArgument(where + ": " + e.what());
    }
    nlohmann::json o = {{"text", text}};
    out << o.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << '\n';
    ++count;
  }
  return count;
}

}  // namespace trm::data
