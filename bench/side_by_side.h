// Helpers of the side-by-side benchmarks (ours against the PyTorch reference in one run): the
// reference's JSON line from a subprocess, medians, and the matrix-product peak in each dtype (with
// the ISA of trm/common/cpu_features.h), so a ratio is reported with the ceiling both sides share.
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <vector>

namespace trm::bench {

double Median(std::vector<double> v);

// Runs `command` (a shell command line), returns the JSON of its last stdout line; throws
// trm::Error (Internal) naming the command when it fails or prints no JSON.
nlohmann::json RunReference(const std::string& command);


// GFLOP/s of an n x n x n matrix product in `dtype` ("float32" | "bfloat16") on the current
// thread settings: the best of a few timed products after a warm-up.
double MatmulGflops(const std::string& dtype, int64_t n = 1024);

}  // namespace trm::bench
