#include "trm/model/parity.h"

#include <gtest/gtest.h>
#include <torch/torch.h>
#include <unistd.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "trm/common/error.h"
#include "trm/model/safetensors.h"
#include "trm/model/tensor_io.h"

namespace trm::model {
namespace {

namespace fs = std::filesystem;

std::vector<std::string> SharedFixtures() {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(fs::path(TRM_SHARED_DIR) / "fixtures" / "trm")) {
    if (e.path().extension() == ".safetensors") out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(ParityTest, EverySharedFixtureMatches) {
  auto fixtures = SharedFixtures();
  ASSERT_GE(fixtures.size(), 3u);
  for (const auto& f : fixtures) {
    ParityReport r = RunParity(f);
    EXPECT_TRUE(r.ok()) << FormatParityReport(r);
    // The groups the issue names are all compared.
    for (const char* g : {"eval.logits", "eval.q_halt_logits", "eval.z_H", "eval.loss", "eval.metrics",
                          "eval.halted", "train.loss", "train.logits", "train.halted", "train.steps",
                          "train.current_inputs", "train.grads", "train.metrics"}) {
      EXPECT_TRUE(r.groups.count(g)) << f << " lacks group " << g;
    }
  }
}

// A fixture with one recorded number changed must fail: the check can fail.
TEST(ParityTest, PerturbedFixtureFails) {
  const std::string src = SharedFixtures().front();
  SafetensorsFile f = SafetensorsFile::Open(src);
  std::vector<std::pair<std::string, at::Tensor>> tensors;
  for (const auto& n : f.Names()) {
    at::Tensor t = LoadTensor(f, n);
    if (n == "train.step1.grad.model.inner.lm_head.weight") t = t * 1.001;  // 1e-3 relative
    if (n == "eval.step1.halted") t = t.logical_not();
    tensors.emplace_back(n, t);
  }
  const std::string path = (fs::temp_directory_path() / ("perturbed_" + std::to_string(::getpid()) + ".safetensors")).string();
  SaveTensors(path, tensors, f.metadata());
  ParityReport r = RunParity(path);
  fs::remove(path);
  EXPECT_FALSE(r.ok());
  EXPECT_GT(r.groups.at("train.grads").worst, 5e-4);
  EXPECT_EQ(r.groups.at("eval.halted").worst, 1.0);
  EXPECT_LE(r.groups.at("eval.logits").worst, 1e-4);
}

TEST(ParityTest, FixtureWithoutMetadataIsAClearError) {
  const std::string path = (fs::temp_directory_path() / ("nometa_" + std::to_string(::getpid()) + ".safetensors")).string();
  SaveTensors(path, {{"x", torch::zeros({1})}});
  try {
    RunParity(path);
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("__metadata__ has no 'arch'"), std::string::npos) << e.what();
  }
  fs::remove(path);
}

}  // namespace
}  // namespace trm::model
