// NCCL for CUDA tensors; compiled only against a LibTorch with CUDA (worker/CMakeLists.txt).
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

#include "c10d_collective.h"

namespace trm::worker {

std::unique_ptr<Collective> CreateNcclCollective(const CollectiveOptions& o) {
  auto store = ConnectStore(o);
  auto pg = GuardCollective("nccl process group", [&] {
    auto no = c10d::ProcessGroupNCCL::Options::create();
    no->timeout = o.timeout;
    return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, o.rank, o.world, no);
  });
  return std::make_unique<C10dCollective<c10d::ProcessGroupNCCL>>(store, pg, o, "nccl");
}

}  // namespace trm::worker
