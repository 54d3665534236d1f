// Gloo over TCP for CPU tensors.
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>

#include <cstdlib>
#include <sstream>
#include <string>
#include <vector>

#include "c10d_collective.h"
#include "trm/common/error.h"
#include "trm/common/net.h"

namespace trm::worker {
namespace {

// The transport devices Gloo binds; each rank advertises their addresses to its peers through
// the store, so they must be reachable from every other host of the run.
std::vector<std::shared_ptr<::gloo::transport::Device>> GlooDevices(const CollectiveOptions& o) {
  std::vector<std::shared_ptr<::gloo::transport::Device>> devices;
  // GLOO_SOCKET_IFNAME as in PyTorch: one interface, or several separated by commas.
  if (const char* env = std::getenv("GLOO_SOCKET_IFNAME"); env && *env) {
    std::stringstream names(env);
    for (std::string name; std::getline(names, name, ',');) {
      try {
        devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(name));
      } catch (const std::exception& e) {
        const std::string why = e.what();
        InvalidArgument("environment variable GLOO_SOCKET_IFNAME='" + std::string(env) + "': interface '" + name +
                        "' is not a usable network interface of this host (" + why.substr(0, why.find('\n')) + ")");
      }
    }
    if (devices.empty()) InvalidArgument("environment variable GLOO_SOCKET_IFNAME: expected interface names");
    return devices;
  }
  // Not Gloo's default (the address the host name resolves to): that is often 127.0.0.1 or
  // 127.0.1.1, which ranks on other machines cannot reach. The address this host reaches
  // MASTER_ADDR from is on a network every rank shares (and is loopback when MASTER_ADDR is).
  devices.push_back(
      c10d::ProcessGroupGloo::createDeviceForHostname(LocalAddressToward(o.master_addr, o.master_port)));
  return devices;
}

}  // namespace

std::unique_ptr<Collective> CreateGlooCollective(const CollectiveOptions& o) {
  auto store = ConnectStore(o);
  auto go = c10d::ProcessGroupGloo::Options::create();
  go->timeout = o.timeout;
  go->devices = GuardCollective("gloo transport", [&] { return GlooDevices(o); });
  auto pg = GuardCollective("gloo process group",
                            [&] { return c10::make_intrusive<c10d::ProcessGroupGloo>(store, o.rank, o.world, go); });
  return std::make_unique<C10dCollective<c10d::ProcessGroupGloo>>(store, pg, o, "gloo");
}

}  // namespace trm::worker
