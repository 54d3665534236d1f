// trm-bench retention: how the coordinator's database grows with a job's steps, with retention
// off (--metrics-max-points 0 --max-log-lines 0: everything kept) and on (the defaults: 10,000
// points, 100,000 log lines a job). A job of --steps steps writes what a worker's reports write for each step: its
// metrics point and metrics event, a log line every 10 steps, a checkpoint record every 1,000
// and an evaluation every 5,000, in transactions of 1,000 steps (a report's worth). Printed:
// the database's bytes (with its WAL) after each power of ten, and per 1,000 steps.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "bench.h"
#include "step_points.h"
#include "trm/coordinator/store.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace trm::bench {
namespace {

uint64_t Bytes(const fs::path& db) {
  uint64_t n = 0;
  std::error_code ec;
  for (const char* suffix : {"", "-wal"}) {
    const auto s = fs::file_size(db.string() + suffix, ec);
    if (!ec) n += s;
  }
  return n;
}

nlohmann::json Fill(const fs::path& dir, int64_t steps, int64_t max_points) {
  fs::remove_all(dir);
  fs::create_directories(dir);
  const fs::path db = dir / "coordinator.db";
  const std::string job = "job-000001";
  // Off: every point and log line; on: the coordinator's defaults (with --max-points).
  const coordinator::MetricRetention keep{max_points, 64, max_points > 0 ? 100000 : 0};
  nlohmann::json sizes = nlohmann::json::object();
  uint64_t seq = 0;
  const auto t0 = Clock::now();
  {
    coordinator::Store store(db.string());
    int64_t next_mark = 1000;
    for (int64_t step = 1; step <= steps;) {
      coordinator::Store::Transaction tx(&store);
      for (int64_t end = std::min(steps, step + 999); step <= end; ++step) {
        v1::JobEvent e;
        e.set_seq(++seq);
        auto* m = e.mutable_metrics();
        FillStepPoint(step, steps, m);
        store.AppendEvent(job, e);
        store.AppendMetrics(job, *m, seq, keep);
        if (step % 10 == 0) {
          v1::JobEvent l;
          l.set_seq(++seq);
          l.mutable_log()->set_text("step " + std::to_string(step) + "/" + std::to_string(steps) + " lm_loss 1.234");
          store.AppendEvent(job, l, keep);
        }
        if (step % 1000 == 0) {
          v1::CheckpointRecord c;
          c.mutable_info()->set_name("step_" + std::to_string(step));
          c.mutable_info()->set_step(step);
          store.PutCheckpoint(job, c);
          if (step > 3000) store.DeleteCheckpoint(job, "step_" + std::to_string(step - 3000));  // --keep-last 3
          v1::JobEvent ce;
          ce.set_seq(++seq);
          *ce.mutable_checkpoint() = c.info();
          store.AppendEvent(job, ce);
        }
        if (step % 5000 == 0) {
          v1::StepMetrics ev;
          ev.set_step(step);
          ev.set_eval(true);
          (*ev.mutable_values())["eval_lm_loss"] = 2.0;
          v1::JobEvent ee;
          ee.set_seq(++seq);
          *ee.mutable_metrics() = ev;
          store.AppendEvent(job, ee);
          store.AppendMetrics(job, ev, seq, keep);
        }
      }
      tx.Commit();
      if (step - 1 == next_mark) {
        sizes[std::to_string(next_mark)] = Bytes(db);
        next_mark *= 10;
      }
    }
  }  // closed: the WAL is checkpointed into the file
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  const uint64_t total = Bytes(db);
  std::fprintf(stderr, "max_points %lld (max log lines %lld): %lld steps in %.1f s, %.1f MB (%.0f bytes per 1,000 steps)\n",
               static_cast<long long>(max_points), static_cast<long long>(keep.max_log_lines),
               static_cast<long long>(steps), s, total / 1e6,
               static_cast<double>(total) * 1000.0 / static_cast<double>(steps));
  return {{"max_points", max_points},
          {"bytes", total},
          {"bytes_per_1000_steps", static_cast<double>(total) * 1000.0 / static_cast<double>(steps)},
          {"bytes_after_steps", sizes},
          {"seconds", s}};
}

}  // namespace

int RunRetention(const std::vector<std::string>& args) {
  CheckFlags(args, {"steps", "max-points"});
  const int64_t steps = std::stoll(FlagValue(args, "steps", "1000000"));
  const int64_t max_points = std::stoll(FlagValue(args, "max-points", "10000"));
  const fs::path root = fs::temp_directory_path() / ("trm_retention_bench_" + std::to_string(::getpid()));
  nlohmann::json out = {{"bench", "retention"}, {"steps", steps}};
  out["before"] = Fill(root / "before", steps, 0);
  out["after"] = Fill(root / "after", steps, max_points);
  fs::remove_all(root);
  std::printf("%s\n", out.dump().c_str());
  return 0;
}

}  // namespace trm::bench
