#include "trm/worker/step_metrics.h"

#include <type_traits>
#include <utility>
#include <variant>

#include "trm/common/error.h"
#include "trm/common/json_fields.h"

namespace trm::worker {
namespace {

using nlohmann::json;
namespace key = metric_key;

// Every written field once, in one table: ToJson, FromJson and FromLookup walk it, so a field
// added here is written and read everywhere. The member's type is the JSON type it takes.
using Member = std::variant<int64_t StepMetrics::*, double StepMetrics::*, bool StepMetrics::*>;
struct Field {
  const char* key;
  Member member;
};
const Field kFields[] = {
    {key::kStep, &StepMetrics::step},
    {key::kTotalSteps, &StepMetrics::total_steps},
    {key::kEpoch, &StepMetrics::epoch},
    {key::kLr, &StepMetrics::lr},
    {key::kLmLoss, &StepMetrics::lm_loss},
    {key::kQHaltLoss, &StepMetrics::q_halt_loss},
    {key::kQContinueLoss, &StepMetrics::q_continue_loss},
    {key::kAccuracy, &StepMetrics::accuracy},
    {key::kExactAccuracy, &StepMetrics::exact_accuracy},
    {key::kQHaltAccuracy, &StepMetrics::q_halt_accuracy},
    {key::kActSteps, &StepMetrics::act_steps},
    {key::kGradNorm, &StepMetrics::grad_norm},
    {key::kTokensPerS, &StepMetrics::tokens_per_s},
    {key::kStepS, &StepMetrics::step_s},
    {key::kAllreduceS, &StepMetrics::allreduce_s},
    {key::kAllreduceOverlapped, &StepMetrics::allreduce_overlapped},
    {key::kSkipped, &StepMetrics::skipped},
};

// A key's value or a missing-key error; `where` prefixes every message.
const json& Required(const json& line, const char* k, const std::string& where) {
  auto it = line.find(k);
  if (it == line.end()) InvalidArgument(where + ": " + k + ": missing");
  return *it;
}

void RequireObject(const json& line, const std::string& where) {
  if (!line.is_object()) {
    InvalidArgument(where + ": expected a JSON object, got " + std::string(line.type_name()));
  }
}

}  // namespace

std::string EvalKey(const std::string& name) { return kEvalPrefix + name; }

json StepMetrics::ToJson() const {
  json j = json::object();
  for (const Field& f : kFields) {
    std::visit([&](auto member) { j[f.key] = this->*member; }, f.member);
  }
  return j;
}

StepMetrics StepMetrics::FromJson(const json& line, const std::string& where) {
  RequireObject(line, where);
  StepMetrics m;
  for (const Field& f : kFields) {
    const json& v = Required(line, f.key, where);
    const std::string name = where + ": " + f.key;
    std::visit(
        [&](auto member) {
          using T = std::decay_t<decltype(m.*member)>;
          if constexpr (std::is_same_v<T, int64_t>) m.*member = JsonInt(v, name);
          else if constexpr (std::is_same_v<T, double>) m.*member = JsonNumber(v, name);
          else m.*member = JsonBool(v, name);
        },
        f.member);
  }
  return m;
}

StepMetrics StepMetrics::FromLookup(const std::function<double(const std::string& key)>& value) {
  StepMetrics m;
  for (const Field& f : kFields) {
    const double v = value(f.key);
    std::visit(
        [&](auto member) {
          using T = std::decay_t<decltype(m.*member)>;
          if constexpr (std::is_same_v<T, bool>) m.*member = v != 0;
          else m.*member = static_cast<T>(v);
        },
        f.member);
  }
  return m;
}

json EvalMetrics::ToJson() const {
  json j = {{key::kStep, step}, {key::kEval, true}};
  for (const auto& [name, v] : values) j[EvalKey(name)] = v;
  return j;
}

EvalMetrics EvalMetrics::FromJson(const json& line, const std::string& where) {
  RequireObject(line, where);
  if (!JsonBool(Required(line, key::kEval, where), where + ": " + key::kEval)) {
    InvalidArgument(where + ": " + key::kEval + ": false on an evaluation's line");
  }
  EvalMetrics em;
  em.step = JsonInt(Required(line, key::kStep, where), where + ": " + key::kStep);
  const std::string prefix = kEvalPrefix;
  for (const auto& [k, v] : line.items()) {
    if (k.size() > prefix.size() && k.compare(0, prefix.size(), prefix) == 0) {
      em.values[k.substr(prefix.size())] = JsonNumber(v, where + ": " + k);
    }
  }
  return em;
}

MetricsLine ParseMetricsLine(const std::string& text, const std::string& where) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    InvalidArgument(where + ": not JSON: " + e.what());
  }
  RequireObject(j, where);
  MetricsLine m;
  if (auto it = j.find(key::kStep); it != j.end()) m.step = JsonInt(*it, where + ": " + key::kStep);
  if (auto it = j.find(key::kTotalSteps); it != j.end()) m.total_steps = JsonInt(*it, where + ": " + key::kTotalSteps);
  if (auto it = j.find(key::kEval); it != j.end()) m.eval = JsonBool(*it, where + ": " + key::kEval);
  for (const auto& [k, v] : j.items()) {
    if (v.is_number()) m.values[k] = v.get<double>();
  }
  return m;
}

}  // namespace trm::worker
