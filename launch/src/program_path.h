// Finds the executable trm-launch runs, the way execvp would, plus the launcher's own directory.
#pragma once

#include <string>

namespace trm::launch {

// A PROGRAM containing '/' is used as given (relative to the working directory). A bare name is
// looked up first in the directory of the running trm-launch binary, so `trm-launch trm-train`
// finds the trm-train built next to it without PATH changes, then in each PATH entry (an empty
// entry is the working directory; PATH unset means /usr/local/bin:/usr/bin:/bin).
// `self_exe` is the launcher's binary (empty: /proc/self/exe). Throws kNotFound when nothing
// executable matches, naming where it looked.
std::string ResolveProgram(const std::string& program, const std::string& self_exe = "");

}  // namespace trm::launch
