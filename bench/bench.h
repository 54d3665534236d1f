// trm-bench: one binary, one subcommand per benchmark, each printing exactly one JSON line on
// stdout (diagnostics go to stderr). To add a benchmark: write bench/<name>_bench.cpp defining a
// BenchFn, declare it here, list it in kBenchmarks (bench_main.cpp) and in bench/CMakeLists.txt.
#pragma once

#include <string>
#include <vector>

namespace trm::bench {

// args: the command line after the subcommand. Returns the process exit code; throws trm::Error
// on bad arguments or input.
using BenchFn = int (*)(const std::vector<std::string>& args);

int RunTokenize(const std::vector<std::string>& args);
int RunTrain(const std::vector<std::string>& args);
int RunGenerate(const std::vector<std::string>& args);
int RunAllreduce(const std::vector<std::string>& args);
int RunControlPlane(const std::vector<std::string>& args);
int RunEval(const std::vector<std::string>& args);
int RunDashboard(const std::vector<std::string>& args);
int RunRetention(const std::vector<std::string>& args);
int RunGemm(const std::vector<std::string>& args);

// Shared helpers for the subcommands.
// "--name value" / "--name=value" lookup; `fallback` when absent.
std::string FlagValue(const std::vector<std::string>& args, const std::string& name,
                      const std::string& fallback);
// Rejects any "--x" not in `known`, so a typo is not silently ignored.
void CheckFlags(const std::vector<std::string>& args, const std::vector<std::string>& known);

}  // namespace trm::bench
