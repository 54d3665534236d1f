// Replays a reference fixture (shared/fixtures/trm/README.md) through the C++ model and reports
// the worst relative error per group. Used by trm-parity and the test suite.
#pragma once

#include <map>
#include <string>
#include <vector>

namespace at {
class Tensor;
}

namespace trm::model {

struct ParityGroup {
  double worst = 0.0;      // relative error for floats; 1 if any integer/bool element differs
  bool exact = false;      // integer/bool group: must be 0
  int compared = 0;        // tensors compared
  std::string worst_name;  // the fixture tensor with the worst error
};

struct ParityReport {
  std::string fixture;
  std::map<std::string, ParityGroup> groups;  // e.g. "eval.logits", "train.grads"
  std::vector<std::string> problems;          // fixture tensors we could not compare, and why
  double tolerance = 1e-4;
  bool ok() const;
};

// ‖a − b‖ / max(‖b‖, 1e-12), in float64.
double RelativeError(const at::Tensor& actual, const at::Tensor& expected);

// Builds the model from the fixture's __metadata__ (arch JSON + loss_type; forced to float32),
// loads its weights, replays every eval and training call it records. Throws trm::Error for an
// unreadable or malformed fixture.
ParityReport RunParity(const std::string& fixture_path);

// Human-readable table, one line per group, with PASS/FAIL.
std::string FormatParityReport(const ParityReport& report);

}  // namespace trm::model
