#include "side_by_side.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>

#include "trm/common/error.h"

namespace trm::bench {

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

nlohmann::json RunReference(const std::string& command) {
  FILE* p = ::popen(command.c_str(), "r");
  if (!p) Internal("cannot start: " + command);
  std::string out;
  char buf[4096];
  for (size_t n; (n = std::fread(buf, 1, sizeof buf, p)) > 0;) out.append(buf, n);
  const int status = ::pclose(p);
  if (status != 0) Internal("the reference failed (" + command + "): " + out);
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  const size_t newline = out.find_last_of('\n');  // npos + 1 == 0: a single line
  const std::string last = out.substr(newline + 1);
  nlohmann::json j = nlohmann::json::parse(last, nullptr, /*allow_exceptions=*/false);
  if (!j.is_object()) Internal("the reference printed no JSON line (" + command + "): " + out);
  return j;
}

double MatmulGflops(const std::string& dtype, int64_t n) {
  const auto st = dtype == "bfloat16" ? torch::kBFloat16 : torch::kFloat32;
  torch::NoGradGuard no_grad;
  const at::Tensor a = torch::randn({n, n}).to(st), b = torch::randn({n, n}).to(st);
  at::Tensor c = at::mm(a, b);  // warm-up: oneDNN's kernel selection, OpenBLAS's threads
  double best = 1e30;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    c = at::mm(a, b);
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return 2.0 * n * n * n / best / 1e9;
}

}  // namespace trm::bench
