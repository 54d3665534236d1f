#include "tenancy.h"

#include <cstdlib>
#include <sstream>

#include "trm/common/error.h"
#include "trm/common/path_confine.h"
#include "trm/rpc/transfer.h"

namespace trm::coordinator {

DatasetRef ParseDatasetRef(const std::string& ref, const std::string& caller, const std::string& field) {
  const size_t slash = ref.find('/');
  if (slash == std::string::npos) {
    rpc::CheckName(ref, field);
    return {caller, ref, false};
  }
  if (ref.find('/', slash + 1) != std::string::npos)
    InvalidArgument(field + " '" + ref + "': expected NAME or OWNER/NAME");
  const std::string owner = ref.substr(0, slash), name = ref.substr(slash + 1);
  rpc::CheckName(owner, field + " (the owner in OWNER/NAME)");
  rpc::CheckName(name, field + " (the name in OWNER/NAME)");
  return {owner, name, true};
}

bool MayBeHash(const std::string& ref) {
  return ref.size() >= 12 && ref.size() <= 64 && ref.find_first_not_of("0123456789abcdef") == std::string::npos;
}

namespace {

struct Managed {
  const char* key;
  const char* instead;
};

const Managed kManaged[] = {
    {"run_dir", "the coordinator stores each job's checkpoints itself: trmctl checkpoints JOB, trmctl pull JOB"},
    {"checkpoint_path", "the coordinator stores each job's checkpoints itself: trmctl checkpoints JOB, trmctl pull JOB"},
    {"project_name", "jobs are named with trmctl submit --name; checkpoints are stored per job"},
    {"run_name", "jobs are named with trmctl submit --name; checkpoints are stored per job"},
    {"load_checkpoint", "a restarted attempt resumes from the job's latest checkpoint by itself"},
    {"resume", "a restarted attempt resumes from the job's latest checkpoint by itself"},
    {"data_paths", "give the data with --dataset NAME (trmctl dataset push) or --data-path DIR"},
    {"data_paths_test", "a pushed dataset's test/ split is what evaluation reads; push the dataset with it"},
    {"device", "ranks run on the device of the worker slot they get (trm-worker --cpu-slots / --gpus)"},
    // Reference keys the trainer accepts and ignores (so reference configs load): an override
    // of one would change nothing.
    {"hydra", "it is a reference-only key this trainer ignores"},
    {"evaluators", "it is a reference-only key this trainer ignores"},
    {"dataset_type", "it is a reference-only key this trainer ignores"},
    {"puzzle_emb_lr", "it is a reference-only key this trainer ignores (no puzzle embeddings in chat models)"},
    {"puzzle_emb_weight_decay", "it is a reference-only key this trainer ignores (no puzzle embeddings in chat models)"},
};

// Keys of the list above that a config body may carry with any value (reference configs do).
bool IgnoredReferenceKey(const std::string& key) {
  return key == "hydra" || key == "evaluators" || key == "dataset_type" || key == "puzzle_emb_lr" ||
         key == "puzzle_emb_weight_decay";
}

const Managed* FindManaged(const std::string& key) {
  for (const Managed& m : kManaged)
    if (key == m.key) return &m;
  return nullptr;
}

[[noreturn]] void Refuse(const std::string& where, const Managed& m) {
  InvalidArgument(where + ": '" + m.key + "' is managed by the service; " + m.instead);
}

// The value a managed key may keep in a submitted config: what the shipped configs say. The
// naming keys and data_paths may hold anything (a job's resolved config carries its derived
// run_dir, a config file its local data): the job's own directory and data replace them.
bool Neutral(const std::string& key, const nlohmann::json& v) {
  if (key == "data_paths" || key == "run_dir" || key == "checkpoint_path" || key == "project_name" ||
      key == "run_name" || IgnoredReferenceKey(key))
    return true;
  if (v.is_null()) return true;
  if (key == "resume") return v.is_boolean() && !v.get<bool>();
  if (key == "device") return v.is_string() && v.get<std::string>() == "auto";
  if (key == "project_name") return v.is_string() && v.get<std::string>() == "trm";
  if (key == "data_paths_test") return v.is_array() && v.empty();
  return v.is_string() && v.get<std::string>().empty();
}

}  // namespace

void RefuseManagedOverrides(const std::vector<std::string>& overrides) {
  for (const std::string& ov : overrides) {
    std::string key = ov.substr(0, ov.find('='));
    if (!key.empty() && (key[0] == '~' || key[0] == '+')) key = key.substr(1);
    key = key.substr(0, key.find('.'));
    if (const Managed* m = FindManaged(key)) Refuse("spec.overrides '" + ov + "'", *m);
  }
}

void RefuseManagedConfig(const nlohmann::json& config) {
  if (!config.is_object()) return;
  for (const Managed& m : kManaged) {
    auto it = config.find(m.key);
    if (it != config.end() && !Neutral(m.key, *it)) Refuse("spec.config_yaml " + std::string(m.key) + ": " + it->dump(), m);
  }
}

bool WorkerMayRead(const v1::WorkerInfo& w, const std::string& path, bool require_roots) {
  if (w.data_roots().empty()) return !require_roots;
  for (const std::string& root : w.data_roots())
    if (PathWithin(path, root)) return true;
  return false;
}

QuotaPolicy ParseQuotaSlots(const std::string& flag, const std::string& text) {
  QuotaPolicy q;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    const size_t eq = item.find('=');
    const std::string user = item.substr(0, eq);
    const std::string v = eq == std::string::npos ? "" : item.substr(eq + 1);
    char* end = nullptr;
    const long n = std::strtol(v.c_str(), &end, 10);
    if (user.empty() || v.empty() || *end || n < 0 || n > 1000000)
      InvalidArgument(flag + " '" + item + "': expected NAME=SLOTS (or *=SLOTS for everyone else), SLOTS >= 0");
    if (user == "*") q.default_slots = static_cast<int>(n);
    else q.per_user[user] = static_cast<int>(n);
  }
  return q;
}

}  // namespace trm::coordinator
