// The rules that let several users share one coordinator (docs/control-plane.md#security):
// dataset namespaces, the config keys the service owns, data paths within the workers' roots
// and slot quotas. Pure functions over records; the Coordinator applies them under its lock.
// Private to trm_coordinator.
#pragma once

#include <nlohmann/json.hpp>

#include <map>
#include <string>
#include <vector>

#include "trm/v1/trm.pb.h"

namespace trm::coordinator {

// A dataset name as a user writes it: NAME (the caller's own) or OWNER/NAME.
struct DatasetRef {
  std::string owner;
  std::string name;
  bool qualified = false;  // written as OWNER/NAME
};
// Throws kInvalidArgument naming `field` unless `ref` is NAME or OWNER/NAME with valid parts.
DatasetRef ParseDatasetRef(const std::string& ref, const std::string& caller, const std::string& field);
// 12 to 64 lower-case hex digits: may name content by its hash (or a prefix of it).
bool MayBeHash(const std::string& ref);

// Overrides of keys the service owns (run_dir / checkpoint_path, load_checkpoint, resume,
// data_paths, data_paths_test, device, project_name, run_name) or that the trainer ignores
// (the reference's hydra, evaluators, dataset_type, puzzle_emb_*): kInvalidArgument naming the
// key and what to use instead. A submitted config body may carry load_checkpoint, resume,
// data_paths_test and device only at their neutral values; the naming keys and data_paths it
// may carry freely (a job's resolved config holds its derived run_dir, a config file its local
// data: the job's own directory and data replace them), and the ignored ones too.
void RefuseManagedOverrides(const std::vector<std::string>& overrides);
void RefuseManagedConfig(const nlohmann::json& config);

// May worker `w` read data_path `path` (normal absolute)? Within one of its roots (as given or
// resolved); a worker without roots may read anything unless roots are required (auth on).
bool WorkerMayRead(const v1::WorkerInfo& w, const std::string& path, bool require_roots);

// --quota-slots: slots one user's jobs may hold at once. 0 = unlimited.
struct QuotaPolicy {
  std::map<std::string, int> per_user;
  int default_slots = 0;
  int For(const std::string& user) const {
    auto it = per_user.find(user);
    return it == per_user.end() ? default_slots : it->second;
  }
};
// "alice=4,bob=2,*=8" ('*' sets the default). Throws kInvalidArgument naming `flag`.
QuotaPolicy ParseQuotaSlots(const std::string& flag, const std::string& text);

}  // namespace trm::coordinator
