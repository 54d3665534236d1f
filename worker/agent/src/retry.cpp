#include "retry.h"

#include <spdlog/spdlog.h>

#include <algorithm>

namespace trm::agent {

bool IsRetryable(Code code) {
  switch (code) {
    case Code::kUnavailable:
    case Code::kDeadlineExceeded:
    case Code::kInternal:
    case Code::kResourceExhausted: return true;
    default: return false;
  }
}

void RetryCall(const std::string& what, const RetryPolicy& policy, Clock& clock,
               const std::function<bool(std::chrono::milliseconds)>& wait, const std::function<void()>& op) {
  const int64_t give_up_at = clock.SteadyMs() + policy.deadline.count();
  std::chrono::milliseconds backoff = policy.initial_backoff;
  while (true) {
    try {
      op();
      return;
    } catch (const Error& e) {
      if (!IsRetryable(e.code())) throw;
      if (clock.SteadyMs() + backoff.count() > give_up_at) {
        ThrowError(e.code(), what + ": " + e.what() + " (gave up retrying after " +
                                 std::to_string(policy.deadline.count() / 1000) + " s)");
      }
      spdlog::warn("{}: {}; retrying in {} ms", what, e.what(), backoff.count());
    }
    if (wait(backoff)) ThrowError(Code::kCancelled, what + ": stopped while retrying");
    backoff = std::min(backoff * 2, policy.max_backoff);
  }
}

}  // namespace trm::agent
