// LibTorch side of safetensors: tensors out of a SafetensorsFile and back to disk.
#pragma once

#include <ATen/Tensor.h>

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "trm/model/safetensors.h"

namespace trm::model {

// Copies the named tensor into a new, owned, contiguous CPU tensor.
at::Tensor ToTorch(const TensorView& view);
at::Tensor LoadTensor(const SafetensorsFile& file, const std::string& name);

// Writes CPU or device tensors (copied to contiguous CPU first) atomically to `path`.
void SaveTensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                 const std::map<std::string, std::string>& metadata = {});

}  // namespace trm::model
