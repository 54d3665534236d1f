#include "agent_metrics.h"

#include <prometheus/gauge.h>
#include <prometheus/registry.h>

namespace trm::agent {

AgentMetrics::AgentMetrics(std::shared_ptr<prometheus::Registry> registry) : reg_(std::move(registry)) {
  if (!reg_) return;
  slots_ = &prometheus::BuildGauge().Name("trm_worker_slots").Help("Slots (GPUs or CPU slots) this worker offers").Register(*reg_).Add({});
  busy_ = &prometheus::BuildGauge().Name("trm_worker_busy_slots").Help("Slots running a rank").Register(*reg_).Add({});
  step_f_ = &prometheus::BuildGauge().Name("trm_worker_step").Help("Latest optimiser step of a job's rank").Register(*reg_);
  step_s_f_ = &prometheus::BuildGauge().Name("trm_worker_step_seconds").Help("Duration of the latest step").Register(*reg_);
  allreduce_f_ = &prometheus::BuildGauge().Name("trm_worker_allreduce_seconds").Help("All-reduce time of the latest step").Register(*reg_);
  rss_f_ = &prometheus::BuildGauge().Name("trm_worker_rank_rss_bytes").Help("Resident memory of a rank process").Register(*reg_);
}

prometheus::Gauge* AgentMetrics::Get(prometheus::Family<prometheus::Gauge>* family,
                                     std::map<Key, prometheus::Gauge*>& m, const Key& k) {
  auto it = m.find(k);
  if (it != m.end()) return it->second;
  auto* g = &family->Add({{"job", k.first}, {"rank", std::to_string(k.second)}});
  m.emplace(k, g);
  return g;
}

void AgentMetrics::SetSlots(int total, int busy) {
  if (!reg_) return;
  slots_->Set(total);
  busy_->Set(busy);
}

void AgentMetrics::SetStep(const std::string& job, int rank, double step, double step_s, double allreduce_s) {
  if (!reg_) return;
  std::lock_guard<std::mutex> lock(mu_);
  const Key k{job, rank};
  Get(step_f_, step_, k)->Set(step);
  Get(step_s_f_, step_s_, k)->Set(step_s);
  Get(allreduce_f_, allreduce_, k)->Set(allreduce_s);
}

void AgentMetrics::SetRss(const std::string& job, int rank, double bytes) {
  if (!reg_) return;
  std::lock_guard<std::mutex> lock(mu_);
  Get(rss_f_, rss_, {job, rank})->Set(bytes);
}

void AgentMetrics::Remove(const std::string& job, int rank) {
  if (!reg_) return;
  std::lock_guard<std::mutex> lock(mu_);
  const Key k{job, rank};
  for (auto [family, m] : {std::pair{step_f_, &step_}, std::pair{step_s_f_, &step_s_},
                           std::pair{allreduce_f_, &allreduce_}, std::pair{rss_f_, &rss_}}) {
    auto it = m->find(k);
    if (it == m->end()) continue;
    family->Remove(it->second);
    m->erase(it);
  }
}

}  // namespace trm::agent
