// The three input formats, record (JSON object) -> turns. Internal.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "trm/data/chat_template.h"
#include "trm/data/dataset_builder.h"

namespace trm::data::internal {

// By the fields present: "conversations" ShareGPT, "messages" OpenAssistant, "instruction" Alpaca;
// kAuto when none.
ChatFormat DetectFormat(const nlohmann::json& record);

// Replaces *turns. `where` names the record ("data.json: conversation 12") in the errors
// (InvalidArgument: a missing or mistyped field, an unknown role).
void ParseRecord(const nlohmann::json& record, ChatFormat format, const std::string& where,
                 std::vector<Turn>* turns);

}  // namespace trm::data::internal
