// The worker tests' main: the thread pools are sized before any tensor work, as trm-train's
// ConfigureTrainingProcess does (1: the tiny runs use threads=1, TinyRunOverrides in
// test_dataset.h). A test that builds a Trainer makes all of trm-train's process-start settings
// before it (AtProcessStart, training_process.h).
#include <gtest/gtest.h>

#include "trm/worker/thread_pools.h"

int main(int argc, char** argv) {
  trm::worker::ApplyThreads(1);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
