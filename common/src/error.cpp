#include "trm/common/error.h"

#include <cerrno>
#include <cstring>

namespace trm {

const char* CodeName(Code code) {
  switch (code) {
    case Code::kInvalidArgument: return "INVALID_ARGUMENT";
    case Code::kNotFound: return "NOT_FOUND";
    case Code::kAlreadyExists: return "ALREADY_EXISTS";
    case Code::kFailedPrecondition: return "FAILED_PRECONDITION";
    case Code::kOutOfRange: return "OUT_OF_RANGE";
    case Code::kDataLoss: return "DATA_LOSS";
    case Code::kUnavailable: return "UNAVAILABLE";
    case Code::kDeadlineExceeded: return "DEADLINE_EXCEEDED";
    case Code::kCancelled: return "CANCELLED";
    case Code::kResourceExhausted: return "RESOURCE_EXHAUSTED";
    case Code::kInternal: return "INTERNAL";
    case Code::kIoError: return "IO_ERROR";
    case Code::kUnauthenticated: return "UNAUTHENTICATED";
    case Code::kPermissionDenied: return "PERMISSION_DENIED";
  }
  return "UNKNOWN";
}

Error::Error(Code code, const std::string& message) : std::runtime_error(message), code_(code) {}

void ThrowError(Code code, const std::string& message) { throw Error(code, message); }

bool IsDiskFullErrno(int err) { return err == ENOSPC || err == EDQUOT || err == EFBIG; }

void FileError(const std::string& message, int err) {
  ThrowError(IsDiskFullErrno(err) ? Code::kResourceExhausted : Code::kIoError, message + ": " + std::strerror(err));
}

}  // namespace trm
