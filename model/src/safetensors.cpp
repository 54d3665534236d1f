#include "trm/model/safetensors.h"

#include <algorithm>
#include <cstring>

#include <nlohmann/json.hpp>

#include "trm/common/error.h"
#include "trm/common/file_util.h"

namespace trm::model {
namespace {

using nlohmann::json;

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "safetensors data is little-endian");

// The reference implementation's limit; a larger header is a corrupt or hostile file.
constexpr uint64_t kMaxHeaderBytes = 100u * 1024 * 1024;

struct DTypeInfo {
  const char* name;
  DType dtype;
  size_t size;
};
constexpr DTypeInfo kDTypes[] = {
    {"F64", DType::kF64, 8}, {"F32", DType::kF32, 4}, {"F16", DType::kF16, 2},
    {"BF16", DType::kBF16, 2}, {"I64", DType::kI64, 8}, {"I32", DType::kI32, 4},
    {"I16", DType::kI16, 2}, {"I8", DType::kI8, 1}, {"U8", DType::kU8, 1},
    {"BOOL", DType::kBool, 1},
};

const DTypeInfo& Info(DType t) {
  for (const auto& i : kDTypes)
    if (i.dtype == t) return i;
  Internal("unknown DType");
}

[[noreturn]] void Bad(const std::string& file, const std::string& what) {
  DataLoss(file + ": invalid safetensors: " + what);
}

uint64_t GetU64(const json& v, const std::string& file, const std::string& field) {
  if (!v.is_number_unsigned() && !(v.is_number_integer() && v.get<int64_t>() >= 0)) {
    Bad(file, field + ": expected a non-negative integer, got " + v.dump());
  }
  return v.get<uint64_t>();
}

// One tensor's header entry, checked against the data section; `range` gets its data offsets.
TensorView ParseTensorEntry(const json& h, const std::string& name, const std::string& tname, const uint8_t* body,
                            uint64_t body_size, std::pair<uint64_t, uint64_t>* range) {
  const std::string field = "tensor '" + tname + "'";
  if (!h.is_object()) Bad(name, field + ": expected an object with dtype, shape, data_offsets");
  if (!h.contains("dtype") || !h["dtype"].is_string()) Bad(name, field + ": missing or non-string dtype");
  const std::string dt = h["dtype"].get<std::string>();
  const DTypeInfo* info = nullptr;
  for (const auto& i : kDTypes)
    if (dt == i.name) info = &i;
  if (!info) Bad(name, field + ": unknown dtype '" + dt + "' (expected F64, F32, F16, BF16, I64, I32, I16, I8, U8 or BOOL)");
  if (!h.contains("shape") || !h["shape"].is_array()) Bad(name, field + ": missing or non-array shape");
  TensorView view;
  view.dtype = info->dtype;
  uint64_t numel = 1;
  bool overflow = false;
  for (const auto& d : h["shape"]) {
    uint64_t dim = GetU64(d, name, field + ".shape");
    // Shapes are int64 (TensorView, LibTorch): dims and the running product must fit.
    if (dim > static_cast<uint64_t>(INT64_MAX)) Bad(name, field + ".shape: dimension " + std::to_string(dim) + " exceeds int64");
    if (dim != 0 && numel > static_cast<uint64_t>(INT64_MAX) / dim) overflow = true;
    numel *= dim;
    view.shape.push_back(static_cast<int64_t>(dim));
  }
  if (overflow || numel > body_size / info->size) {
    Bad(name, field + ": shape needs more bytes than the file's data section holds (" +
                  std::to_string(body_size) + " bytes)");
  }
  const uint64_t nbytes = numel * info->size;
  if (!h.contains("data_offsets") || !h["data_offsets"].is_array() || h["data_offsets"].size() != 2) {
    Bad(name, field + ": data_offsets must be an array [begin, end]");
  }
  uint64_t begin = GetU64(h["data_offsets"][0], name, field + ".data_offsets[0]");
  uint64_t end = GetU64(h["data_offsets"][1], name, field + ".data_offsets[1]");
  if (begin > end) Bad(name, field + ": data_offsets begin " + std::to_string(begin) + " > end " + std::to_string(end));
  if (end > body_size) {
    Bad(name, field + ": data_offsets end " + std::to_string(end) + " is past the data section (" +
                  std::to_string(body_size) + " bytes): truncated file?");
  }
  if (end - begin != nbytes) {
    Bad(name, field + ": data_offsets span " + std::to_string(end - begin) + " bytes but dtype " + dt +
                  " and shape need " + std::to_string(nbytes));
  }
  for (const auto& k : h.items()) {
    if (k.key() != "dtype" && k.key() != "shape" && k.key() != "data_offsets")
      Bad(name, field + ": unknown field '" + k.key() + "'");
  }
  view.data = body + begin;
  view.nbytes = nbytes;
  *range = {begin, end};
  return view;
}

// Tensors must not overlap (a writer bug or a crafted file aliasing two tensors).
void CheckNoOverlap(const std::string& name, const std::vector<std::pair<uint64_t, uint64_t>>& ranges,
                    const std::vector<std::string>& range_names) {
  std::vector<size_t> order(ranges.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t c) { return ranges[a] < ranges[c]; });
  for (size_t i = 1; i < order.size(); ++i) {
    const auto& prev = ranges[order[i - 1]];
    const auto& cur = ranges[order[i]];
    if (cur.first < prev.second && cur.first != cur.second && prev.first != prev.second) {
      Bad(name, "tensors '" + range_names[order[i - 1]] + "' and '" + range_names[order[i]] +
                    "' overlap in the data section");
    }
  }
}

}  // namespace

