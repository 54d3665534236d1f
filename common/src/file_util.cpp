#include "trm/common/file_util.h"

#include <fcntl.h>
#include <unistd.h>

#include <spdlog/spdlog.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "trm/common/error.h"

namespace trm {
namespace {

void WriteAll(int fd, const std::string& path, const std::string& data) {
  const char* p = data.data();
  size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      FileError(path + ": write failed", errno);
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

void FsyncDirOf(const std::string& path) {
  const std::string dir = std::filesystem::path(path).parent_path().string();
  FsyncDirectory(dir.empty() ? "." : dir);
}

}  // namespace

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    if (!std::filesystem::exists(path)) NotFound(path + ": no such file");
    FileError(path + ": cannot open for reading", errno);
  }
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) IoError(path + ": read failed");
  return ss.str();
}

void WriteFileAtomic(const std::string& path, const std::string& data) {
  std::string tmp = path + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) FileError(tmp + ": cannot create", errno);
  try {
    WriteAll(fd, tmp, data);
    if (::fsync(fd) != 0) FileError(tmp + ": fsync failed", errno);
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const int err = errno;
    ::unlink(tmp.c_str());
    FileError(path + ": rename from temporary file failed", err);
  }
  FsyncDirOf(path);
}

void FsyncDirectory(const std::string& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) FileError(dir + ": cannot open the directory to fsync it", errno);
  const int rc = ::fsync(fd), err = errno;
  ::close(fd);
  if (rc == 0) return;
  if (err != EINVAL) FileError(dir + ": directory fsync failed", err);
  static std::atomic<bool> warned{false};  // once per process: every write would repeat it
  if (!warned.exchange(true)) {
    spdlog::warn("{}: this filesystem cannot fsync directories; renames there are durable only when it says so", dir);
  }
}

std::string ExecutableDir() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : exe.parent_path().string();
}

}  // namespace trm
