// How a listing or showing command prints: a table for people (the default) or one JSON document
// for scripts (`-o json`), whose field names are the API's (trm.proto, snake_case) and so stable.
#pragma once

#include <google/protobuf/message.h>

#include <ostream>
#include <string>

#include "args.h"

namespace trm::cli {

// The flag every listing / showing command takes.
FlagSpec OutputFlag();
// -o json (or the older --json where the command has it); -o table or none: false. Another
// value is a UsageError naming it.
bool WantsJson(const Args& args);
// `m` as one JSON line (proto field names, every field set).
void PrintJson(const google::protobuf::Message& m, std::ostream& out);

}  // namespace trm::cli
