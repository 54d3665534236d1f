// The worker's Prometheus gauges. A null registry makes every call a no-op. Thread-safe.
#pragma once

#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>

namespace prometheus {
class Registry;
class Gauge;
template <typename T>
class Family;
}  // namespace prometheus

namespace trm::agent {

class AgentMetrics {
 public:
  explicit AgentMetrics(std::shared_ptr<prometheus::Registry> registry);
  void SetSlots(int total, int busy);
  void SetStep(const std::string& job, int rank, double step, double step_s, double allreduce_s);
  void SetRss(const std::string& job, int rank, double bytes);
  void Remove(const std::string& job, int rank);

 private:
  using Key = std::pair<std::string, int>;
  prometheus::Gauge* Get(prometheus::Family<prometheus::Gauge>* family, std::map<Key, prometheus::Gauge*>& m,
                         const Key& k);

  std::shared_ptr<prometheus::Registry> reg_;
  std::mutex mu_;
  prometheus::Gauge* slots_ = nullptr;
  prometheus::Gauge* busy_ = nullptr;
  prometheus::Family<prometheus::Gauge>* step_f_ = nullptr;
  prometheus::Family<prometheus::Gauge>* step_s_f_ = nullptr;
  prometheus::Family<prometheus::Gauge>* allreduce_f_ = nullptr;
  prometheus::Family<prometheus::Gauge>* rss_f_ = nullptr;
  std::map<Key, prometheus::Gauge*> step_, step_s_, allreduce_, rss_;
};

}  // namespace trm::agent
