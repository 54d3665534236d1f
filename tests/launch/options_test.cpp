#include "trm/launch/options.h"

#include <gtest/gtest.h>

#include "trm/common/error.h"

namespace trm::launch {
namespace {

// The message of the kInvalidArgument that parsing `args` throws ("" when it does not throw).
std::string ParseError(const std::vector<std::string>& args) {
  try {
    ParseLaunchArgs(args);
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kInvalidArgument);
    return e.what();
  }
  return "";
}

TEST(LaunchOptions, DefaultsAreTorchrunsSingleNode) {
  const LaunchOptions o = ParseLaunchArgs({"trm-train", "--config-name", "cfg_chat"});
  EXPECT_EQ(o.nnodes, 1);
  EXPECT_EQ(o.nproc_per_node, 1);
  EXPECT_EQ(o.node_rank, 0);
  EXPECT_EQ(o.max_restarts, 0);
  EXPECT_EQ(o.rdzv_id, "none");
  EXPECT_TRUE(o.rdzv_host.empty());
  EXPECT_DOUBLE_EQ(o.grace_period_s, 5);
  EXPECT_DOUBLE_EQ(o.rdzv_timeout_s, 60);
  EXPECT_EQ(o.program, "trm-train");
  EXPECT_EQ(o.args, (std::vector<std::string>{"--config-name", "cfg_chat"}));
}

TEST(LaunchOptions, ParsesEveryFlagInBothSpellings) {
  const LaunchOptions o = ParseLaunchArgs({"--nnodes", "2", "--nproc_per_node=4", "--node-rank", "1",
                                           "--rdzv-endpoint=host.example:1234", "--rdzv_id", "job7", "--max-restarts",
                                           "3", "--log-dir", "/tmp/logs", "--tee", "--grace-period-s", "0.5",
                                           "--rdzv-timeout-s=7", "--rdzv-backend", "c10d", "prog", "--tee", "x"});
  EXPECT_EQ(o.nnodes, 2);
  EXPECT_EQ(o.nproc_per_node, 4);
  EXPECT_EQ(o.node_rank, 1);
  EXPECT_EQ(o.rdzv_host, "host.example");
  EXPECT_EQ(o.rdzv_port, 1234);
  EXPECT_EQ(o.rdzv_id, "job7");
  EXPECT_EQ(o.max_restarts, 3);
  EXPECT_EQ(o.log_dir, "/tmp/logs");
  EXPECT_TRUE(o.tee);
  EXPECT_DOUBLE_EQ(o.grace_period_s, 0.5);
  EXPECT_DOUBLE_EQ(o.rdzv_timeout_s, 7);
  EXPECT_EQ(o.program, "prog");
  // Options after PROGRAM are PROGRAM's.
  EXPECT_EQ(o.args, (std::vector<std::string>{"--tee", "x"}));
}

TEST(LaunchOptions, EndpointForms) {
  auto ep = [](const std::string& text) {
    const LaunchOptions o = ParseLaunchArgs({"--rdzv-endpoint", text, "p"});
    return o.rdzv_host + " " + std::to_string(o.rdzv_port);
  };
  EXPECT_EQ(ep("127.0.0.1:29500"), "127.0.0.1 29500");
  EXPECT_EQ(ep("node0"), "node0 29400");
  EXPECT_EQ(ep("[::1]:80"), "::1 80");
  EXPECT_NE(ParseError({"--rdzv-endpoint", "host:", "p"}).find("--rdzv-endpoint: expected HOST:PORT"), std::string::npos);
  EXPECT_NE(ParseError({"--rdzv-endpoint", ":12", "p"}).find("empty host"), std::string::npos);
  EXPECT_NE(ParseError({"--rdzv-endpoint", "h:70000", "p"}).find("--rdzv-endpoint: expected a port in [1, 65535]"),
            std::string::npos);
  EXPECT_NE(ParseError({"--rdzv-endpoint", "h:x1", "p"}).find("--rdzv-endpoint"), std::string::npos);
  EXPECT_NE(ParseError({"--rdzv-endpoint", "a:b:c", "p"}).find("IPv6"), std::string::npos);
}

TEST(LaunchOptions, ElasticNodeRange) {
  const LaunchOptions o = ParseLaunchArgs({"--nnodes", "1:3", "--node-rank", "2", "--rdzv-endpoint", "h:1",
                                           "--rdzv-last-call-s", "0.5", "p"});
  EXPECT_EQ(o.min_nnodes, 1);
  EXPECT_EQ(o.nnodes, 3);
  EXPECT_TRUE(o.elastic());
  EXPECT_DOUBLE_EQ(o.rdzv_last_call_s, 0.5);
  const LaunchOptions fixed = ParseLaunchArgs({"--nnodes", "2:2", "--rdzv-endpoint", "h:1", "p"});
  EXPECT_FALSE(fixed.elastic());
  EXPECT_EQ(fixed.nnodes, 2);
  EXPECT_EQ(ParseLaunchArgs({"--nnodes", "2", "--rdzv-endpoint", "h:1", "p"}).min_nnodes, 2);
}

TEST(LaunchOptions, BadInputNamesTheFlag) {
  EXPECT_NE(ParseError({"--bogus", "p"}).find("unknown option '--bogus'"), std::string::npos);
  EXPECT_NE(ParseError({"-x", "p"}).find("unknown option '-x'"), std::string::npos);
  EXPECT_NE(ParseError({}).find("PROGRAM: missing"), std::string::npos);
  EXPECT_NE(ParseError({"--nnodes", "2", "--rdzv-endpoint", "h:1"}).find("PROGRAM: missing"), std::string::npos);
  EXPECT_NE(ParseError({"--nproc-per-node"}).find("--nproc-per-node: missing value"), std::string::npos);
  EXPECT_NE(ParseError({"--nproc-per-node", "two", "p"}).find("--nproc-per-node: expected an integer, got 'two'"),
            std::string::npos);
  EXPECT_NE(ParseError({"--nproc-per-node", "0", "p"}).find("--nproc-per-node: expected an integer in [1,"),
            std::string::npos);
  EXPECT_NE(ParseError({"--max-restarts", "-1", "p"}).find("--max-restarts"), std::string::npos);
  EXPECT_NE(ParseError({"--nnodes", "1:4", "p"}).find("--rdzv-endpoint: required when --nnodes is a range"),
            std::string::npos);
  EXPECT_NE(ParseError({"--nnodes", "3:2", "--rdzv-endpoint", "h:1", "p"}).find("--nnodes: MIN must not exceed MAX"),
            std::string::npos);
  EXPECT_NE(ParseError({"--nnodes", "0:2", "--rdzv-endpoint", "h:1", "p"}).find("--nnodes (MIN of MIN:MAX)"),
            std::string::npos);
  EXPECT_NE(ParseError({"--nnodes", "1:x", "--rdzv-endpoint", "h:1", "p"}).find("--nnodes (MAX of MIN:MAX)"),
            std::string::npos);
  EXPECT_NE(ParseError({"--nnodes", "1:2", "--node-rank", "2", "--rdzv-endpoint", "h:1", "p"})
                .find("--node-rank: expected a value in [0, 1] (--nnodes 1:2), got 2"),
            std::string::npos);
  EXPECT_NE(ParseError({"--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "h:1", "p"})
                .find("--node-rank: expected a value in [0, 1] (--nnodes 2), got 2"),
            std::string::npos);
  EXPECT_NE(ParseError({"--node-rank", "1", "p"}).find("--node-rank"), std::string::npos);
  EXPECT_NE(ParseError({"--nnodes", "2", "p"}).find("--rdzv-endpoint: required when --nnodes > 1"), std::string::npos);
  EXPECT_NE(ParseError({"--standalone", "--nnodes", "2", "--rdzv-endpoint", "h:1", "p"}).find("--standalone"),
            std::string::npos);
  EXPECT_NE(ParseError({"--standalone", "--rdzv-endpoint", "h:1", "p"}).find("--standalone"), std::string::npos);
  EXPECT_NE(ParseError({"--standalone=1", "p"}).find("--standalone: takes no value"), std::string::npos);
  EXPECT_NE(ParseError({"--grace-period-s", "-1", "p"}).find("--grace-period-s: expected a number of seconds"),
            std::string::npos);
  EXPECT_NE(ParseError({"--rdzv-timeout-s", "0", "p"}).find("--rdzv-timeout-s: expected a number of seconds > 0"),
            std::string::npos);
  EXPECT_NE(ParseError({"--rdzv-backend", "etcd", "p"}).find("--rdzv-backend: only 'c10d'"), std::string::npos);
  EXPECT_NE(ParseError({"--rdzv-id", "", "p"}).find("--rdzv-id"), std::string::npos);
}

TEST(LaunchOptions, HelpAndDoubleDash) {
  EXPECT_TRUE(ParseLaunchArgs({"--nproc-per-node", "2", "--help"}).help);
  const LaunchOptions o = ParseLaunchArgs({"--", "--weird-program-name", "a"});
  EXPECT_EQ(o.program, "--weird-program-name");
  EXPECT_EQ(o.args, std::vector<std::string>{"a"});
  EXPECT_NE(LaunchUsage().find("--nproc-per-node"), std::string::npos);
}

}  // namespace
}  // namespace trm::launch
