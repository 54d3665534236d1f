#include "trm/common/path_confine.h"

#include <filesystem>
#include <set>
#include <system_error>

#include "trm/common/error.h"

namespace trm {

namespace fs = std::filesystem;

std::string NormalAbsolutePath(const std::string& path, const std::string& field) {
  if (path.empty() || path.size() > 4096 || path.find('\0') != std::string::npos)
    InvalidArgument(field + ": not a usable path");
  if (path.front() != '/')
    InvalidArgument(field + " '" + path + "': expected an absolute path (workers resolve it on their own disks)");
  std::string n = fs::path(path).lexically_normal().string();
  while (n.size() > 1 && n.back() == '/') n.pop_back();
  return n;
}

bool PathWithin(const std::string& path, const std::string& root) {
  if (root == "/") return !path.empty() && path.front() == '/';
  return path == root || (path.size() > root.size() && path.compare(0, root.size(), root) == 0 && path[root.size()] == '/');
}

std::vector<DataRoot> ResolveDataRoots(const std::vector<std::string>& roots) {
  std::vector<DataRoot> out;
  for (const std::string& r : roots) {
    const std::string given = NormalAbsolutePath(r, "--data-root");
    std::error_code ec;
    const fs::path real = fs::canonical(given, ec);
    if (ec || !fs::is_directory(real, ec)) InvalidArgument("--data-root " + r + ": not an existing directory");
    out.push_back({given, real.string()});
  }
  return out;
}

std::string ResolveWithinRoots(const std::string& path, const std::vector<DataRoot>& roots) {
  const std::string normal = NormalAbsolutePath(path, "data path");
  std::error_code ec;
  const fs::path real = fs::canonical(normal, ec);
  if (ec) NotFound("data path " + path + ": " + ec.message());
  if (roots.empty()) return real.string();
  std::string list;
  for (const DataRoot& r : roots) {
    if (PathWithin(real.string(), r.resolved)) return real.string();
    list += (list.empty() ? "" : ", ") + r.given;
  }
  ThrowError(Code::kPermissionDenied, "data path " + path + " resolves to " + real.string() +
                                          ", outside this worker's --data-root (" + list + ")");
}

void CheckTreeWithinRoots(const std::string& dir, const std::vector<DataRoot>& roots, size_t max_entries) {
  if (roots.empty()) return;
  auto within = [&](const std::string& real) {
    for (const DataRoot& r : roots)
      if (PathWithin(real, r.resolved)) return true;
    return false;
  };
  std::vector<fs::path> todo{fs::path(dir)};
  std::set<std::string> seen;
  size_t entries = 0;
  while (!todo.empty()) {
    const fs::path d = todo.back();
    todo.pop_back();
    std::error_code ec;
    const std::string real = fs::canonical(d, ec).string();
    if (ec || !seen.insert(real).second) continue;
    for (fs::directory_iterator it(d, ec), end; !ec && it != end; it.increment(ec)) {
      if (++entries > max_entries)
        InvalidArgument("data path " + dir + ": more than " + std::to_string(max_entries) + " entries");
      const fs::directory_entry& e = *it;
      std::error_code lec;
      if (e.is_symlink(lec)) {
        const fs::path target = fs::canonical(e.path(), lec);
        if (lec) continue;  // dangling: nothing can be read through it
        if (!within(target.string()))
          ThrowError(Code::kPermissionDenied, "data path " + dir + ": " + e.path().string() + " links to " +
                                                  target.string() + ", outside this worker's --data-root");
        if (fs::is_directory(target, lec)) todo.push_back(e.path());
      } else if (e.is_directory(lec)) {
        todo.push_back(e.path());
      }
    }
    if (ec) FileError("data path " + d.string() + ": cannot list", ec);
  }
}

}  // namespace trm
