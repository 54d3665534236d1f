// The NCCL factory of a LibTorch without CUDA (Debian's): a clear error instead of a link failure.
#include "c10d_collective.h"
#include "trm/common/error.h"

namespace trm::worker {

std::unique_ptr<Collective> CreateNcclCollective(const CollectiveOptions&) {
  InvalidArgument("collective backend nccl: this build's LibTorch has no CUDA; use gloo");
}

}  // namespace trm::worker
