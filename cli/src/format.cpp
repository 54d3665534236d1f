#include "format.h"

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <map>

#include "trm/cli/cli.h"

namespace trm::cli {

void Table::Print(std::ostream& out) const {
  std::vector<size_t> width(headers_.size(), 0);
  auto measure = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) width[i] = std::max(width[i], row[i].size());
  };
  measure(headers_);
  for (const auto& r : rows_) measure(r);
  auto print = [&](const std::vector<std::string>& row) {
    for (size_t i = 0; i < row.size() && i < width.size(); ++i) {
      out << row[i];
      if (i + 1 < row.size()) out << std::string(width[i] - row[i].size() + 2, ' ');
    }
    out << '\n';
  };
  print(headers_);
  for (const auto& r : rows_) print(r);
}

int64_t NowUnixMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string FormatBytes(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) std::snprintf(buf, sizeof buf, "%llu B", static_cast<unsigned long long>(bytes));
  else std::snprintf(buf, sizeof buf, "%.1f %s", v, kUnits[u]);
  return buf;
}

std::string FormatAge(int64_t unix_ms, int64_t now_ms) {
  if (unix_ms <= 0) return "-";
  const int64_t s = std::max<int64_t>(0, (now_ms - unix_ms) / 1000);
  if (s < 120) return std::to_string(s) + "s";
  if (s < 7200) return std::to_string(s / 60) + "m";
  if (s < 172800) return std::to_string(s / 3600) + "h";
  return std::to_string(s / 86400) + "d";
}

std::string FormatDuration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e9) return "?";
  const int64_t s = static_cast<int64_t>(seconds + 0.5);
  char buf[32];
  if (s < 60) std::snprintf(buf, sizeof buf, "%llds", static_cast<long long>(s));
  else if (s < 3600) std::snprintf(buf, sizeof buf, "%lldm%02llds", static_cast<long long>(s / 60), static_cast<long long>(s % 60));
  else std::snprintf(buf, sizeof buf, "%lldh%02lldm", static_cast<long long>(s / 3600), static_cast<long long>(s / 60 % 60));
  return buf;
}

std::string FormatNumber(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.4g", v);
  return buf;
}

namespace {
std::string Strftime(int64_t unix_ms, const char* format, bool utc) {
  const std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  if (utc) gmtime_r(&t, &tm);
  else localtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, format, &tm);
  return buf;
}
}  // namespace

std::string FormatTime(int64_t unix_ms) { return Strftime(unix_ms, "%H:%M:%S", false); }
std::string FormatUtc(int64_t unix_ms) { return Strftime(unix_ms, "%Y-%m-%dT%H:%M:%SZ", true); }

std::string CompactMetrics(const google::protobuf::Map<std::string, double>& metrics) {
  // Map iteration order is unspecified; sort so the output is stable.
  std::map<std::string, double> sorted(metrics.begin(), metrics.end());
  std::string s;
  for (const auto& [k, v] : sorted) {
    if (!s.empty()) s += ' ';
    s += k + "=" + FormatNumber(v);
  }
  return s.empty() ? "-" : s;
}

std::string EvalEntries(const v1::CheckpointInfo& checkpoint) {
  // The metrics a reader compares checkpoints by; steps, count and the Q-halt ones are in --json.
  static const char* const kHeadline[] = {"lm_loss", "accuracy", "exact_accuracy", "token_loss", "perplexity",
                                          "exact_match", "f1", "mean_length"};
  std::string s;
  for (const auto& r : checkpoint.evals()) {
    const std::string label = "eval[" + r.dataset() + (r.split() == "test" ? "" : "/" + r.split()) + "]:";
    for (const char* m : kHeadline) {
      auto it = r.metrics().find(m);
      if (it == r.metrics().end()) continue;
      if (!s.empty()) s += ' ';
      s += label + m + "=" + FormatNumber(it->second);
    }
  }
  return s;
}

std::string StateName(v1::JobState state) {
  switch (state) {
    case v1::JOB_QUEUED: return "queued";
    case v1::JOB_RUNNING: return "running";
    case v1::JOB_SUCCEEDED: return "succeeded";
    case v1::JOB_FAILED: return "failed";
    case v1::JOB_CANCELLED: return "cancelled";
    default: return "unspecified";
  }
}

std::vector<std::string> CommaList(const std::vector<std::string>& values, const std::string& flag) {
  std::vector<std::string> out;
  for (const auto& v : values) {
    size_t start = 0;
    while (start <= v.size()) {
      size_t end = v.find(',', start);
      if (end == std::string::npos) end = v.size();
      if (end == start) throw UsageError(flag + ": expected names separated by commas, got '" + v + "'");
      out.push_back(v.substr(start, end - start));
      start = end + 1;
    }
  }
  return out;
}

v1::JobState ParseState(const std::string& text) {
  std::string t;
  for (char c : text) t += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (t.rfind("job_", 0) == 0) t = t.substr(4);
  for (auto s : {v1::JOB_QUEUED, v1::JOB_RUNNING, v1::JOB_SUCCEEDED, v1::JOB_FAILED, v1::JOB_CANCELLED})
    if (t == StateName(s)) return s;
  throw UsageError("unknown job state '" + text + "': expected queued, running, succeeded, failed or cancelled");
}

bool IsTerminal(v1::JobState state) {
  return state == v1::JOB_SUCCEEDED || state == v1::JOB_FAILED || state == v1::JOB_CANCELLED;
}

}  // namespace trm::cli
