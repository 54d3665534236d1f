// The c10d-backed Collective shared by the Gloo and NCCL factories (private to worker/).
#pragma once

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "trm/common/error.h"
#include "trm/worker/collective.h"

namespace trm::worker {

// Turns a c10d / Gloo / NCCL exception into trm::Error (kDeadlineExceeded for timeouts,
// kUnavailable otherwise) naming `what`.
[[noreturn]] void RethrowCollectiveError(const std::string& what, const std::exception& e);

template <typename Fn>
auto GuardCollective(const std::string& what, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    RethrowCollectiveError(what, e);
  }
}

class C10dCollective : public Collective {
 public:
  C10dCollective(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<c10d::ProcessGroup> pg,
                 const CollectiveOptions& options, const char* backend);
  int rank() const override { return opt_.rank; }
  int world() const override { return opt_.world; }
  const char* backend() const override { return backend_; }
  void AllReduceSum(at::Tensor& t) override;
  std::unique_ptr<Pending> StartAllReduceSum(at::Tensor& t) override;
  void Broadcast(at::Tensor& t, int root) override;
  void Barrier() override;

 private:
  class C10dPending;
  void Wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what);
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::ProcessGroup> pg_;
  CollectiveOptions opt_;
  const char* backend_;
};

// Rendezvous: the TCPStore every rank connects to (rank 0 serves it).
c10::intrusive_ptr<c10d::Store> ConnectStore(const CollectiveOptions& options);

std::unique_ptr<Collective> CreateGlooCollective(const CollectiveOptions& options);
std::unique_ptr<Collective> CreateNcclCollective(const CollectiveOptions& options);  // CUDA builds only

}  // namespace trm::worker
