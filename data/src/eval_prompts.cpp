#include "trm/data/eval_prompts.h"

#include <nlohmann/json.hpp>

#include "chat_records.h"
#include "json_records.h"
#include "trm/common/error.h"
#include "trm/data/dataset_builder.h"

namespace trm::data {
namespace {

constexpr const char* kPromptReference = "prompt_reference";

std::string JoinTexts(const std::vector<Turn>& turns) {
  std::string out;
  for (size_t i = 0; i < turns.size(); ++i) {
    if (i > 0) out.push_back('\n');
    out += turns[i].text;
  }
  return out;
}

const std::string& TextField(const nlohmann::json& record, const char* key, const std::string& where) {
  auto it = record.find(key);
  if (it == record.end()) {
    InvalidArgument(where + ": missing field \"" + key + "\" (expected {\"prompt\": TEXT, \"reference\": TEXT})");
  }
  if (!it->is_string()) InvalidArgument(where + ": field \"" + key + "\": expected a string, got " + it->type_name());
  return it->get_ref<const std::string&>();
}

EvalPrompt FromPromptReference(const nlohmann::json& record, const std::string& where) {
  EvalPrompt p;
  p.where = where;
  p.prompt = TextField(record, "prompt", where);
  p.reference = TextField(record, "reference", where);
  if (p.prompt.empty()) InvalidArgument(where + ": field \"prompt\": expected a non-empty string");
  p.context.push_back({Role::kUser, p.prompt});
  return p;
}

EvalPrompt FromConversation(const nlohmann::json& record, ChatFormat format, const std::string& where) {
  std::vector<Turn> turns;
  internal::ParseRecord(record, format, where, &turns);
  size_t last = turns.size();
  for (size_t i = turns.size(); i-- > 0;) {
    if (turns[i].role == Role::kAssistant) {
      last = i;
      break;
    }
  }
  if (last == turns.size()) InvalidArgument(where + ": expected an assistant turn (the reference), found none");
  if (last == 0) InvalidArgument(where + ": expected a turn before the last assistant turn (the prompt), found none");
  EvalPrompt p;
  p.where = where;
  p.reference = turns[last].text;
  turns.resize(last);
  p.prompt = JoinTexts(turns);
  p.context = std::move(turns);
  return p;
}

}  // namespace

EvalPromptFile ReadEvalPrompts(const std::string& path) {
  internal::JsonRecordReader reader(path);
  EvalPromptFile file;
  ChatFormat format = ChatFormat::kAuto;
  nlohmann::json record;
  while (reader.Next(&record)) {
    const std::string where = path + ":" + std::to_string(reader.record_line());
    if (file.format.empty()) {
      format = internal::DetectFormat(record);
      if (record.contains("prompt")) {
        file.format = kPromptReference;
      } else if (format != ChatFormat::kAuto) {
        file.format = ChatFormatName(format);
      } else {
        InvalidArgument(where + ": cannot tell the format: expected {\"prompt\": ..., \"reference\": ...} or a "
                        "conversation with a field \"conversations\", \"messages\" or \"instruction\"");
      }
    }
    file.prompts.push_back(file.format == kPromptReference ? FromPromptReference(record, where)
                                                            : FromConversation(record, format, where));
  }
  if (file.prompts.empty()) InvalidArgument(path + ": no prompts (expected one JSON object a line)");
  return file;
}

}  // namespace trm::data
