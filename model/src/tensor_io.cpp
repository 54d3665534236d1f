#include "trm/model/tensor_io.h"

#include <torch/torch.h>

#include <cstring>

#include "trm/common/error.h"

namespace trm::model {
namespace {

torch::Dtype ToTorchDtype(DType t) {
  switch (t) {
    case DType::kF64: return torch::kFloat64;
    case DType::kF32: return torch::kFloat32;
    case DType::kF16: return torch::kFloat16;
    case DType::kBF16: return torch::kBFloat16;
    case DType::kI64: return torch::kInt64;
    case DType::kI32: return torch::kInt32;
    case DType::kI16: return torch::kInt16;
    case DType::kI8: return torch::kInt8;
    case DType::kU8: return torch::kUInt8;
    case DType::kBool: return torch::kBool;
  }
  Internal("unhandled DType");
}

DType FromTorchDtype(torch::Dtype t, const std::string& name) {
  switch (t) {
    case torch::kFloat64: return DType::kF64;
    case torch::kFloat32: return DType::kF32;
    case torch::kFloat16: return DType::kF16;
    case torch::kBFloat16: return DType::kBF16;
    case torch::kInt64: return DType::kI64;
    case torch::kInt32: return DType::kI32;
    case torch::kInt16: return DType::kI16;
    case torch::kInt8: return DType::kI8;
    case torch::kUInt8: return DType::kU8;
    case torch::kBool: return DType::kBool;
    default: InvalidArgument("safetensors: tensor '" + name + "' has a dtype safetensors cannot store");
  }
}

}  // namespace

at::Tensor ToTorch(const TensorView& view) {
  auto t = torch::empty(view.shape, torch::TensorOptions().dtype(ToTorchDtype(view.dtype)));
  if (view.nbytes) std::memcpy(t.data_ptr(), view.data, view.nbytes);  // view.data may be unaligned
  return t;
}

at::Tensor LoadTensor(const SafetensorsFile& file, const std::string& name) { return ToTorch(file.Get(name)); }

void SaveTensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors,
                 const std::map<std::string, std::string>& metadata) {
  std::vector<at::Tensor> keep;  // owns the contiguous CPU copies while serialising
  std::vector<TensorToWrite> out;
  keep.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    keep.push_back(t.detach().to(torch::kCPU).contiguous());
    const at::Tensor& c = keep.back();
    out.push_back({name, FromTorchDtype(c.scalar_type(), name), c.sizes().vec(), c.data_ptr()});
  }
  WriteSafetensors(path, out, metadata);
}

}  // namespace trm::model
