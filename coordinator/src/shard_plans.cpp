#include "shard_plans.h"

#include <spdlog/spdlog.h>

#include <filesystem>
#include <nlohmann/json.hpp>

#include "job_lifecycle.h"
#include "trm/data/batch_iterator.h"
#include "trm/data/dataset_reader.h"
#include "trm/worker/train_config.h"

namespace trm::coordinator {

ShardRequest ShardRequestFor(const v1::JobRecord& rec, std::vector<int> ranks) {
  ShardRequest r;
  r.job_id = rec.job().id();
  r.attempt = rec.attempt().number();
  r.config_name = rec.job().spec().config_name();
  r.resolved_config_json = rec.job().resolved_config_json();
  r.dataset_hash = rec.job().dataset_hash();
  r.world_size = AttemptWorldSize(rec);
  r.ranks = std::move(ranks);
  return r;
}

ShardPlanner::ShardPlanner(std::string data_dir)
    : datasets_dir_((std::filesystem::path(data_dir) / "datasets").string()) {}

int64_t ShardPlanner::TrainRows(const std::string& hash) {
  {
    std::lock_guard<std::mutex> l(mu_);
    if (auto it = train_rows_.find(hash); it != train_rows_.end()) return it->second;
  }
  const int64_t n = data::DatasetSplit::Open((std::filesystem::path(datasets_dir_) / hash).string(), "train").rows();
  std::lock_guard<std::mutex> l(mu_);
  train_rows_[hash] = n;
  return n;
}

std::vector<int64_t> ShardPlanner::RowsOf(const v1::ShardSpec& shard, int64_t rows) {
  data::BatchConfig bc;
  bc.global_batch = shard.global_batch();
  bc.seed = shard.seed();
  bc.world = shard.world_size();
  return data::RowsReadByRanks(rows, bc, std::vector<int>(shard.ranks().begin(), shard.ranks().end()),
                               shard.batches());
}

std::optional<v1::ShardSpec> ShardPlanner::Plan(const ShardRequest& r) {
  if (r.dataset_hash.empty()) return std::nullopt;
  const std::string key =
      r.job_id + "/" + std::to_string(r.attempt) + "/" + std::to_string(r.ranks.empty() ? -1 : r.ranks.front());
  {
    std::lock_guard<std::mutex> l(mu_);
    if (auto it = plans_.find(key); it != plans_.end()) return it->second;
  }
  std::optional<v1::ShardSpec> plan = Compute(r);
  std::lock_guard<std::mutex> l(mu_);
  if (plans_.size() > 10000) plans_.clear();
  plans_[key] = plan;
  return plan;
}

std::optional<v1::ShardSpec> ShardPlanner::Compute(const ShardRequest& r) {
  try {
    const worker::TrainConfig cfg =
        worker::TrainConfig::FromJson(nlohmann::json::parse(r.resolved_config_json), r.config_name);
    const int64_t rows = TrainRows(r.dataset_hash);
    v1::ShardSpec s;
    s.set_world_size(r.world_size);
    for (int rank : r.ranks) s.add_ranks(rank);
    s.set_global_batch(cfg.global_batch_size);
    s.set_seed(static_cast<uint64_t>(cfg.seed));
    s.set_batches(worker::StepsToRun(cfg, rows) * cfg.gradient_accumulation_steps);
    if (s.batches() > 0 && RowsOf(s, rows).size() < static_cast<size_t>(rows)) return s;
  } catch (const std::exception& e) {
    spdlog::warn("job {}: no shard plan ({}); its workers fetch the whole dataset", r.job_id, e.what());
  }
  return std::nullopt;
}

}  // namespace trm::coordinator
