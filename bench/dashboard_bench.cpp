// trm-bench dashboard: how long the job page's data takes for a long job. A job with --steps
// (default 100,000) logged steps, each a metrics point, its metrics event and a log line, as a
// worker reports them; the page's three calls (the job with its
// checkpoints and states, its downsampled metrics, the log tail) are timed through HttpApi, the
// code the HTTP server hands each request to (inside trm-bench civetweb cannot start its worker
// threads next to LibTorch's, so no socket), --reps times each (median and worst), with the
// bytes of each answer. The bar (issue 20): the page's data in under a second.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "bench.h"
#include "step_points.h"
#include "http_api.h"
#include "trm/common/error.h"
#include "trm/coordinator/coordinator.h"
#include "trm/coordinator/store.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace trm::bench {
namespace {

}  // namespace

int RunDashboard(const std::vector<std::string>& args) {
  CheckFlags(args, {"steps", "reps"});
  const long steps = std::stol(FlagValue(args, "steps", "100000"));
  const int reps = std::stoi(FlagValue(args, "reps", "5"));
  const fs::path root = fs::temp_directory_path() / ("trm_dashboard_bench_" + std::to_string(::getpid()));
  fs::remove_all(root);
  coordinator::CoordinatorOptions o;
  o.data_dir = (root / "state").string();
  o.config_dir = std::string(TRM_BENCH_SOURCE_DIR) + "/configs";
  std::string job;
  {
    coordinator::Coordinator c(o);
    v1::RegisterRequest r;
    r.set_worker_id("w1");
    r.set_host("127.0.0.1");
    r.set_slots(1);
    r.set_device_kind("cpu");
    c.Register(r);
    v1::JobSpec s;
    s.set_config_name("cfg_tiny");
    s.set_data_path("/data/chat");
    s.set_world_size(1);
    job = c.SubmitJob(s);
  }
  const auto t_fill = Clock::now();
  {
    // Straight into the store: the worker's event path is rate-limited to 2,000 a second.
    coordinator::Store store((fs::path(o.data_dir) / "coordinator.db").string());
    coordinator::Store::Transaction tx(&store);
    for (long i = 1; i <= steps; ++i) {
      v1::StepMetrics m;
      FillStepPoint(i, steps, &m);
      store.AppendMetrics(job, m);
      // The events a worker's report writes alongside (the job page reads them for its states
      // and its log tail).
      v1::JobEvent e;
      e.set_seq(static_cast<uint64_t>(1000 + 2 * i));
      *e.mutable_metrics() = m;
      store.AppendEvent(job, e);
      v1::JobEvent l;
      l.set_seq(static_cast<uint64_t>(1001 + 2 * i));
      l.mutable_log()->set_text("step " + std::to_string(i) + "/" + std::to_string(steps) + " lm_loss 1.234");
      store.AppendEvent(job, l);
    }
    tx.Commit();
  }
  std::fprintf(stderr, "filled %ld metrics points in %.1f s\n", steps,
               std::chrono::duration<double>(Clock::now() - t_fill).count());
  coordinator::Coordinator c(o);
  coordinator::Authorizer auth{coordinator::AuthConfig{}};
  coordinator::HttpApi api(&c, &auth);
  nlohmann::json out = {{"bench", "dashboard"}, {"steps", steps}, {"reps", reps}};
  double page_worst = 0;
  std::vector<double> page(static_cast<size_t>(reps), 0.0);
  // The page's three calls, as it makes them.
  struct Call {
    const char* name;
    std::string path;
    std::map<std::string, std::string> query;
  };
  const std::vector<Call> calls = {{"job", "/api/jobs/" + job, {}},
                                   {"metrics", "/api/jobs/" + job + "/metrics", {}},
                                   {"logs", "/api/jobs/" + job + "/logs", {{"lines", "300"}}},
                                   // A running job's page after its first load: the metrics events since
                                   // (here the last two steps'), not the whole series again.
                                   {"poll_events", "/api/jobs/" + job + "/events",
                                    {{"after", std::to_string(1000 + 2 * steps - 4)}, {"limit", "5000"}}}};
  for (const Call& call : calls) {
    const bool on_load = std::string(call.name) != "poll_events";
    coordinator::HttpRequest req;
    req.method = "GET";
    req.host = "127.0.0.1";
    req.path = call.path;
    req.query = call.query;
    std::vector<double> t;
    size_t bytes = 0;
    for (int i = 0; i < reps; ++i) {
      const auto t0 = Clock::now();
      const coordinator::HttpResponse resp = api.Handle(req);
      t.push_back(std::chrono::duration<double, std::milli>(Clock::now() - t0).count());
      if (resp.status != 200) ThrowError(Code::kInternal, call.path + ": " + resp.body.substr(0, 200));
      bytes = resp.body.size();
      if (on_load) page[static_cast<size_t>(i)] += t.back();
    }
    std::sort(t.begin(), t.end());
    out[call.name] = {{"median_ms", t[t.size() / 2]}, {"worst_ms", t.back()}, {"bytes", bytes}};
    std::fprintf(stderr, "%s: median %.1f ms, worst %.1f ms, %zu bytes\n", call.name, t[t.size() / 2], t.back(), bytes);
  }
  for (double p : page) page_worst = std::max(page_worst, p);
  std::sort(page.begin(), page.end());
  out["page_data_median_ms"] = page[page.size() / 2];
  out["page_data_worst_ms"] = page_worst;
  std::printf("%s\n", out.dump().c_str());
  fs::remove_all(root);
  return 0;
}

}  // namespace trm::bench
