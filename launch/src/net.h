// Small socket helpers for the rendezvous.
#pragma once

#include <string>

namespace trm::launch {

// A TCP port that is free on every local address right now (bind to port 0, read it back,
// close). Another process may take it before it is used; the launcher picks a new one for each
// generation, which keeps that window short. Throws kUnavailable.
int PickFreePort();

// True when a TCP connection to host:port succeeds within `timeout_ms` (the connection is
// closed at once). Used to wait for the rendezvous server without LibTorch's connect loop,
// which logs every refused attempt and cannot be interrupted.
bool CanConnect(const std::string& host, int port, int timeout_ms);

}  // namespace trm::launch
