// Paths a request names, confined to directories an operator allowed (trm-worker --data-root).
// Two checks: the coordinator's, by the words of the path (it cannot see the workers' disks),
// and the worker's, after symlinks are followed (what is actually opened).
#pragma once

#include <string>
#include <vector>

namespace trm {

// `path` absolute, '.', '..' and repeated '/' resolved by the words alone, no trailing '/'.
// Throws kInvalidArgument naming `field` for a relative, empty or oversized path.
std::string NormalAbsolutePath(const std::string& path, const std::string& field);

// Both normal absolute paths: is `path` `root` or below it (whole components: /data2 is not
// inside /data)?
bool PathWithin(const std::string& path, const std::string& root);

// A root as configured and as resolved: the coordinator matches paths against either form.
struct DataRoot {
  std::string given;     // normal absolute
  std::string resolved;  // symlinks followed
};
// Checks each --data-root (it must exist and be a directory; kInvalidArgument naming it).
std::vector<DataRoot> ResolveDataRoots(const std::vector<std::string>& roots);

// The path `path` resolves to (symlinks followed) when that lies within a root's resolved form;
// kPermissionDenied naming the path, what it resolves to and the roots otherwise, kNotFound when
// it does not exist. Roots empty: any existing path.
std::string ResolveWithinRoots(const std::string& path, const std::vector<DataRoot>& roots);

// Every symlink below `dir` (followed into the directories they reach, each once) must resolve
// within a root's resolved form: what a reader of the tree opens stays inside. kPermissionDenied
// naming the link and its target otherwise; kInvalidArgument past `max_entries` entries. Roots
// empty: nothing to check.
void CheckTreeWithinRoots(const std::string& dir, const std::vector<DataRoot>& roots, size_t max_entries = 1000000);

}  // namespace trm
