// trm-coordinator's command line, parsed without starting a process.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "trm/common/error.h"
#include "trm/coordinator/service_main.h"

namespace trm::coordinator {
namespace {

// The message of the kInvalidArgument that parsing `args` throws ("" when it parses).
std::string Rejection(const std::vector<std::string>& args) {
  try {
    ParseCommandLine(args);
    return "";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kInvalidArgument) << e.what();
    return e.what();
  }
}

TEST(CommandLineTest, Defaults) {
  const CommandLine cl = ParseCommandLine({});
  EXPECT_FALSE(cl.standalone);
  EXPECT_FALSE(cl.help);
  EXPECT_EQ(cl.cpu_slots, 2);
  EXPECT_EQ(cl.server.coordinator.data_dir, "trm-coordinator");
  EXPECT_FALSE(cl.server.coordinator.config_dir.empty());  // the installed configs
}

TEST(CommandLineTest, FlagsReachTheirOptions) {
  const CommandLine cl =
      ParseCommandLine({"--listen", "0.0.0.0:7", "--data-dir", "svc", "--heartbeat-timeout-s", "3", "--hang-timeout-s",
                        "20", "--hang-budget-s", "data=60,allreduce=30", "--keep-last", "4", "--keep-best",
                        "eval_lm_loss", "--standalone", "--cpu-slots", "3", "--port-file", "p", "--insecure"});
  EXPECT_EQ(cl.server.listen, "0.0.0.0:7");
  EXPECT_EQ(cl.server.coordinator.data_dir, "svc");
  EXPECT_EQ(cl.server.coordinator.heartbeat_timeout_ms, 3000);
  EXPECT_EQ(cl.server.coordinator.hang_timeout_ms, 20000);
  EXPECT_EQ(cl.server.coordinator.phase_budget_ms.at("data"), 60000);
  EXPECT_EQ(cl.server.coordinator.phase_budget_ms.at("allreduce"), 30000);
  EXPECT_EQ(cl.server.coordinator.keep_last_checkpoints, 4);
  EXPECT_EQ(cl.server.coordinator.keep_best_metric, "eval_lm_loss");
  EXPECT_TRUE(cl.standalone);
  EXPECT_EQ(cl.cpu_slots, 3);
  EXPECT_EQ(cl.port_file, "p");
  EXPECT_TRUE(cl.server.insecure);
  EXPECT_TRUE(ParseCommandLine({"--help"}).help);
}

TEST(CommandLineTest, BadValuesNameTheFlag) {
  EXPECT_NE(Rejection({"--cpu-slots", "-1"}).find("--cpu-slots '-1'"), std::string::npos);
  EXPECT_NE(Rejection({"--keep-last", "two"}).find("--keep-last 'two'"), std::string::npos);
  EXPECT_NE(Rejection({"--hang-budget-s", "warmup=5"}).find("PHASE one of"), std::string::npos);
  EXPECT_NE(Rejection({"--hang-budget-s", "data=0"}).find("positive number of seconds"), std::string::npos);
  EXPECT_NE(Rejection({"--listen"}).find("--listen needs a value"), std::string::npos);
  EXPECT_NE(Rejection({"--frobnicate"}).find("unknown option --frobnicate"), std::string::npos);
  EXPECT_NE(Rejection({"--require-worker-cert"}).find("needs --tls-client-ca"), std::string::npos);
}

TEST(CommandLineTest, WorkerSecretIsReadAndMustBeLongEnough) {
  const std::string path = (std::filesystem::temp_directory_path() / ("trm_secret_" + std::to_string(::getpid()))).string();
  { std::ofstream(path) << "0123456789abcdef\n"; }
  EXPECT_EQ(ParseCommandLine({"--worker-secret-file", path}).server.auth.worker_secret, "0123456789abcdef");
  { std::ofstream(path) << "short\n"; }
  EXPECT_NE(Rejection({"--worker-secret-file", path}).find("16+ characters"), std::string::npos);
  std::filesystem::remove(path);
}

}  // namespace
}  // namespace trm::coordinator
