// Bytes and strings through a Collective (checkpoint files, descriptions): uint8 tensors on the
// collective's device, since NCCL moves device memory only. Private to worker/.
#pragma once

#include <c10/core/Device.h>

#include <cstdint>
#include <string>

#include "trm/worker/collective.h"

namespace trm::worker {

// In place: data[0, n) = root's data[0, n). Every rank passes the same n.
void BroadcastBytes(Collective& comm, c10::Device device, char* data, int64_t n, int root = 0);

// Root's string to every rank (the others' `s` is ignored); lengths may differ.
std::string BroadcastString(Collective& comm, c10::Device device, std::string s, int root = 0);

}  // namespace trm::worker
