// Socket helpers shared by the launcher, the data-parallel tests and benchmarks.
#pragma once

namespace trm {

// A TCP port that is free on every local address right now (bind to port 0, read it back,
// close). Another process may take it before it is used, so callers use it at once. Throws
// trm::Error(kUnavailable).
int PickFreePort();

}  // namespace trm
