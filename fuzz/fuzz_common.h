// Shared by the fuzz targets (fuzz/*_fuzz.cpp) and their corpus replay (fuzz/replay_main.cpp).
// A target swallows trm::Error, the project's documented failure for bad input
// (docs/error-policy.md), except kInternal, which marks a broken invariant of ours. Anything else
// (another exception type, a failed FUZZ_CHECK, a sanitizer report) is a finding.
#pragma once

#include <cstdio>
#include <cstdlib>

#include "trm/common/error.h"

// An invariant the code under test promises; aborts (a libFuzzer crash) when it does not hold.
#define FUZZ_CHECK(cond)                                                               \
  do {                                                                                 \
    if (!(cond)) {                                                                     \
      std::fprintf(stderr, "%s:%d: FUZZ_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                                    \
    }                                                                                  \
  } while (0)

namespace trm::fuzz {

// For the catch (const trm::Error&) of a target: expected errors return, kInternal aborts.
inline void ExpectedError(const trm::Error& e) {
  if (e.code() == trm::Code::kInternal) {
    std::fprintf(stderr, "kInternal error (a bug by the error policy): %s\n", e.what());
    std::abort();
  }
}

}  // namespace trm::fuzz
