// A loader batch (host int32 buffers) as the model's tensors on a device; shared by the trainer
// and the evaluation.
#pragma once

#include <torch/torch.h>

#include "trm/data/batch_iterator.h"
#include "trm/model/trm.h"

namespace trm::worker {

inline model::Batch ToModelBatch(const data::Batch& b, torch::Device dev) {
  auto i32 = torch::TensorOptions().dtype(torch::kInt32);
  model::Batch mb;
  mb.inputs = torch::from_blob(const_cast<int32_t*>(b.inputs.data()), {b.rows, b.seq_len}, i32).clone().to(dev);
  mb.labels = torch::from_blob(const_cast<int32_t*>(b.labels.data()), {b.rows, b.seq_len}, i32).clone().to(dev);
  mb.puzzle_identifiers = torch::zeros({b.rows}, i32.device(dev));
  return mb;
}

}  // namespace trm::worker
