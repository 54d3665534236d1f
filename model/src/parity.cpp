#include "trm/model/parity.h"

#include <torch/torch.h>

#include <algorithm>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <sstream>

#include "trm/common/error.h"
#include "trm/model/safetensors.h"
#include "trm/model/tensor_io.h"
#include "trm/model/trm.h"

namespace trm::model {
namespace {

using nlohmann::json;

class Replay {
 public:
  explicit Replay(const std::string& path) : file_(SafetensorsFile::Open(path)) { report_.fixture = path; }

  ParityReport Run() {
    Trm model = BuildModel();
    Batch batch_a = LoadBatch("batch_a");
    ReplayEval(model, batch_a);
    ReplayTrain(model);
    return report_;
  }

 private:
  Trm BuildModel() {
    const auto& meta = file_.metadata();
    auto arch_it = meta.find("arch");
    if (arch_it == meta.end()) DataLoss(file_.name() + ": __metadata__ has no 'arch' entry");
    json arch;
    try {
      arch = json::parse(arch_it->second);
    } catch (const json::exception& e) {
      DataLoss(file_.name() + ": __metadata__.arch is not valid JSON: " + e.what());
    }
    auto loss_it = meta.find("loss_type");
    if (loss_it != meta.end()) arch["loss_type"] = loss_it->second;
    arch["forward_dtype"] = "float32";  // fixtures are float32 runs of the reference
    ArchConfig cfg = ArchConfig::FromJson(arch, file_.name() + ": __metadata__.arch");
    torch::manual_seed(0);
    Trm model(cfg);
    std::map<std::string, at::Tensor> params;
    for (const auto& [name, t] : model->StateDict()) {
      params[name] = LoadTensor(file_, "param." + name);
    }
    for (const auto& n : file_.Names()) {
      if (n.rfind("param.", 0) == 0 && !params.count(n.substr(6))) {
        report_.problems.push_back(n + ": fixture parameter the model does not have");
      }
    }
    model->LoadStateDict(params, file_.name());
    // Parity is with the reference's arithmetic: its op sequence, whose forward is bitwise the
    // reference's. The trainer's fused CPU kernels round differently (~1e-6 a step), which a
    // deep random recursion can amplify past the 1e-4 bar (2.6e-4 on one gradient of one of
    // the 24 random fixtures); they are checked against float64 autograd instead
    // (tests/model/fused_cpu_test.cpp).
    model->SetFusedCpuKernels(false);
    return model;
  }

  Batch LoadBatch(const std::string& name) {
    Batch b;
    b.inputs = LoadTensor(file_, name + ".inputs");
    b.labels = LoadTensor(file_, name + ".labels");
    if (file_.Has(name + ".puzzle_identifiers")) b.puzzle_identifiers = LoadTensor(file_, name + ".puzzle_identifiers");
    return b;
  }

  void Compare(const std::string& group, const at::Tensor& actual, const std::string& expected_name) {
    if (!file_.Has(expected_name)) return;
    at::Tensor expected = LoadTensor(file_, expected_name);
    ParityGroup& g = report_.groups[group];
    double err;
    if (expected.is_floating_point()) {
      if (actual.sizes() != expected.sizes()) {
        report_.problems.push_back(expected_name + ": shape " + c10::str(actual.sizes()) + " vs fixture " +
                                   c10::str(expected.sizes()));
        err = 1.0;
      } else {
        err = RelativeError(actual, expected);
      }
    } else {
      g.exact = true;
      err = actual.sizes() != expected.sizes() ||
                    !torch::equal(actual.to(torch::kLong).cpu(), expected.to(torch::kLong))
                ? 1.0
                : 0.0;
    }
    g.compared++;
    if (err > g.worst || g.worst_name.empty()) {
      g.worst = std::max(g.worst, err);
      if (err >= g.worst) g.worst_name = expected_name;
    }
  }

  void CompareMetrics(const std::string& group, const Metrics& metrics, const std::string& prefix) {
    for (const auto& n : file_.Names()) {
      if (n.rfind(prefix, 0) != 0) continue;
      std::string key = n.substr(prefix.size());
      auto it = metrics.find(key);
      if (it == metrics.end()) {
        report_.problems.push_back(n + ": metric the model does not compute");
        continue;
      }
      Compare(group, it->second.to(torch::kFloat64), n);
    }
  }

