// A FileSet as a POSIX ustar archive, written as it is read: the dashboard's checkpoint
// download (a directory, one link). Sizes of 8 GiB and more use the base-256 size field that GNU
// tar and Python's tarfile read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

#include "trm/coordinator/coordinator.h"

namespace trm::coordinator {

// The archive's exact length: what Content-Length announces before the first byte. It checks
// first what can be checked before sending: every path fits a ustar header under `prefix`
// (kInvalidArgument), every file is there with the manifest's size (kNotFound / kDataLoss).
uint64_t TarSize(const FileSet& files, const std::string& prefix);

// Writes each manifest file under `dir`, as `prefix`/PATH, then the end-of-archive blocks.
// Returns false as soon as `write` does (the client went away). Throws trm::Error naming the
// file when it is missing or no longer has the manifest's size (retention deleted the
// checkpoint meanwhile), or when a path does not fit a ustar header (kInvalidArgument).
bool WriteTar(const FileSet& files, const std::string& prefix, const std::function<bool(const char*, size_t)>& write);

}  // namespace trm::coordinator
