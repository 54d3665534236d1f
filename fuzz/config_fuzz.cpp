// Fuzz target: the configuration path of trm-train / trmctl / the coordinator: YAML text ->
// trm::YamlToJson, command-line overrides -> trm::ApplyOverrides, then the typed readers
// trm::worker::TrainConfig::FromJson and trm::model::ArchConfig::FromJson.
// Input: YAML text, then a line "#overrides", then one override a line (key=value, +key=value,
// ~key). Without that line the whole input is YAML.
// Promise under test (yaml_config.h, config.h, train_config.h): bad YAML, overrides or values are
// trm::Error(kInvalidArgument) naming the key, never a crash; an accepted config has usable
// derived values (head_dim, mlp_intermediate) and round-trips through ToJson / FromJson.
#include <cstdint>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "trm/common/yaml_config.h"
#include "trm/model/config.h"
#include "trm/worker/train_config.h"

namespace {

using nlohmann::json;

void CheckArch(const json& arch) {
  trm::model::ArchConfig a;
  try {
    a = trm::model::ArchConfig::FromJson(arch, "arch");
  } catch (const trm::Error& e) {
    trm::fuzz::ExpectedError(e);
    FUZZ_CHECK(e.code() == trm::Code::kInvalidArgument);
    return;
  }
  FUZZ_CHECK(a.head_dim() > 0);
  FUZZ_CHECK(a.mlp_intermediate() > 0 && a.mlp_intermediate() % 256 == 0);
  const json j = a.ToJson();
  const trm::model::ArchConfig b = trm::model::ArchConfig::FromJson(j, "arch");
  FUZZ_CHECK(b.ToJson() == j);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  static const std::string kMarker = "\n#overrides\n";
  const size_t cut = input.find(kMarker);
  const std::string yaml = input.substr(0, cut);
  std::vector<std::string> overrides;
  if (cut != std::string::npos) {
    size_t start = cut + kMarker.size();
    while (start <= input.size()) {
      size_t nl = input.find('\n', start);
      if (nl == std::string::npos) nl = input.size();
      if (nl > start) overrides.push_back(input.substr(start, nl - start));
      start = nl + 1;
    }
  }
  json config;
  try {
    config = trm::YamlToJson(yaml, "fuzz.yaml");
    trm::ApplyOverrides(&config, overrides);
  } catch (const trm::Error& e) {
    trm::fuzz::ExpectedError(e);
    FUZZ_CHECK(e.code() == trm::Code::kInvalidArgument);
    return 0;
  }
  try {
    const trm::worker::TrainConfig c = trm::worker::TrainConfig::FromJson(config, "fuzz");
    FUZZ_CHECK(!c.data_paths.empty() && c.global_batch_size > 0 && c.arch.is_object());
    const trm::worker::TrainConfig d = trm::worker::TrainConfig::FromJson(c.ToJson(), "fuzz");
    json cj = c.ToJson(), dj = d.ToJson();
    cj.erase("arch");  // a verbatim copy of the input; may hold NaN, which never compares equal
    dj.erase("arch");
    FUZZ_CHECK(cj == dj);
  } catch (const trm::Error& e) {
    trm::fuzz::ExpectedError(e);
    FUZZ_CHECK(e.code() == trm::Code::kInvalidArgument);
  }
  // The arch section as the trainer sees it: vocab_size and seq_len come from the dataset.
  const json* arch = &config;
  if (config.is_object() && config.contains("arch")) arch = &config["arch"];
  CheckArch(*arch);
  if (arch->is_object()) {
    json filled = *arch;
    if (!filled.contains("vocab_size")) filled["vocab_size"] = 266;
    if (!filled.contains("seq_len")) filled["seq_len"] = 64;
    CheckArch(filled);
  }
  return 0;
}
