#include "trm/coordinator/metrics.h"

#include <prometheus/collectable.h>
#include <prometheus/counter.h>
#include <prometheus/exposer.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include <algorithm>
#include <chrono>
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

}  // namespace

struct CoordinatorMetrics::Impl {
  std::shared_ptr<prometheus::Registry> registry = std::make_shared<prometheus::Registry>();
  std::shared_ptr<CheckpointAge> checkpoint_age = std::make_shared<CheckpointAge>();
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

void CoordinatorMetrics::ObserveRpc(const std::string& method, double seconds) {
  impl_->rpc.Add({{"method", method}}, impl_->buckets).Observe(seconds);
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
}
MetricsServer::~MetricsServer() = default;
int MetricsServer::port() const {
  auto ports = impl_->exposer->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

}  // namespace trm::coordinator
