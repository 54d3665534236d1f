// Data-parallel test helpers: ranks as threads of the test process, and weight comparisons.
#pragma once

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <functional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "trm/common/net.h"

namespace trm::worker {

using Weights = std::vector<std::pair<std::string, at::Tensor>>;

// Runs run_rank(rank, port) for every rank on its own thread (port: a free rendezvous port they
// share), reports each rank's exception as a test failure, checks that every rank ends with
// rank 0's weights bit for bit, and returns rank 0's.
inline Weights RunRankThreads(int world, const std::function<Weights(int rank, int port)>& run_rank) {
  const int port = PickFreePort();
  std::vector<Weights> out(static_cast<size_t>(world));
  std::vector<std::string> errors(static_cast<size_t>(world));
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        out[static_cast<size_t>(r)] = run_rank(r, port);
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int r = 0; r < world; ++r) EXPECT_EQ(errors[static_cast<size_t>(r)], "") << "rank " << r;
  for (int r = 1; r < world; ++r) {
    const Weights& w = out[static_cast<size_t>(r)];
    EXPECT_EQ(w.size(), out[0].size()) << "rank " << r;
    for (size_t i = 0; i < out[0].size() && i < w.size(); ++i) {
      EXPECT_TRUE(torch::equal(out[0][i].second, w[i].second)) << out[0][i].first << " on rank " << r;
    }
  }
  return out[0];
}

// The largest, over tensors, of |a - b| / |b| (Frobenius norms, in float64).
inline double WorstRelativeError(const Weights& a, const Weights& b) {
  EXPECT_EQ(a.size(), b.size());
  double worst = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    const at::Tensor x = a[i].second.to(torch::kCPU, torch::kFloat64), y = b[i].second.to(torch::kCPU, torch::kFloat64);
    const double n = std::max(y.norm().item<double>(), 1e-12);
    worst = std::max(worst, (x - y).norm().item<double>() / n);
  }
  return worst;
}

}  // namespace trm::worker
