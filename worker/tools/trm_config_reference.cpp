// Prints the config keys' reference (docs/config-reference.md's tables) from the tables the
// config readers and the coordinator's submission checks use (config_keys.h).
#include <iostream>

#include "trm/model/arch_keys.h"
#include "trm/worker/train_config.h"

int main() {
  using namespace trm;
  nlohmann::json arch_defaults = model::ArchConfig().ToJson();
  arch_defaults["loss_type"] = arch_defaults["loss"]["loss_type"];
  arch_defaults.erase("loss");
  std::cout << "## Training keys\n\n"
               "The top level of a config (`configs/cfg_*.yaml`), or `key=value` on the command line.\n\n"
            << ConfigKeysMarkdown(worker::TrainConfigKeys(), worker::TrainConfig().ToJson())
            << "\n## Model keys (`arch:`)\n\n"
               "The `arch:` section (`configs/arch/*.yaml`), or `arch.key=value` on the command line.\n\n"
            << ConfigKeysMarkdown(model::ArchConfigKeys(), arch_defaults);
  return 0;
}
