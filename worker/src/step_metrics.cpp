#include "trm/worker/step_metrics.h"

#include <limits>
#include <string>
#include <type_traits>
#include <utility>
#include <variant>

#include "trm/common/error.h"
#include "trm/common/json_fields.h"

namespace trm::worker {
namespace {

using nlohmann::json;
namespace key = metric_key;

// Every written field once, in one table: ToJson and FromLookup walk it, so a field added here
// is written and read everywhere. The member's type is the JSON type it takes.
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

// Whether `k` is a floating-point field's key. trm-train's writer (nlohmann) puts a NaN or an
// infinity there as null: a reader must see a non-finite loss, not a missing one.
bool IsFloatKey(const std::string& k) {
  for (const Field& f : kFields) {
    if (k == f.key) return std::holds_alternative<double StepMetrics::*>(f.member);
  }
  return false;
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
    if (v.is_number()) {
      m.values[k] = v.get<double>();
    } else if (v.is_null() && IsFloatKey(k)) {
      m.values[k] = std::numeric_limits<double>::quiet_NaN();
    }
  }
  return m;
}

}  // namespace trm::worker
