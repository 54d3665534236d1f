// trm-bench allreduce: Gloo all-reduce (sum, float32) between ranks on this machine (threads of
// this process over loopback TCP, as data-parallel CPU training uses it), by message size.
// busbw = bytes * 2 (n - 1) / n / time, the ring all-reduce convention.
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <nlohmann/json.hpp>
#include <thread>

#include "bench.h"
#include "trm/common/error.h"
#include "trm/common/net.h"
#include "trm/worker/collective.h"

namespace trm::bench {

int RunAllreduce(const std::vector<std::string>& args) {
  CheckFlags(args, {"ranks", "reps", "max-mb"});
  const int world = std::stoi(FlagValue(args, "ranks", "2"));
  const int reps = std::stoi(FlagValue(args, "reps", "10"));
  const int64_t max_bytes = std::stoll(FlagValue(args, "max-mb", "64")) << 20;
  if (world < 2) InvalidArgument("--ranks: at least 2");
  torch::set_num_threads(1);
  const int port = PickFreePort();
  std::vector<int64_t> sizes;
  for (int64_t b = 4 << 10; b <= max_bytes; b *= 4) sizes.push_back(b);
  std::vector<std::vector<double>> secs(sizes.size());
  std::vector<std::thread> threads;
  std::vector<std::string> errors(static_cast<size_t>(world));
  for (int r = 0; r < world; ++r) {
    threads.emplace_back([&, r] {
      try {
        worker::CollectiveOptions o;
        o.rank = r;
        o.world = world;
        o.master_port = port;
        o.timeout = std::chrono::seconds(60);
        auto comm = worker::CreateCollective(o);
        for (size_t s = 0; s < sizes.size(); ++s) {
          at::Tensor t = torch::ones({sizes[s] / 4});
          comm->AllReduceSum(t);  // warm-up
          std::vector<double> times;
          for (int i = 0; i < reps; ++i) {
            comm->Barrier();
            auto t0 = std::chrono::steady_clock::now();
            comm->AllReduceSum(t);
            times.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
          }
          if (r == 0) secs[s] = times;
        }
      } catch (const std::exception& e) {
        errors[static_cast<size_t>(r)] = e.what();
      }
    });
  }
  for (auto& t : threads) t.join();
  for (const auto& e : errors)
    if (!e.empty()) ThrowError(Code::kUnavailable, "allreduce bench: " + e);
  nlohmann::json rows = nlohmann::json::array();
  for (size_t s = 0; s < sizes.size(); ++s) {
    std::sort(secs[s].begin(), secs[s].end());
    const double med = secs[s][secs[s].size() / 2];
    const double busbw = static_cast<double>(sizes[s]) * 2.0 * (world - 1) / world / med / 1e9;
    rows.push_back({{"bytes", sizes[s]}, {"time_us_median", std::round(med * 1e7) / 10}, {"busbw_gbps", std::round(busbw * 1000) / 1000}});
  }
  nlohmann::json j = {{"impl", "trm-cpp"}, {"backend", "gloo"}, {"ranks", world}, {"transport", "loopback tcp"}, {"sizes", rows}};
  std::printf("%s\n", j.dump().c_str());
  return 0;
}

}  // namespace trm::bench
