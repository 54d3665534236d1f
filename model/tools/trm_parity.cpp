// trm-parity FIXTURE.safetensors...: replays reference fixtures through the C++ model and prints
// the worst relative error per group; exits 1 when any fixture fails, 2 on unreadable input.
#include <cstdio>
#include <exception>

#include "trm/common/error.h"
#include "trm/model/parity.h"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: trm-parity FIXTURE.safetensors...\n");
    return 2;
  }
  int rc = 0;
  for (int i = 1; i < argc; ++i) {
    try {
      trm::model::ParityReport r = trm::model::RunParity(argv[i]);
      std::fputs(trm::model::FormatParityReport(r).c_str(), stdout);
      if (!r.ok()) rc = std::max(rc, 1);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "error: %s\n", e.what());
      rc = 2;
    }
  }
  return rc;
}
