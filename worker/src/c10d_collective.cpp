#include "c10d_collective.h"

#include <cstdlib>
#include <string>

#include "trm/common/error.h"
#include "trm/common/torch_compat.h"

namespace trm::worker {
namespace {

int EnvInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  char* end = nullptr;
  long x = std::strtol(v, &end, 10);
  if (*end != '\0' || x < 0 || x > 1 << 30) InvalidArgument(std::string("environment variable ") + name + "='" + v + "': expected a non-negative integer");
  return static_cast<int>(x);
}

}  // namespace

void RethrowCollectiveError(const std::string& what, const std::exception& e) {
  const std::string msg = e.what();
  const bool timeout = msg.find("imed out") != std::string::npos || msg.find("imeout") != std::string::npos;
  ThrowError(timeout ? Code::kDeadlineExceeded : Code::kUnavailable,
             what + (timeout ? " timed out (a peer rank died or is stuck): " : " failed: ") +
                 msg.substr(0, msg.find('\n')));
}

CollectiveOptions CollectiveOptionsFromEnv() {
  CollectiveOptions o;
  o.rank = EnvInt("RANK", 0);
  o.world = EnvInt("WORLD_SIZE", 1);
  if (o.world < 1 || o.rank >= o.world) {
    InvalidArgument("environment: RANK=" + std::to_string(o.rank) + " must be below WORLD_SIZE=" + std::to_string(o.world));
  }
  if (const char* a = std::getenv("MASTER_ADDR"); a && *a) o.master_addr = a;
  o.master_port = EnvInt("MASTER_PORT", 29500);
  if (o.master_port == 0 || o.master_port > 65535) InvalidArgument("environment variable MASTER_PORT: expected a port number");
  o.timeout = std::chrono::seconds(EnvInt("TRM_COLLECTIVE_TIMEOUT_S", 300));
  return o;
}

c10::intrusive_ptr<c10d::Store> ConnectStore(const CollectiveOptions& o) {
  const std::string where = "rendezvous at " + o.master_addr + ":" + std::to_string(o.master_port) + " (rank " +
                            std::to_string(o.rank) + " of " + std::to_string(o.world) + ")";
  return GuardCollective(where, [&] {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(o.master_port);
    so.isServer = o.rank == 0;
    so.numWorkers = static_cast<size_t>(o.world);
    so.waitWorkers = true;
    so.timeout = o.timeout;
    compat::UseClassicTcpStore(so);
    return c10::intrusive_ptr<c10d::Store>(c10::make_intrusive<c10d::TCPStore>(o.master_addr, so));
  });
}

std::unique_ptr<Collective> CreateCollective(const CollectiveOptions& options) {
  std::string b = options.backend;
  if (b == "auto") b = options.cuda ? "nccl" : "gloo";
  if (b == "gloo") return CreateGlooCollective(options);
  if (b == "nccl") return CreateNcclCollective(options);
  InvalidArgument("collective backend '" + options.backend + "': expected auto, gloo or nccl");
}

}  // namespace trm::worker
