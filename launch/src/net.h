// Small socket helpers for the rendezvous.
#pragma once

#include <string>

#include "trm/common/net.h"

namespace trm::launch {

// Free ports come from trm::PickFreePort (trm/common/net.h); the launcher picks a new one for
// each generation, which keeps the window in which another process could take it short.
using trm::PickFreePort;

// True when a TCP connection to host:port succeeds within `timeout_ms` (the connection is
// closed at once). Used to wait for the rendezvous server without LibTorch's connect loop,
// which logs every refused attempt and cannot be interrupted.
bool CanConnect(const std::string& host, int port, int timeout_ms);

}  // namespace trm::launch
