// The submit request: the composed config as JSON text, the overrides verbatim, the spec fields.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "trm/cli/commands.h"
#include "trm/common/yaml_config.h"

namespace fs = std::filesystem;

namespace trm::cli {
namespace {

const std::string kConfigDir = std::string(TRM_SOURCE_DIR) + "/configs";

TEST(CliSubmit, ComposesConfigNameAndSendsOverridesVerbatim) {
  SubmitOptions o;
  o.config_name = "cfg_tiny";
  o.config_dir = kConfigDir;
  o.dataset = "example-chat";
  o.world_size = 2;
  o.priority = 5;
  o.max_restarts = 3;
  o.overrides = {"global_batch_size=4", "arch.H_cycles=3", "data_paths=[a,b]"};
  const v1::SubmitJobRequest req = BuildSubmitRequest(o);
  const v1::JobSpec& s = req.spec();
  EXPECT_EQ(s.config_name(), "cfg_tiny");
  EXPECT_EQ(s.name(), "cfg_tiny");
  EXPECT_EQ(s.dataset(), "example-chat");
  EXPECT_TRUE(s.data_path().empty());
  EXPECT_EQ(s.world_size(), 2);
  EXPECT_EQ(s.priority(), 5);
  EXPECT_EQ(s.max_restarts(), 3);
  ASSERT_EQ(s.overrides_size(), 3);
  EXPECT_EQ(s.overrides(1), "arch.H_cycles=3");
  EXPECT_EQ(s.overrides(2), "data_paths=[a,b]");
  // config_yaml is the composed tree (defaults pulled in), without the overrides applied: the
  // coordinator applies them. Parsing it as YAML gives back the same tree.
  const nlohmann::json sent = YamlToJson(s.config_yaml(), "config_yaml");
  EXPECT_EQ(sent, LoadComposedConfig(kConfigDir, "cfg_tiny"));
  EXPECT_EQ(sent.at("global_batch_size"), 8);
  EXPECT_EQ(sent.at("arch").at("hidden_size"), 128);
  EXPECT_FALSE(sent.contains("defaults"));
}

TEST(CliSubmit, ConfigFileIsSentAsWritten) {
  const fs::path dir = fs::temp_directory_path() / ("trm_cli_submit_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  // A self-contained config: the composed tiny config written out.
  const std::string text = LoadComposedConfig(kConfigDir, "cfg_tiny").dump(1) + "\n# a comment\n";
  const fs::path file = dir / "my_run.yaml";
  std::ofstream(file) << text;
  SubmitOptions o;
  o.config_file = file.string();
  o.name = "exp-1";
  o.data_path = "/data/x";
  const v1::SubmitJobRequest req = BuildSubmitRequest(o);
  EXPECT_EQ(req.spec().config_yaml(), text);
  EXPECT_EQ(req.spec().config_name(), "my_run");
  EXPECT_EQ(req.spec().name(), "exp-1");
  EXPECT_EQ(req.spec().data_path(), "/data/x");

  // A file with a defaults: list cannot be composed on the coordinator; say how to send it.
  std::ofstream(dir / "with_defaults.yaml") << "defaults:\n  - arch: trm_tiny\n  - _self_\nlr: 1.0\n";
  o.config_file = (dir / "with_defaults.yaml").string();
  try {
    BuildSubmitRequest(o);
    ADD_FAILURE() << "expected a UsageError";
  } catch (const UsageError& e) {
    EXPECT_NE(std::string(e.what()).find("--config-name with_defaults"), std::string::npos) << e.what();
  }
  fs::remove_all(dir);
}

TEST(CliSubmit, BadOverridesFailLocally) {
  SubmitOptions o;
  o.config_name = "cfg_tiny";
  o.config_dir = kConfigDir;
  o.overrides = {"global_batch_size=lots"};
  EXPECT_THROW(BuildSubmitRequest(o), UsageError);
  o.overrides = {"no_such_key=1"};
  EXPECT_THROW(BuildSubmitRequest(o), UsageError);
  o.overrides = {"+no_such_key=1"};
  EXPECT_THROW(BuildSubmitRequest(o), UsageError);
}

}  // namespace
}  // namespace trm::cli
