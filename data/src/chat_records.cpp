#include "chat_records.h"

#include "trm/common/error.h"

namespace trm::data::internal {
namespace {

const std::string& StringField(const nlohmann::json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) InvalidArgument(where + ": missing field \"" + key + "\"");
  if (!it->is_string()) InvalidArgument(where + ": field \"" + key + "\": expected a string, got " + it->type_name());
  return it->get_ref<const std::string&>();
}

const nlohmann::json& ArrayField(const nlohmann::json& obj, const char* key, const std::string& where) {
  auto it = obj.find(key);
  if (it == obj.end()) InvalidArgument(where + ": missing field \"" + key + "\"");
  if (!it->is_array()) InvalidArgument(where + ": field \"" + key + "\": expected an array, got " + it->type_name());
  return *it;
}

// ShareGPT's "from" and OpenAssistant's "role" values.
Role RoleOf(const std::string& name, const std::string& where, const char* expected) {
  if (name == "human" || name == "user" || name == "prompter") return Role::kUser;
  if (name == "gpt" || name == "assistant") return Role::kAssistant;
  if (name == "system") return Role::kSystem;
  InvalidArgument(where + ": unknown role \"" + name + "\" (expected " + expected + ")");
}

void ParseTurns(const nlohmann::json& list, const char* role_key, const char* text_key, const char* roles,
                const std::string& where, std::vector<Turn>* turns) {
  for (size_t i = 0; i < list.size(); ++i) {
    const std::string w = where + ": turn " + std::to_string(i);
    if (!list[i].is_object()) InvalidArgument(w + ": expected an object");
    const Role role = RoleOf(StringField(list[i], role_key, w), w, roles);
    turns->push_back({role, StringField(list[i], text_key, w)});
  }
}

}  // namespace

ChatFormat DetectFormat(const nlohmann::json& record) {
  if (!record.is_object()) return ChatFormat::kAuto;
  if (record.contains("conversations")) return ChatFormat::kShareGpt;
  if (record.contains("messages")) return ChatFormat::kOpenAssistant;
  if (record.contains("instruction")) return ChatFormat::kAlpaca;
  return ChatFormat::kAuto;
}

void ParseRecord(const nlohmann::json& record, ChatFormat format, const std::string& where,
                 std::vector<Turn>* turns) {
  turns->clear();
  if (!record.is_object()) InvalidArgument(where + ": expected an object");
  switch (format) {
    case ChatFormat::kShareGpt:
      ParseTurns(ArrayField(record, "conversations", where), "from", "value",
                 "human, user, gpt, assistant or system", where, turns);
      return;
    case ChatFormat::kOpenAssistant:
      ParseTurns(ArrayField(record, "messages", where), "role", "content",
                 "user, prompter, assistant or system", where, turns);
      return;
    case ChatFormat::kAlpaca: {
      std::string user = StringField(record, "instruction", where);
      auto input = record.find("input");
      if (input != record.end() && !input->is_null()) {
        if (!input->is_string()) InvalidArgument(where + ": field \"input\": expected a string, got " + input->type_name());
        if (!input->get_ref<const std::string&>().empty()) user += "\n\n" + input->get<std::string>();
      }
      const std::string& output = StringField(record, "output", where);
      turns->push_back({Role::kUser, std::move(user)});
      turns->push_back({Role::kAssistant, output});
      return;
    }
    case ChatFormat::kAuto:
      break;
  }
  Internal("ParseRecord: format not resolved");
}

}  // namespace trm::data::internal
