// Data-parallel communication between the ranks of one training run: a narrow interface
// (all-reduce, broadcast, barrier), each call bounded by the timeout it was created with.
// Implementations sit on LibTorch's c10d: ProcessGroupGloo for CPU tensors, ProcessGroupNCCL for
// CUDA tensors (built when the LibTorch found has CUDA); CreateCollective is the one place that
// chooses. Rendezvous is a c10d TCPStore hosted by rank 0 at MASTER_ADDR:MASTER_PORT.
//
// Contract: every rank calls the same collectives in the same order with tensors of the same
// shape. A call that does not complete within the timeout (a dead or stuck peer) throws
// trm::Error(kDeadlineExceeded); a broken connection throws kUnavailable. Not thread-safe: one
// thread per rank drives its Collective.
#pragma once

#include <ATen/Tensor.h>

#include <chrono>
#include <memory>
#include <string>

namespace trm::worker {

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  virtual const char* backend() const = 0;
  // In place: t = sum over ranks of t.
  virtual void AllReduceSum(at::Tensor& t) = 0;
  // The same, started without waiting: Wait() on the result finishes it (bounded by the
  // timeout, errors as above). `t` must stay alive and untouched until then, and every rank must
  // start the same reductions in the same order. May be called from the autograd thread while
  // the driving thread is inside backward().
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void Wait() = 0;
  };
  virtual std::unique_ptr<Pending> StartAllReduceSum(at::Tensor& t) = 0;
  // In place: t = root's t.
  virtual void Broadcast(at::Tensor& t, int root) = 0;
  virtual void Barrier() = 0;
};

struct CollectiveOptions {
  int rank = 0;
  int world = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::chrono::milliseconds timeout{std::chrono::seconds(300)};
  std::string backend = "auto";  // auto (nccl for cuda, gloo otherwise) | gloo | nccl
  bool cuda = false;             // tensors live on the GPU (LOCAL_RANK's device)
  int device_index = 0;          // that GPU (LOCAL_RANK), when cuda
};

// torchrun's environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT, and TRM_COLLECTIVE_TIMEOUT_S
// (default 300). Throws InvalidArgument naming a malformed variable.
CollectiveOptions CollectiveOptionsFromEnv();

// Connects to the other ranks (blocking up to options.timeout). Throws kDeadlineExceeded when
// they do not all arrive, InvalidArgument for an unavailable backend.
std::unique_ptr<Collective> CreateCollective(const CollectiveOptions& options);

}  // namespace trm::worker
