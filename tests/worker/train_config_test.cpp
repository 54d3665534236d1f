#include "trm/worker/train_config.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "trm/common/error.h"
#include "trm/common/yaml_config.h"

namespace trm::worker {
namespace {

namespace fs = std::filesystem;
const std::string kConfigs = std::string(TRM_SOURCE_DIR) + "/configs";

std::string ErrorOf(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(TrainConfigTest, ShippedChatConfigComposesArchAndAppliesOverrides) {
  TrainConfig c = LoadTrainConfig(kConfigs, "cfg_chat",
                                  {"data_paths=[data/x]", "global_batch_size=2", "arch.H_cycles=3", "lr=3e-4"});
  EXPECT_EQ(c.data_paths, std::vector<std::string>{"data/x"});
  EXPECT_EQ(c.global_batch_size, 2);
  EXPECT_DOUBLE_EQ(c.lr, 3e-4);
  EXPECT_EQ(c.arch["H_cycles"], 3);
  EXPECT_EQ(c.arch["hidden_size"], 384);
  EXPECT_EQ(c.arch["loss"]["loss_type"], "softmax_cross_entropy");
  EXPECT_EQ(c.beta2, 0.95);
  EXPECT_EQ(c.run_name, "cfg_chat");
  EXPECT_EQ(c.run_dir, "checkpoints/trm/cfg_chat");
  for (const char* name : {"cfg_language", "cfg_tiny"}) {
    TrainConfig o = LoadTrainConfig(kConfigs, name, {});
    EXPECT_FALSE(o.arch.empty()) << name;
  }
  EXPECT_EQ(LoadTrainConfig(kConfigs, "cfg_language", {}).arch["halt_max_steps"], 8);
}

TEST(TrainConfigTest, UnknownKeysAndWrongTypesNameTheKey) {
  EXPECT_NE(ErrorOf([] { LoadTrainConfig(kConfigs, "cfg_chat", {"global_batch_sise=2"}); })
                .find("global_batch_sise: unknown key"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { LoadTrainConfig(kConfigs, "cfg_chat", {"global_batch_size=two"}); })
                .find("global_batch_size: expected an integer"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { LoadTrainConfig(kConfigs, "cfg_chat", {"ema=maybe"}); }).find("ema: expected true or false"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { LoadTrainConfig(kConfigs, "cfg_chat", {"lr_min_ratio=2"}); }).find("lr_min_ratio"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { LoadTrainConfig(kConfigs, "cfg_chat", {"nokey"}); }).find("expected key=value"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { LoadTrainConfig(kConfigs, "cfg_missing", {}); }).find("cfg_missing.yaml: config file not found"),
            std::string::npos);
}

TEST(TrainConfigTest, YamlScalarsAndQuoting) {
  nlohmann::json j = YamlToJson("a: 1\nb: 1.0e-4\nc: True\nd: '12'\ne: null\nf: [x, 2]\ng: rope\nh: -3\n", "t.yaml");
  EXPECT_TRUE(j["a"].is_number_integer());
  EXPECT_DOUBLE_EQ(j["b"].get<double>(), 1e-4);
  EXPECT_EQ(j["c"], true);
  EXPECT_EQ(j["d"], "12");
  EXPECT_TRUE(j["e"].is_null());
  EXPECT_EQ(j["f"][0], "x");
  EXPECT_EQ(j["f"][1], 2);
  EXPECT_EQ(j["g"], "rope");
  EXPECT_EQ(j["h"], -3);
  std::string err = ErrorOf([] { YamlToJson("a: [1, 2\nb: 3\n", "bad.yaml"); });
  EXPECT_NE(err.find("bad.yaml:"), std::string::npos) << err;
  EXPECT_NE(err.find("invalid YAML"), std::string::npos) << err;
}

TEST(TrainConfigTest, DefaultsListOrderAndSelf) {
  fs::path d = fs::temp_directory_path() / ("trm_cfg_" + std::to_string(::getpid()));
  fs::create_directories(d / "arch");
  std::ofstream(d / "arch" / "small.yaml") << "hidden_size: 64\nnum_heads: 4\n";
  // _self_ first: the arch file's values win over the file's own arch section.
  std::ofstream(d / "a.yaml") << "defaults:\n  - _self_\n  - arch: small\narch:\n  hidden_size: 32\n";
  std::ofstream(d / "b.yaml") << "defaults:\n  - arch: small\n  - _self_\narch:\n  hidden_size: 32\n";
  EXPECT_EQ(LoadComposedConfig(d.string(), "a")["arch"]["hidden_size"], 64);
  EXPECT_EQ(LoadComposedConfig(d.string(), "b")["arch"]["hidden_size"], 32);
  EXPECT_EQ(LoadComposedConfig(d.string(), "b")["arch"]["num_heads"], 4);
  std::ofstream(d / "c.yaml") << "defaults:\n  - arch: nope\n";
  EXPECT_NE(ErrorOf([&] { LoadComposedConfig(d.string(), "c"); }).find("nope.yaml: config file not found"),
            std::string::npos);
  fs::remove_all(d);
}

}  // namespace
}  // namespace trm::worker