  void ReplayEval(Trm& model, const Batch& batch) {
    torch::NoGradGuard no_grad;
    model->eval();
    Carry carry = model->InitialCarry(batch);
    for (int k = 1; file_.Has("eval.step" + std::to_string(k) + ".logits"); ++k) {
      const std::string p = "eval.step" + std::to_string(k) + ".";
      StepOutput out = model->forward(carry, batch);
      carry = out.carry;
      Compare("eval.logits", out.logits, p + "logits");
      Compare("eval.q_halt_logits", out.q_halt_logits, p + "q_halt_logits");
      Compare("eval.q_continue_logits", out.q_continue_logits, p + "q_continue_logits");
      Compare("eval.z_H", carry.z_H, p + "z_H");
      Compare("eval.loss", out.loss, p + "loss");
      Compare("eval.halted", carry.halted, p + "halted");
      Compare("eval.steps", carry.steps, p + "steps");
      CompareMetrics("eval.metrics", out.metrics, p + "metric.");
    }
  }

  void ReplayTrain(Trm& model) {
    model->train();
    std::vector<std::string> batch_names;
    for (char c = 'a'; file_.Has(std::string("batch_") + c + ".inputs"); ++c) batch_names.push_back(std::string("batch_") + c);
    Carry carry;
    bool first = true;
    for (int i = 1; file_.Has("train.step" + std::to_string(i) + ".loss"); ++i) {
      const std::string p = "train.step" + std::to_string(i) + ".";
      // step 1 on batch_a, step 2 on batch_b, ... cycling through the recorded batches.
      Batch batch = LoadBatch(batch_names[static_cast<size_t>(i - 1) % batch_names.size()]);
      if (first) carry = model->InitialCarry(batch);
      first = false;
      for (auto& prm : model->parameters()) prm.mutable_grad() = at::Tensor();
      StepOutput out = model->forward(carry, batch);
      out.loss.backward();
      carry = out.carry;
      Compare("train.loss", out.loss, p + "loss");
      Compare("train.logits", out.logits, p + "logits");
      Compare("train.q_halt_logits", out.q_halt_logits, p + "q_halt_logits");
      Compare("train.q_continue_logits", out.q_continue_logits, p + "q_continue_logits");
      Compare("train.halted", carry.halted, p + "halted");
      Compare("train.steps", carry.steps, p + "steps");
      Compare("train.current_inputs", carry.data.inputs, p + "current_inputs");
      CompareMetrics("train.metrics", out.metrics, p + "metric.");
      std::map<std::string, at::Tensor> grads;
      for (const auto& [name, t] : model->StateDict()) {
        if (!t.requires_grad()) continue;  // buffers
        grads[name] = t.grad().defined() ? t.grad() : torch::zeros_like(t);
      }
      const std::string gp = p + "grad.";
      for (const auto& n : file_.Names()) {
        if (n.rfind(gp, 0) != 0) continue;
        auto it = grads.find(n.substr(gp.size()));
        if (it == grads.end()) {
          report_.problems.push_back(n + ": gradient of a parameter the model does not have");
          continue;
        }
        Compare("train.grads", it->second, n);
      }
    }
  }

  SafetensorsFile file_;
  ParityReport report_;
};

}  // namespace

bool ParityReport::ok() const {
  if (!problems.empty() || groups.empty()) return false;
  for (const auto& [name, g] : groups) {
    if (g.exact ? g.worst != 0.0 : !(g.worst <= tolerance)) return false;
  }
  return true;
}

double RelativeError(const at::Tensor& actual, const at::Tensor& expected) {
  at::Tensor a = actual.detach().to(torch::kCPU, torch::kFloat64);
  at::Tensor b = expected.detach().to(torch::kCPU, torch::kFloat64);
  double num = (a - b).norm().item<double>();
  double den = std::max(b.norm().item<double>(), 1e-12);
  return num / den;  // NaN propagates and fails the <= tolerance check
}

ParityReport RunParity(const std::string& fixture_path) { return Replay(fixture_path).Run(); }

std::string FormatParityReport(const ParityReport& r) {
  std::ostringstream os;
  os << r.fixture << "\n";
  char line[256];
  for (const auto& [name, g] : r.groups) {
    bool pass = g.exact ? g.worst == 0.0 : g.worst <= r.tolerance;
    if (g.exact) {
      std::snprintf(line, sizeof line, "  %-26s %-10s %3d tensors  %s\n", name.c_str(),
                    g.worst == 0.0 ? "exact" : "DIFFERS", g.compared, pass ? "PASS" : "FAIL");
    } else {
      std::snprintf(line, sizeof line, "  %-26s %-10.3e %3d tensors  %s\n", name.c_str(), g.worst, g.compared,
                    pass ? "PASS" : "FAIL");
    }
    os << line;
    if (!pass) os << "      worst: " << g.worst_name << "\n";
  }
  for (const auto& p : r.problems) os << "  problem: " << p << "\n";
  os << "  " << (r.ok() ? "OK" : "FAILED") << " (tolerance " << r.tolerance << " relative)\n";
  return os.str();
}

}  // namespace trm::model
