// trmctl's command line: usage errors are UsageError (exit 2) with a message naming the flag,
// --help never connects, and RPC failures are RpcError (exit 1) carrying the server's message.
#include <gtest/gtest.h>

#include <sstream>

#include "fake_coordinator.h"
#include "trm/cli/cli.h"

namespace trm::cli {
namespace {

struct Result {
  int code = -1;
  std::string out, err, error;
  bool usage_error = false;
};

// Runs trmctl like main does, with a connect function that must not be reached.
Result RunNoServer(std::vector<std::string> args) {
  std::ostringstream out, err;
  Result r;
  const ConnectFn connect = [](const std::string&) -> Stubs {
    ADD_FAILURE() << "connected although the command line was unusable";
    return {};
  };
  try {
    r.code = cli::Run(args, connect, Io{&out, &err, false});
  } catch (const std::exception& e) {
    r.error = e.what();
    r.code = ExitCodeFor(e);
    r.usage_error = dynamic_cast<const UsageError*>(&e) != nullptr;
  }
  r.out = out.str();
  r.err = err.str();
  return r;
}

void ExpectUsageError(const std::vector<std::string>& args, const std::string& needle) {
  const Result r = RunNoServer(args);
  EXPECT_EQ(r.code, 2) << r.error;
  EXPECT_TRUE(r.usage_error);
  EXPECT_NE(r.error.find(needle), std::string::npos) << "message: " << r.error;
}

TEST(CliArgs, UsageErrorsNameTheProblem) {
  ExpectUsageError({}, "missing command");
  ExpectUsageError({"frobnicate"}, "unknown command 'frobnicate'");
  ExpectUsageError({"list", "--bogus"}, "unknown option --bogus");
  ExpectUsageError({"list", "--state"}, "--state needs a value");
  ExpectUsageError({"list", "--state", "sleeping"}, "unknown job state 'sleeping'");
  ExpectUsageError({"status"}, "missing JOB");
  ExpectUsageError({"status", "a", "b"}, "unexpected argument 'b'");
  ExpectUsageError({"status", "--json=yes", "a"}, "--json takes no value");
  ExpectUsageError({"submit", "--config-name", "cfg_tiny", "--world-size", "two"}, "--world-size 'two'");
  ExpectUsageError({"submit", "--config-name", "cfg_tiny", "--world-size", "0"}, "--world-size '0'");
  ExpectUsageError({"submit"}, "exactly one of --config-name");
  ExpectUsageError({"submit", "--config-name", "a", "--config", "b.yaml"}, "exactly one of --config-name");
  ExpectUsageError({"submit", "--config-name", "cfg_tiny", "--dataset", "d", "--data-path", "p"}, "at most one");
  ExpectUsageError({"submit", "--config-name", "cfg_tiny", "lr"}, "'lr': expected key=value");
  ExpectUsageError({"dataset"}, "expected push or list");
  ExpectUsageError({"dataset", "pull"}, "unknown command 'dataset pull'");
  ExpectUsageError({"list", "--timeout-s", "-3"}, "--timeout-s");
}

TEST(CliArgs, LocalProblemsAreUsageErrorsBeforeAnyConnection) {
  ExpectUsageError({"submit", "--config-name", "no_such_config"}, "no_such_config");
  ExpectUsageError({"submit", "--config-name", "cfg_tiny", "learning_rate=1"}, "learning_rate");
  ExpectUsageError({"dataset", "push", "/nonexistent/dir"}, "not a directory");
}

TEST(CliArgs, HelpPrintsUsageWithoutConnecting) {
  for (const std::vector<std::string>& args :
       {std::vector<std::string>{"--help"}, {"help", "pull"}, {"pull", "--help"}, {"watch", "-h"},
        {"dataset", "push", "--help"}, {"dataset", "--help"}}) {
    const Result r = RunNoServer(args);
    EXPECT_EQ(r.code, 0) << args[0] << ": " << r.error;
    EXPECT_NE(r.out.find("usage: trmctl"), std::string::npos) << r.out;
  }
  EXPECT_NE(RunNoServer({"pull", "--help"}).out.find("--select"), std::string::npos);
  EXPECT_NE(RunNoServer({"submit", "--help"}).out.find("--coordinator"), std::string::npos);
}

TEST(CliArgs, FlagFormsAndCoordinatorAddress) {
  testing::FakeServer server;
  std::ostringstream out, err;
  std::string seen_address;
  const ConnectFn connect = [&](const std::string& address) {
    seen_address = address;
    return server.Connect()(server.address());
  };
  // --flag=value form and key=value overrides after the flags.
  EXPECT_EQ(cli::Run({"submit", "--config-name=cfg_tiny", "--coordinator=somewhere:1", "--world-size=2", "seed=3"}, connect,
                Io{&out, &err, false}),
            0);
  EXPECT_EQ(seen_address, "somewhere:1");
  ASSERT_EQ(server.jobs.submits.size(), 1u);
  EXPECT_EQ(server.jobs.submits[0].spec().world_size(), 2);
  // The job id alone on stdout, for JOB=$(trmctl submit ...).
  EXPECT_EQ(out.str(), "job-1\n");
}

TEST(CliArgs, RpcErrorsKeepTheServerMessageAndExit1) {
  testing::FakeServer server;
  std::ostringstream out, err;
  try {
    cli::Run({"status", "nope", "--coordinator", server.address()}, server.Connect(), Io{&out, &err, false});
    FAIL() << "expected an error";
  } catch (const RpcError& e) {
    EXPECT_EQ(e.code(), Code::kNotFound);
    EXPECT_NE(std::string(e.what()).find("job 'nope' not found"), std::string::npos) << e.what();
    EXPECT_EQ(ExitCodeFor(e), 1);
  }
}

TEST(CliArgs, StatusJsonIsTheJob) {
  testing::FakeServer server;
  std::ostringstream out, err;
  ASSERT_EQ(cli::Run({"status", "job-1", "--json", "--coordinator", server.address()}, server.Connect(),
                Io{&out, &err, false}),
            0);
  EXPECT_NE(out.str().find("\"state\": \"JOB_RUNNING\""), std::string::npos) << out.str();
  std::ostringstream human;
  ASSERT_EQ(cli::Run({"status", "job-1", "--coordinator", server.address()}, server.Connect(), Io{&human, &err, false}), 0);
  EXPECT_NE(human.str().find("step:        7/10"), std::string::npos) << human.str();
}

}  // namespace
}  // namespace trm::cli
