// Fuzz target: the safetensors reader (model/src/safetensors.cpp, torch-free).
// Promise under test (safetensors.h): a malformed file is trm::Error(kDataLoss), never a crash, and
// every exposed TensorView is consistent (non-negative dims, nbytes = numel * dtype size, data
// inside the file). Accepted files must also survive a write / re-read round trip unchanged.
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "fuzz_common.h"
#include "trm/model/safetensors.h"

using trm::model::DTypeName;
using trm::model::DTypeSize;
using trm::model::SafetensorsFile;
using trm::model::TensorToWrite;
using trm::model::TensorView;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  SafetensorsFile f;
  try {
    f = SafetensorsFile::Parse(std::string(reinterpret_cast<const char*>(data), size), "fuzz.safetensors");
  } catch (const trm::Error& e) {
    trm::fuzz::ExpectedError(e);
    return 0;
  }
  // Everything below must hold for an accepted file; an error here is a finding too.
  const std::vector<std::string> names = f.Names();
  std::vector<TensorToWrite> tensors;
  uint64_t total = 0;
  for (const std::string& name : names) {
    FUZZ_CHECK(f.Has(name));
    const TensorView& v = f.Get(name);
    FUZZ_CHECK(DTypeName(v.dtype) != nullptr);
    for (int64_t d : v.shape) FUZZ_CHECK(d >= 0);
    FUZZ_CHECK(static_cast<uint64_t>(v.numel()) * DTypeSize(v.dtype) == v.nbytes);
    total += v.nbytes;
    FUZZ_CHECK(total <= size);  // tensors do not overlap, so they fit in the file together
    // Touch every byte: ASan reports a view that points outside the owned image.
    uint8_t x = 0;
    for (size_t i = 0; i < v.nbytes; ++i) x ^= v.data[i];
    (void)x;
    tensors.push_back({name, v.dtype, v.shape, v.data});
  }
  const std::string image = trm::model::SerializeSafetensors(tensors, f.metadata());
  const SafetensorsFile g = SafetensorsFile::Parse(image, "roundtrip.safetensors");
  FUZZ_CHECK(g.Names() == names);
  FUZZ_CHECK(g.metadata() == f.metadata());
  for (const std::string& name : names) {
    const TensorView& a = f.Get(name);
    const TensorView& b = g.Get(name);
    FUZZ_CHECK(a.dtype == b.dtype && a.shape == b.shape && a.nbytes == b.nbytes);
    FUZZ_CHECK(a.nbytes == 0 || std::memcmp(a.data, b.data, a.nbytes) == 0);
  }
  return 0;
}
