// Safetensors reading and writing, torch-free (fuzzable without LibTorch).
// Layout: 8-byte little-endian header length N, N bytes of JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}, then the data.
// Every header field is validated against the file before any tensor is exposed: a malformed
// file gives trm::Error(kDataLoss) naming the file and the field, never a crash.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace trm::model {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

size_t DTypeSize(DType t);
const char* DTypeName(DType t);  // the safetensors spelling: F32, I32, BOOL, ...

struct TensorView {
  DType dtype;
  std::vector<int64_t> shape;
  const uint8_t* data;  // points into the owning SafetensorsFile; not aligned in general
  size_t nbytes;
  int64_t numel() const;
};

class SafetensorsFile {
 public:
  // Reads and validates `path`. Throws NotFound / IoError / DataLoss naming the path.
  static SafetensorsFile Open(const std::string& path);
  // Validates an in-memory image; `name` is used in error messages.
  static SafetensorsFile Parse(std::string bytes, const std::string& name);

  bool Has(const std::string& tensor) const { return index_.count(tensor) != 0; }
  // Throws NotFound naming the file and tensor.
  const TensorView& Get(const std::string& tensor) const;
  // Tensor names in sorted order.
  std::vector<std::string> Names() const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::string& name() const { return name_; }

 private:
  std::string name_;
  std::shared_ptr<const std::string> bytes_;  // owns the data TensorViews point into
  std::map<std::string, TensorView> index_;
  std::map<std::string, std::string> metadata_;
};

struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  const void* data;  // nbytes = numel * DTypeSize(dtype), little-endian, contiguous
};

// Serialises tensors (sorted by name, header padded to 8 bytes as the reference writer does).
std::string SerializeSafetensors(const std::vector<TensorToWrite>& tensors,
                                 const std::map<std::string, std::string>& metadata);
// Atomically writes the serialised file (temporary name, fsync, rename).
void WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                      const std::map<std::string, std::string>& metadata);

}  // namespace trm::model
