// The step metrics a worker reports, made up for the benchmarks that fill a coordinator's
// database (dashboard, retention): the six values trm-train logs, the loss falling with the step.
#pragma once

#include <cstdint>

#include "trm/v1/trm.pb.h"

namespace trm::bench {

inline void FillStepPoint(int64_t step, int64_t total_steps, v1::StepMetrics* m) {
  m->set_step(step);
  m->set_total_steps(total_steps);
  auto& v = *m->mutable_values();
  v["lm_loss"] = 5.0 / (1.0 + 1e-3 * static_cast<double>(step));
  v["lr"] = 1e-3;
  v["tokens_per_s"] = 6000;
  v["act_steps"] = 4;
  v["step_s"] = 0.08;
  v["accuracy"] = 0.5;
}

}  // namespace trm::bench
