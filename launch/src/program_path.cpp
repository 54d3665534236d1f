#include "program_path.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <system_error>
#include <vector>

#include "trm/common/error.h"

namespace trm::launch {
namespace {

bool IsExecutableFile(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), X_OK) == 0;
}

std::string OwnDirectory(const std::string& self_exe) {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink(self_exe.empty() ? "/proc/self/exe" : self_exe, ec);
  const auto path = ec ? std::filesystem::path(self_exe) : exe;
  return path.parent_path().string();
}

}  // namespace

std::string ResolveProgram(const std::string& program, const std::string& self_exe) {
  if (program.find('/') != std::string::npos) {
    if (::access(program.c_str(), F_OK) != 0) NotFound("PROGRAM '" + program + "': no such file");
    if (!IsExecutableFile(program)) NotFound("PROGRAM '" + program + "': not an executable file");
    return program;
  }
  std::vector<std::string> dirs;
  const std::string own = OwnDirectory(self_exe);
  if (!own.empty()) dirs.push_back(own);
  const char* path_env = std::getenv("PATH");
  const std::string path = path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
  size_t start = 0;
  while (true) {
    const size_t colon = path.find(':', start);
    std::string dir = path.substr(start, colon == std::string::npos ? std::string::npos : colon - start);
    dirs.push_back(dir.empty() ? "." : dir);
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  for (const auto& dir : dirs) {
    const std::string candidate = dir + "/" + program;
    if (IsExecutableFile(candidate)) return candidate;
  }
  NotFound("PROGRAM '" + program + "': not found in " + (own.empty() ? std::string() : own + " (next to trm-launch) or ") +
           "PATH=" + path);
}

}  // namespace trm::launch
