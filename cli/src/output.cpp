#include "output.h"

#include <google/protobuf/util/json_util.h>

#include "trm/cli/cli.h"

namespace trm::cli {

FlagSpec OutputFlag() { return {"--output", true, "-o"}; }

bool WantsJson(const Args& args) {
  const std::string v = args.Get("--output", "table");
  if (v != "table" && v != "json") throw UsageError("-o/--output: expected table or json, got '" + v + "'");
  return v == "json" || args.Has("--json");
}

void PrintJson(const google::protobuf::Message& m, std::ostream& out) {
  google::protobuf::util::JsonPrintOptions opt;
  opt.preserve_proto_field_names = true;
  std::string text;
  google::protobuf::util::MessageToJsonString(m, &text, opt);
  out << text << '\n';
}

}  // namespace trm::cli
