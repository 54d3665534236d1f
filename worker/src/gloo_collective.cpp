// Gloo over TCP for CPU tensors.
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <cstdlib>

#include "c10d_collective.h"

namespace trm::worker {

std::unique_ptr<Collective> CreateGlooCollective(const CollectiveOptions& o) {
  auto store = ConnectStore(o);
  auto pg = GuardCollective("gloo process group", [&] {
    auto go = c10d::ProcessGroupGloo::Options::create();
    go->timeout = o.timeout;
    // The interface Gloo binds: GLOO_SOCKET_IFNAME as in PyTorch, else the one that reaches
    // MASTER_ADDR's host name (loopback for single-machine runs).
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname) {
      go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (o.master_addr == "127.0.0.1" || o.master_addr == "localhost") {
      go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
    } else {
      go->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    return c10::make_intrusive<c10d::ProcessGroupGloo>(store, o.rank, o.world, go);
  });
  return std::make_unique<C10dCollective<c10d::ProcessGroupGloo>>(store, pg, o, "gloo");
}

}  // namespace trm::worker
