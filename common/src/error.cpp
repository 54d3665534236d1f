#include "trm/common/error.h"

#include <cerrno>
#include <cstring>
#include <filesystem>

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

Error ToError(const std::exception& e) {
  if (const auto* own = dynamic_cast<const Error*>(&e)) return *own;
  if (const auto* fe = dynamic_cast<const std::filesystem::filesystem_error*>(&e)) {
    const int err = fe->code().value();
    const bool system = fe->code().category() == std::system_category() || fe->code().category() == std::generic_category();
    if (system && err == ENOENT) return Error(Code::kNotFound, fe->what());
    return Error(system && IsDiskFullErrno(err) ? Code::kResourceExhausted : Code::kIoError, fe->what());
  }
  return Error(Code::kInternal, std::string("internal error: ") + e.what());
}

void FileError(const std::string& message, const std::error_code& ec) {
  if (ec.category() == std::system_category() || ec.category() == std::generic_category()) FileError(message, ec.value());
  ThrowError(Code::kIoError, message + ": " + ec.message());
}

}  // namespace trm
