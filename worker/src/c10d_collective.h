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

// One Collective over a c10d process group of type PG (ProcessGroupGloo, ProcessGroupNCCL).
// Templated on the concrete group rather than holding its base class: that base is
// c10d::ProcessGroup in LibTorch 1.13 and c10d::Backend in 2.x, while the concrete groups'
// allreduce / broadcast / barrier are the same in both, so no version check is needed.
template <class PG>
class C10dCollective : public Collective {
 public:
  C10dCollective(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<PG> pg, const CollectiveOptions& options,
                 const char* backend)
      : store_(std::move(store)), pg_(std::move(pg)), opt_(options), backend_(backend) {}
  int rank() const override { return opt_.rank; }
  int world() const override { return opt_.world; }
  const char* backend() const override { return backend_; }

  void AllReduceSum(at::Tensor& t) override { Wait(StartAllReduce(t), "all-reduce"); }

  std::unique_ptr<Pending> StartAllReduceSum(at::Tensor& t) override {
    return std::make_unique<C10dPending>(this, StartAllReduce(t));
  }

  void Broadcast(at::Tensor& t, int root) override {
    std::vector<at::Tensor> v{t};
    c10d::BroadcastOptions bo;
    bo.rootRank = root;
    auto work = GuardCollective("broadcast", [&] { return pg_->broadcast(v, bo); });
    Wait(work, "broadcast");
  }

  void Barrier() override {
    c10d::BarrierOptions bo;
    // NCCL runs its barrier on a device; name this rank's instead of letting it guess from the rank.
    if (opt_.cuda) bo.device_ids = {opt_.device_index};
    auto work = GuardCollective("barrier", [&] { return pg_->barrier(bo); });
    Wait(work, "barrier");
  }

 private:
  class C10dPending : public Collective::Pending {
   public:
    C10dPending(C10dCollective* c, c10::intrusive_ptr<c10d::Work> work) : c_(c), work_(std::move(work)) {}
    void Wait() override { c_->Wait(work_, "all-reduce"); }

   private:
    C10dCollective* c_;
    c10::intrusive_ptr<c10d::Work> work_;
  };

  c10::intrusive_ptr<c10d::Work> StartAllReduce(at::Tensor& t) {
    std::vector<at::Tensor> v{t};
    return GuardCollective("all-reduce", [&] { return pg_->allreduce(v, c10d::AllreduceOptions()); });
  }

  void Wait(const c10::intrusive_ptr<c10d::Work>& work, const char* what) {
    GuardCollective(what, [&] { return work->wait(opt_.timeout); });
  }

  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<PG> pg_;
  CollectiveOptions opt_;
  const char* backend_;
};

// Rendezvous: the TCPStore every rank connects to (rank 0 serves it).
c10::intrusive_ptr<c10d::Store> ConnectStore(const CollectiveOptions& options);

std::unique_ptr<Collective> CreateGlooCollective(const CollectiveOptions& options);
std::unique_ptr<Collective> CreateNcclCollective(const CollectiveOptions& options);  // CUDA builds only

}  // namespace trm::worker
