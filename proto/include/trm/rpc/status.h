// The gRPC edge of the error policy (docs/error-policy.md): trm::Error <-> grpc::Status.
// Services catch at the adapter and return a status; clients turn a failed status back into a
// trm::Error naming the call.
#pragma once

#include <grpcpp/support/status.h>

#include <string>
#include <utility>

#include "trm/common/error.h"

namespace trm::rpc {

grpc::StatusCode ToGrpcCode(Code code);
Code FromGrpcCode(grpc::StatusCode code);

// Runs `fn` (which returns void) and converts whatever it throws into a status, so no handler
// can take the server down with an exception.
template <class Fn>
grpc::Status Guard(Fn&& fn) noexcept {
  try {
    std::forward<Fn>(fn)();
    return grpc::Status::OK;
  } catch (const std::exception& e) {
    const Error err = ToError(e);  // filesystem errors keep their meaning (a full disk, a missing file)
    return grpc::Status(ToGrpcCode(err.code()), err.what());
  } catch (...) {
    return grpc::Status(grpc::StatusCode::INTERNAL, "internal error");
  }
}

// Throws trm::Error("<what>: <message>") when `s` is not OK.
void ThrowIfFailed(const grpc::Status& s, const std::string& what);

}  // namespace trm::rpc