size_t DTypeSize(DType t) { return Info(t).size; }
const char* DTypeName(DType t) { return Info(t).name; }

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsFile SafetensorsFile::Open(const std::string& path) { return Parse(ReadFile(path), path); }

SafetensorsFile SafetensorsFile::Parse(std::string bytes, const std::string& name) {
  SafetensorsFile f;
  f.name_ = name;
  auto owned = std::make_shared<const std::string>(std::move(bytes));
  const std::string& b = *owned;
  if (b.size() < 8) {
    Bad(name, "file is " + std::to_string(b.size()) + " bytes, too short for the 8-byte header length");
  }
  uint64_t n = 0;
  std::memcpy(&n, b.data(), 8);
  if (n > kMaxHeaderBytes) Bad(name, "header length " + std::to_string(n) + " exceeds the 100 MiB limit");
  if (n > b.size() - 8) {
    Bad(name, "header length " + std::to_string(n) + " runs past the end of the file (" +
                  std::to_string(b.size()) + " bytes): truncated file?");
  }
  json header;
  try {
    header = json::parse(b.begin() + 8, b.begin() + 8 + static_cast<std::ptrdiff_t>(n));
  } catch (const json::exception& e) {
    Bad(name, std::string("header is not valid JSON: ") + e.what());
  }
  if (!header.is_object()) Bad(name, "header is not a JSON object");
  const uint8_t* body = reinterpret_cast<const uint8_t*>(b.data()) + 8 + n;
  const uint64_t body_size = b.size() - 8 - n;

  std::vector<std::pair<uint64_t, uint64_t>> ranges;  // for the overlap / coverage check
  std::vector<std::string> range_names;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& tname = it.key();
    const json& h = it.value();
    if (tname == "__metadata__") {
      if (!h.is_object()) Bad(name, "__metadata__: expected an object of strings");
      for (auto m = h.begin(); m != h.end(); ++m) {
        if (!m.value().is_string()) Bad(name, "__metadata__." + m.key() + ": expected a string value");
        f.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    std::pair<uint64_t, uint64_t> range;
    f.index_.emplace(tname, ParseTensorEntry(h, name, tname, body, body_size, &range));
    ranges.push_back(range);
    range_names.push_back(tname);
  }
  CheckNoOverlap(name, ranges, range_names);
  f.bytes_ = std::move(owned);
  return f;
}

const TensorView& SafetensorsFile::Get(const std::string& tensor) const {
  auto it = index_.find(tensor);
  if (it == index_.end()) NotFound(name_ + ": no tensor named '" + tensor + "'");
  return it->second;
}

std::vector<std::string> SafetensorsFile::Names() const {
  std::vector<std::string> out;
  out.reserve(index_.size());
  for (const auto& kv : index_) out.push_back(kv.first);
  return out;
}

std::string SerializeSafetensors(const std::vector<TensorToWrite>& tensors,
                                 const std::map<std::string, std::string>& metadata) {
  std::vector<const TensorToWrite*> sorted;
  for (const auto& t : tensors) sorted.push_back(&t);
  std::sort(sorted.begin(), sorted.end(), [](auto* a, auto* b) { return a->name < b->name; });
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  uint64_t offset = 0;
  std::vector<size_t> sizes;
  for (size_t i = 0; i < sorted.size(); ++i) {
    const TensorToWrite& t = *sorted[i];
    if (i > 0 && sorted[i - 1]->name == t.name) InvalidArgument("safetensors: duplicate tensor name '" + t.name + "'");
    if (t.name == "__metadata__") InvalidArgument("safetensors: '__metadata__' is reserved");
    uint64_t numel = 1;
    for (int64_t d : t.shape) {
      if (d < 0) InvalidArgument("safetensors: tensor '" + t.name + "' has a negative dimension");
      numel *= static_cast<uint64_t>(d);
    }
    size_t nbytes = numel * DTypeSize(t.dtype);
    header[t.name] = {{"dtype", DTypeName(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
    sizes.push_back(nbytes);
  }
  std::string h = header.dump();
  while ((8 + h.size()) % 8 != 0) h.push_back(' ');
  std::string out;
  out.reserve(8 + h.size() + offset);
  uint64_t n = h.size();
  out.append(reinterpret_cast<const char*>(&n), 8);
  out += h;
  for (size_t i = 0; i < sorted.size(); ++i) {
    if (sizes[i]) out.append(static_cast<const char*>(sorted[i]->data), sizes[i]);
  }
  return out;
}

void WriteSafetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                      const std::map<std::string, std::string>& metadata) {
  WriteFileAtomic(path, SerializeSafetensors(tensors, metadata));
}

}  // namespace trm::model
