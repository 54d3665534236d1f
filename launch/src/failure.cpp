#include "failure.h"

#include <nlohmann/json.hpp>

#include "trm/common/error.h"

namespace trm::launch {

void DescribeStatus(int wait_status, Failure& f) {
  const ProcessExit x = DescribeWaitStatus(wait_status);
  if (x.exit_code >= 0) f.exit_code = x.exit_code;
  if (x.signal > 0) f.signal = x.signal;
  f.what = x.what;
}

std::string FailureToJson(const Failure& f) {
  nlohmann::json j = {{"generation", f.generation}, {"node_rank", f.node_rank}, {"global_rank", f.global_rank},
                      {"local_rank", f.local_rank}, {"exit_code", f.exit_code},  {"signal", f.signal},
                      {"what", f.what},             {"log_path", f.log_path},    {"log_tail", f.log_tail},
                      {"abort", f.abort},           {"resize", f.resize}};
  // Rank output need not be UTF-8: replace what JSON cannot carry rather than fail.
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Failure FailureFromJson(const std::string& text) {
  try {
    const auto j = nlohmann::json::parse(text);
    Failure f;
    f.generation = j.at("generation").get<int>();
    f.node_rank = j.at("node_rank").get<int>();
    f.global_rank = j.at("global_rank").get<int>();
    f.local_rank = j.at("local_rank").get<int>();
    f.exit_code = j.at("exit_code").get<int>();
    f.signal = j.at("signal").get<int>();
    f.what = j.at("what").get<std::string>();
    f.log_path = j.at("log_path").get<std::string>();
    f.log_tail = j.at("log_tail").get<std::vector<std::string>>();
    f.abort = j.at("abort").get<bool>();
    f.resize = j.value("resize", false);
    return f;
  } catch (const nlohmann::json::exception& e) {
    DataLoss(std::string("rendezvous: malformed failure record: ") + e.what());
  }
}

}  // namespace trm::launch
