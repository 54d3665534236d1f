// Text formatting shared by trmctl's commands: aligned tables, sizes, ages, durations, states.
#pragma once

#include <google/protobuf/map.h>

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "trm/v1/trm.pb.h"

namespace trm::cli {

class Table {
 public:
  explicit Table(std::vector<std::string> headers) : headers_(std::move(headers)) {}
  void AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  // Columns padded to their widest cell; the last column is not padded.
  void Print(std::ostream& out) const;

 private:
  std::vector<std::string> headers_;
  std::vector<std::vector<std::string>> rows_;
};

int64_t NowUnixMs();
std::string FormatBytes(uint64_t bytes);                // "12.3 MiB"
std::string FormatAge(int64_t unix_ms, int64_t now_ms);  // "5s", "3m", "2h", "4d"; "-" when unset
std::string FormatDuration(double seconds);             // "45s", "3m12s", "1h02m"
std::string FormatNumber(double v);                     // %.4g
std::string FormatTime(int64_t unix_ms);                // local HH:MM:SS
std::string FormatUtc(int64_t unix_ms);                 // 2026-12-01T08:00:00Z
// "eval_lm_loss=2.31 lm_loss=2.2", sorted by key.
std::string CompactMetrics(const google::protobuf::Map<std::string, double>& metrics);

// A checkpoint's evaluation results: "eval[DATASET]:lm_loss=2.31 eval[DATASET]:accuracy=0.4 ...",
// the headline metrics of each result (every one with trmctl checkpoints --json).
std::string EvalEntries(const v1::CheckpointInfo& checkpoint);

std::string StateName(v1::JobState state);  // "running"

// "a,b" -> {"a", "b"}, and every value of a repeated flag (--keys a --keys b) likewise. An empty
// name ("a,,b", "") is a UsageError naming `flag`.
std::vector<std::string> CommaList(const std::vector<std::string>& values, const std::string& flag);
// "running" or "RUNNING" or "JOB_RUNNING"; throws UsageError naming the accepted values.
v1::JobState ParseState(const std::string& text);
bool IsTerminal(v1::JobState state);

}  // namespace trm::cli
