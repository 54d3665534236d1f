// The agent's one retry policy, for fetches (datasets, resume checkpoints) and checkpoint
// uploads alike: which errors are worth another try, the backoff, and a deadline.
#pragma once

#include <chrono>
#include <functional>
#include <string>

#include "trm/agent/clock.h"
#include "trm/common/error.h"

namespace trm::agent {

struct RetryPolicy {
  std::chrono::milliseconds initial_backoff{500};
  std::chrono::milliseconds max_backoff{10000};  // the backoff doubles up to this
  std::chrono::milliseconds deadline{1800000};   // from the first try; then the last error stands
};

// The answers that say "later": the coordinator unreachable or restarting (kUnavailable,
// kDeadlineExceeded, kInternal: gRPC's UNKNOWN / ABORTED / INTERNAL of a stream cut by a dying
// server) or out of space for now (kResourceExhausted: it keeps the job, space may be freed).
// Anything else is final: kFailedPrecondition (e.g. "not the current attempt"), kNotFound,
// kInvalidArgument, kDataLoss, kCancelled, ...
bool IsRetryable(Code code);

// Calls op() until it returns. A retryable trm::Error is retried after the backoff until the
// deadline has passed (then it is rethrown, same code, the message saying it gave up); any other
// error is rethrown at once. `wait(d)` waits d and returns true when the caller is stopping: then
// kCancelled is thrown. Each retry is logged as "WHAT: ERROR; retrying in N ms".
void RetryCall(const std::string& what, const RetryPolicy& policy, Clock& clock,
               const std::function<bool(std::chrono::milliseconds)>& wait, const std::function<void()>& op);

}  // namespace trm::agent
