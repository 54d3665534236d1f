// The worker tests' main: process-wide settings are applied once at start, as trm-train does,
// not by each Trainer. The tiny runs use threads=1 (TinyRunOverrides in test_dataset.h).
#include <gtest/gtest.h>

#include "trm/worker/thread_pools.h"

int main(int argc, char** argv) {
  trm::worker::ApplyThreads(1);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
