#include "trm/coordinator/metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>
#include <sys/statvfs.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <map>
#include <mutex>

#include "trm/common/error.h"

namespace trm::coordinator {

namespace {

// Checkpoint age changes every second with no event to trigger an update, so it is computed
// at scrape time from the recorded commit times.
class CheckpointAge : public prometheus::Collectable {
 public:
  void Set(const std::string& job, int64_t unix_ms) {
    std::lock_guard<std::mutex> l(mu_);
    times_[job] = unix_ms;
  }
  void Erase(const std::string& job) {
    std::lock_guard<std::mutex> l(mu_);
    times_.erase(job);
  }
  std::vector<prometheus::MetricFamily> Collect() const override {
    std::lock_guard<std::mutex> l(mu_);
    prometheus::MetricFamily f;
    f.name = "trm_job_checkpoint_age_seconds";
    f.help = "Seconds since the job's latest checkpoint was committed";
    f.type = prometheus::MetricType::Gauge;
    const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
    for (const auto& [job, ms] : times_) {
      prometheus::ClientMetric m;
      m.label.push_back({"job", job});
      m.gauge.value = now - static_cast<double>(ms) / 1000.0;
      f.metric.push_back(std::move(m));
    }
    return {f};
  }

 private:
  mutable std::mutex mu_;
  std::map<std::string, int64_t> times_;
};

// Gauges whose value depends on the time of the scrape or on the filesystem: each rank's time
// in its phase, the data directory's free space.
class ScrapeTime : public prometheus::Collectable {
 public:
  void SetPhase(const std::string& job, int rank, const std::string& phase, int64_t entered_ms) {
    std::lock_guard<std::mutex> l(mu_);
    if (phase.empty()) {
      phases_.erase({job, rank});
    } else {
      phases_[{job, rank}] = {phase, entered_ms};
    }
  }
  void Clear(const std::string& job) {
    std::lock_guard<std::mutex> l(mu_);
    phases_.erase(phases_.lower_bound({job, INT32_MIN}), phases_.upper_bound({job, INT32_MAX}));
  }
  void WatchDisk(const std::string& path) {
    std::lock_guard<std::mutex> l(mu_);
    disk_ = path;
  }
  std::vector<prometheus::MetricFamily> Collect() const override {
    std::vector<prometheus::MetricFamily> out(1);
    out[0].name = "trm_rank_phase_seconds";
    out[0].help = "Seconds each running rank has been in its current phase (as its worker last reported)";
    out[0].type = prometheus::MetricType::Gauge;
    std::string disk;
    {
      // SetPhase / Clear are called under the coordinator's mutex: only copies under mu_, the
      // statvfs below (a hung disk) runs without it.
      std::lock_guard<std::mutex> l(mu_);
      const double now = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
      for (const auto& [key, v] : phases_) {
        prometheus::ClientMetric m;
        m.label = {{"job", key.first}, {"rank", std::to_string(key.second)}, {"phase", v.first}};
        m.gauge.value = std::max(0.0, now - static_cast<double>(v.second) / 1000.0);
        out[0].metric.push_back(std::move(m));
      }
      disk = disk_;
    }
    struct statvfs st {};
    if (!disk.empty() && ::statvfs(disk.c_str(), &st) == 0) {
      prometheus::MetricFamily free, size;
      free.name = "trm_coordinator_disk_free_bytes";
      free.help = "Bytes free to the coordinator on its data directory's filesystem";
      free.type = prometheus::MetricType::Gauge;
      free.metric.emplace_back().gauge.value = static_cast<double>(st.f_bavail) * static_cast<double>(st.f_frsize);
      size.name = "trm_coordinator_disk_size_bytes";
      size.help = "Size of the coordinator's data directory's filesystem";
      size.type = prometheus::MetricType::Gauge;
      size.metric.emplace_back().gauge.value = static_cast<double>(st.f_blocks) * static_cast<double>(st.f_frsize);
      out.push_back(std::move(free));
      out.push_back(std::move(size));
    }
    return out;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::pair<std::string, int>, std::pair<std::string, int64_t>> phases_;
  std::string disk_;
};

}  // namespace

struct CoordinatorMetrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::shared_ptr<CheckpointAge> checkpoint_age = std::make_shared<CheckpointAge>();
  std::shared_ptr<ScrapeTime> scrape_time = std::make_shared<ScrapeTime>();
  prometheus::Family<prometheus::Gauge>& running =
      prometheus::BuildGauge().Name("trm_job_running").Help("1 while the job runs (an attempt is placed), else 0").Register(*registry);
  prometheus::Family<prometheus::Gauge>& ckpt_step =
      prometheus::BuildGauge().Name("trm_job_checkpoint_step").Help("Step of the job's latest checkpoint (0: none yet)").Register(*registry);
  prometheus::Family<prometheus::Gauge>& ckpt_interval =
      prometheus::BuildGauge().Name("trm_job_checkpoint_interval_steps").Help("The job's checkpoint_interval_steps (0: only at the end)").Register(*registry);
  prometheus::Family<prometheus::Counter>& rpc_errors =
      prometheus::BuildCounter().Name("trm_rpc_errors_total").Help("Coordinator RPCs that ended with a status other than OK").Register(*registry);
  prometheus::Family<prometheus::Gauge>& jobs =
      prometheus::BuildGauge().Name("trm_jobs").Help("Jobs by state").Register(*registry);
  prometheus::Family<prometheus::Gauge>& workers =
      prometheus::BuildGauge().Name("trm_workers").Help("Workers by state").Register(*registry);
  prometheus::Family<prometheus::Gauge>& slots =
      prometheus::BuildGauge().Name("trm_worker_slots").Help("Rank slots (GPUs or CPU slots) of live workers").Register(*registry);
  prometheus::Family<prometheus::Gauge>& step =
      prometheus::BuildGauge().Name("trm_job_step").Help("Latest optimiser step").Register(*registry);
  prometheus::Family<prometheus::Gauge>& total =
      prometheus::BuildGauge().Name("trm_job_total_steps").Help("Steps the job will run").Register(*registry);
  prometheus::Family<prometheus::Gauge>& loss =
      prometheus::BuildGauge().Name("trm_job_loss").Help("Latest training LM loss").Register(*registry);
  prometheus::Family<prometheus::Gauge>& tokens =
      prometheus::BuildGauge().Name("trm_job_tokens_per_second").Help("Training throughput").Register(*registry);
  prometheus::Family<prometheus::Gauge>& act =
      prometheus::BuildGauge().Name("trm_job_act_steps").Help("Mean ACT steps per halted sequence").Register(*registry);
  prometheus::Family<prometheus::Gauge>& restarts =
      prometheus::BuildGauge().Name("trm_job_restarts").Help("Attempts restarted after a failure").Register(*registry);
  prometheus::Family<prometheus::Counter>& preemptions =
      prometheus::BuildCounter().Name("trm_job_preemptions_total").Help("Attempts preempted for a higher-priority job").Register(*registry);
  std::map<std::string, int> preemptions_seen;  // job -> what the counter holds; under eval_mu
  prometheus::Family<prometheus::Gauge>& world_size =
      prometheus::BuildGauge().Name("trm_job_world_size").Help("Ranks of the job's current attempt").Register(*registry);
  prometheus::Family<prometheus::Histogram>& rpc =
      prometheus::BuildHistogram().Name("trm_rpc_seconds").Help("Coordinator RPC handling time").Register(*registry);
  prometheus::Family<prometheus::Gauge>& eval =
      prometheus::BuildGauge()
          .Name("trm_checkpoint_eval")
          .Help("Evaluation run results on stored checkpoints (trm-eval's metrics)")
          .Register(*registry);
  std::mutex eval_mu;  // guards eval_series and preemptions_seen
  std::map<std::pair<std::string, std::string>, std::map<std::string, prometheus::Gauge*>> eval_series;
  std::mutex mu;  // Family::Add is thread-safe; this guards the bucket vector below only
  const prometheus::Histogram::BucketBoundaries buckets{1e-4, 5e-4, 1e-3, 5e-3, 1e-2, 5e-2, 0.1, 0.5, 1, 5};
};

CoordinatorMetrics::CoordinatorMetrics() : impl_(std::make_unique<Impl>()) {}
CoordinatorMetrics::~CoordinatorMetrics() = default;
std::shared_ptr<prometheus::Registry> CoordinatorMetrics::registry() const { return impl_->registry; }

void CoordinatorMetrics::SetJobCounts(const std::map<std::string, int>& by_state) {
  for (const auto& [state, n] : by_state) impl_->jobs.Add({{"state", state}}).Set(n);
}

void CoordinatorMetrics::SetWorkerCounts(int alive, int lost, int slots, int busy) {
  impl_->workers.Add({{"state", "alive"}}).Set(alive);
  impl_->workers.Add({{"state", "lost"}}).Set(lost);
  impl_->slots.Add({{"state", "total"}}).Set(slots);
  impl_->slots.Add({{"state", "busy"}}).Set(busy);
}

void CoordinatorMetrics::SetJobProgress(const std::string& job, int64_t step, int64_t total, double loss,
                                        double tokens_per_s, double act_steps) {
  impl_->step.Add({{"job", job}}).Set(static_cast<double>(step));
  impl_->total.Add({{"job", job}}).Set(static_cast<double>(total));
  impl_->loss.Add({{"job", job}}).Set(loss);
  impl_->tokens.Add({{"job", job}}).Set(tokens_per_s);
  impl_->act.Add({{"job", job}}).Set(act_steps);
}

namespace {
template <class T>
void RemoveSeries(prometheus::Family<T>& f, const prometheus::Labels& labels) {
  if (f.Has(labels)) f.Remove(&f.Add(labels));
}
}  // namespace

void CoordinatorMetrics::ForgetJob(const std::string& job) {
  const prometheus::Labels l{{"job", job}};
  for (auto* f : {&impl_->running, &impl_->ckpt_step, &impl_->ckpt_interval, &impl_->step, &impl_->total, &impl_->loss,
                  &impl_->tokens, &impl_->act, &impl_->restarts, &impl_->world_size})
    RemoveSeries(*f, l);
  {
    std::lock_guard<std::mutex> lock(impl_->eval_mu);
    RemoveSeries(impl_->preemptions, l);
    impl_->preemptions_seen.erase(job);
  }
  impl_->checkpoint_age->Erase(job);
  impl_->scrape_time->Clear(job);
}

void CoordinatorMetrics::SetJobRestarts(const std::string& job, int restarts) {
  impl_->restarts.Add({{"job", job}}).Set(restarts);
}

void CoordinatorMetrics::SetJobPreemptions(const std::string& job, int total) {
  std::lock_guard<std::mutex> l(impl_->eval_mu);
  int& seen = impl_->preemptions_seen[job];
  auto& c = impl_->preemptions.Add({{"job", job}});  // the series exists from 0
  if (total > seen) c.Increment(total - seen);
  seen = std::max(seen, total);
}

void CoordinatorMetrics::SetJobWorldSize(const std::string& job, int ranks) {
  impl_->world_size.Add({{"job", job}}).Set(ranks);
}

void CoordinatorMetrics::SetJobCheckpointTime(const std::string& job, int64_t unix_ms) {
  impl_->checkpoint_age->Set(job, unix_ms);
}

void CoordinatorMetrics::SetCheckpointEval(const std::string& job, const std::string& checkpoint,
                                           const std::string& dataset, const std::string& metric, double value) {
  std::lock_guard<std::mutex> l(impl_->eval_mu);
  auto& g = impl_->eval_series[{job, checkpoint}][dataset + "\n" + metric];
  if (!g) g = &impl_->eval.Add({{"job", job}, {"checkpoint", checkpoint}, {"dataset", dataset}, {"metric", metric}});
  g->Set(value);
}

void CoordinatorMetrics::DropCheckpointEvals(const std::string& job, const std::string& checkpoint) {
  std::lock_guard<std::mutex> l(impl_->eval_mu);
  auto it = impl_->eval_series.find({job, checkpoint});
  if (it == impl_->eval_series.end()) return;
  for (auto& [key, g] : it->second) impl_->eval.Remove(g);
  impl_->eval_series.erase(it);
}

void CoordinatorMetrics::ObserveRpc(const std::string& method, double seconds, const std::string& code) {
  impl_->rpc.Add({{"method", method}}, impl_->buckets).Observe(seconds);
  if (code != "OK") impl_->rpc_errors.Add({{"method", method}, {"code", code}}).Increment();
}

void CoordinatorMetrics::CountRpcError(const std::string& method, const std::string& code) {
  if (code != "OK") impl_->rpc_errors.Add({{"method", method}, {"code", code}}).Increment();
}

void CoordinatorMetrics::SetJobRunning(const std::string& job, bool running) {
  impl_->running.Add({{"job", job}}).Set(running ? 1 : 0);
}

void CoordinatorMetrics::SetJobCheckpointStep(const std::string& job, int64_t step, int64_t interval_steps) {
  impl_->ckpt_step.Add({{"job", job}}).Set(static_cast<double>(step));
  impl_->ckpt_interval.Add({{"job", job}}).Set(static_cast<double>(interval_steps));
}

void CoordinatorMetrics::SetRankPhase(const std::string& job, int rank, const std::string& phase, int64_t entered_unix_ms) {
  impl_->scrape_time->SetPhase(job, rank, phase, entered_unix_ms);
}

void CoordinatorMetrics::ClearRankPhases(const std::string& job) { impl_->scrape_time->Clear(job); }

void CoordinatorMetrics::WatchDisk(const std::string& path) { impl_->scrape_time->WatchDisk(path); }

std::string CoordinatorMetrics::Text() const {
  std::vector<prometheus::MetricFamily> all = impl_->registry->Collect();
  for (const auto* c : {static_cast<const prometheus::Collectable*>(impl_->checkpoint_age.get()),
                        static_cast<const prometheus::Collectable*>(impl_->scrape_time.get())})
    for (auto& f : c->Collect()) all.push_back(std::move(f));
  return prometheus::TextSerializer().Serialize(all);
}

struct MetricsServer::Impl {
  std::unique_ptr<prometheus::Exposer> exposer;
};

MetricsServer::MetricsServer(const std::string& listen, const CoordinatorMetrics& metrics)
    : impl_(std::make_unique<Impl>()) {
  try {
    impl_->exposer = std::make_unique<prometheus::Exposer>(listen);
  } catch (const std::exception& e) {
    ThrowError(Code::kUnavailable, "--metrics-listen " + listen + ": cannot listen: " + e.what());
  }
  impl_->exposer->RegisterCollectable(metrics.registry());
  impl_->exposer->RegisterCollectable(metrics.impl_->checkpoint_age);
  impl_->exposer->RegisterCollectable(metrics.impl_->scrape_time);
}
MetricsServer::~MetricsServer() = default;
int MetricsServer::port() const {
  auto ports = impl_->exposer->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

}  // namespace trm::coordinator
