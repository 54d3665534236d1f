#include "trm/rpc/status.h"

namespace trm::rpc {

grpc::StatusCode ToGrpcCode(Code code) {
  switch (code) {
    case Code::kInvalidArgument: return grpc::StatusCode::INVALID_ARGUMENT;
    case Code::kNotFound: return grpc::StatusCode::NOT_FOUND;
    case Code::kAlreadyExists: return grpc::StatusCode::ALREADY_EXISTS;
    case Code::kFailedPrecondition: return grpc::StatusCode::FAILED_PRECONDITION;
    case Code::kOutOfRange: return grpc::StatusCode::OUT_OF_RANGE;
    case Code::kDataLoss: return grpc::StatusCode::DATA_LOSS;
    case Code::kUnavailable: return grpc::StatusCode::UNAVAILABLE;
    case Code::kDeadlineExceeded: return grpc::StatusCode::DEADLINE_EXCEEDED;
    case Code::kCancelled: return grpc::StatusCode::CANCELLED;
    case Code::kResourceExhausted: return grpc::StatusCode::RESOURCE_EXHAUSTED;
    case Code::kIoError: return grpc::StatusCode::INTERNAL;
    case Code::kInternal: return grpc::StatusCode::INTERNAL;
    case Code::kUnauthenticated: return grpc::StatusCode::UNAUTHENTICATED;
    case Code::kPermissionDenied: return grpc::StatusCode::PERMISSION_DENIED;
  }
  return grpc::StatusCode::UNKNOWN;
}

Code FromGrpcCode(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::INVALID_ARGUMENT: return Code::kInvalidArgument;
    case grpc::StatusCode::NOT_FOUND: return Code::kNotFound;
    case grpc::StatusCode::ALREADY_EXISTS: return Code::kAlreadyExists;
    case grpc::StatusCode::FAILED_PRECONDITION: return Code::kFailedPrecondition;
    case grpc::StatusCode::OUT_OF_RANGE: return Code::kOutOfRange;
    case grpc::StatusCode::DATA_LOSS: return Code::kDataLoss;
    case grpc::StatusCode::UNAVAILABLE: return Code::kUnavailable;
    case grpc::StatusCode::DEADLINE_EXCEEDED: return Code::kDeadlineExceeded;
    case grpc::StatusCode::CANCELLED: return Code::kCancelled;
    case grpc::StatusCode::RESOURCE_EXHAUSTED: return Code::kResourceExhausted;
    case grpc::StatusCode::UNAUTHENTICATED: return Code::kUnauthenticated;
    case grpc::StatusCode::PERMISSION_DENIED: return Code::kPermissionDenied;
    default: return Code::kInternal;
  }
}

void ThrowIfFailed(const grpc::Status& s, const std::string& what) {
  if (s.ok()) return;
  ThrowError(FromGrpcCode(s.error_code()), what + ": " + s.error_message());
}

}  // namespace trm::rpc
