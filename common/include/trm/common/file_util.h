// Whole-file I/O with errors that name the path. Writes are atomic: data goes to a temporary
// file in the same directory, is fsynced, then renamed over the target, so a crash leaves either
// the old file or the new one, never a half-written one.
#pragma once

#include <string>

namespace trm {

// Throws NotFound / IoError naming `path`.
std::string ReadFile(const std::string& path);

// Atomic replace of `path` with `data` (temp file + fsync + rename + fsync of the directory).
void WriteFileAtomic(const std::string& path, const std::string& data);

// fsync of a directory, so the renames and creations in it are durable. A filesystem that cannot
// sync directories (EINVAL) gets one warning per process and is otherwise accepted; any other
// failure throws FileError naming `dir` (a full disk is kResourceExhausted).
void FsyncDirectory(const std::string& dir);

// The directory of the running executable (where its sibling binaries are), "." if unknown.
std::string ExecutableDir();

}  // namespace trm
