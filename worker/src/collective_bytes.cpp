#include "collective_bytes.h"

#include <torch/torch.h>

namespace trm::worker {

void BroadcastBytes(Collective& comm, c10::Device device, char* data, int64_t n, int root) {
  if (n == 0) return;
  at::Tensor host = torch::from_blob(data, {n}, torch::kUInt8);
  at::Tensor t = device.is_cpu() ? host : host.to(device);
  comm.Broadcast(t, root);
  if (!device.is_cpu()) host.copy_(t.cpu());
}

std::string BroadcastString(Collective& comm, c10::Device device, std::string s, int root) {
  at::Tensor n = torch::full({1}, static_cast<int64_t>(s.size()), torch::kLong).to(device);
  comm.Broadcast(n, root);
  s.resize(static_cast<size_t>(n.cpu().item<int64_t>()));
  BroadcastBytes(comm, device, s.data(), static_cast<int64_t>(s.size()), root);
  return s;
}

}  // namespace trm::worker
