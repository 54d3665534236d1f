// The project's one error mechanism (docs/error-policy.md): functions that can fail on bad input
// or a failing environment throw trm::Error, which carries a Code and a message that names the
// file / field / line and what was expected. Executables catch it in main; gRPC adapters map
// Code to a grpc::StatusCode at the edge.
#pragma once

#include <stdexcept>
#include <string>
#include <system_error>

namespace trm {

enum class Code {
  kInvalidArgument,    // the caller's input is wrong (config key, CLI flag, request field)
  kNotFound,           // a named file, key, job or checkpoint does not exist
  kAlreadyExists,
  kFailedPrecondition, // the system is not in a state where this can be done
  kOutOfRange,
  kDataLoss,           // a file is corrupt or truncated
  kUnavailable,        // a peer or service is not reachable
  kDeadlineExceeded,   // a blocking call ran past its timeout
  kCancelled,
  kResourceExhausted,
  kInternal,           // a bug: an invariant of ours does not hold
  kIoError,            // the filesystem refused (permissions, disk full)
  kUnauthenticated,    // no or unknown credentials
  kPermissionDenied,   // known credentials without the role the call needs
};

const char* CodeName(Code code);

class Error : public std::runtime_error {
 public:
  Error(Code code, const std::string& message);
  Code code() const { return code_; }

 private:
  Code code_;
};

// Shorthands: throw trm::InvalidArgument("config.yaml: arch.hidden_size: expected ...").
[[noreturn]] void ThrowError(Code code, const std::string& message);
[[noreturn]] inline void InvalidArgument(const std::string& m) { ThrowError(Code::kInvalidArgument, m); }
[[noreturn]] inline void NotFound(const std::string& m) { ThrowError(Code::kNotFound, m); }
[[noreturn]] inline void DataLoss(const std::string& m) { ThrowError(Code::kDataLoss, m); }
[[noreturn]] inline void IoError(const std::string& m) { ThrowError(Code::kIoError, m); }
[[noreturn]] inline void Internal(const std::string& m) { ThrowError(Code::kInternal, m); }
// A filesystem call failed with errno `err`: throws "MESSAGE: <strerror>" as kResourceExhausted
// for a full disk, an exhausted quota or a file size limit (ENOSPC, EDQUOT, EFBIG: the job can
// be failed or held with that reason, and retrying elsewhere may help), kIoError otherwise.
[[noreturn]] void FileError(const std::string& message, int err);
// The same for a std::filesystem call's error_code (its system errno when it has one;
// "MESSAGE: <ec.message()>" as kIoError otherwise).
[[noreturn]] void FileError(const std::string& message, const std::error_code& ec);
bool IsDiskFullErrno(int err);

// What an edge (a gRPC adapter, an executable's main) makes of any exception: a trm::Error as
// it is; a std::filesystem::filesystem_error (a throwing std::filesystem overload) mapped as
// FileError maps its errno (ENOENT is kNotFound), so a full disk is never "internal"; anything
// else is kInternal, a bug of ours.
Error ToError(const std::exception& e);

}  // namespace trm
