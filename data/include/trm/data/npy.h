// NumPy .npy files of int32 (the reference dataset's arrays): a streaming writer whose bytes are
// what numpy.save writes (format 1.0, '<i4', C order, NumPy's header padding), and a read-only
// memory map that accepts any file numpy.save can produce for such an array.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace trm::data {

// The header numpy.save writes for an int32 C-order array of `shape` (a multiple of 64 bytes).
std::string NpyHeader(const std::vector<int64_t>& shape);

// Writes `path` (created or truncated). Not thread-safe. Destroying an unclosed writer closes the
// file without the size check (an error path: the caller removes the file).
class NpyInt32Writer {
 public:
  NpyInt32Writer(const std::string& path, std::vector<int64_t> shape);
  ~NpyInt32Writer();
  NpyInt32Writer(const NpyInt32Writer&) = delete;
  NpyInt32Writer& operator=(const NpyInt32Writer&) = delete;

  void Write(const int32_t* values, size_t count);
  // Checks that exactly prod(shape) values were written (else Internal), flushes and fsyncs.
  // Returns the SHA-256 (hex) of the whole file.
  std::string Close();

 private:
  struct Impl;
  Impl* impl_;
};

// Read-only view of an int32 .npy, memory-mapped: pages are loaded on access, so a dataset larger
// than RAM works. Move-only; the mapping lives as long as the object. Thread-safe to read.
class NpyInt32Array {
 public:
  // Throws NotFound (no file) or DataLoss naming `path` and what is wrong (not .npy, dtype other
  // than int32, Fortran order, size not matching the header).
  static NpyInt32Array Open(const std::string& path);

  NpyInt32Array(NpyInt32Array&& other) noexcept;
  NpyInt32Array& operator=(NpyInt32Array&& other) noexcept;
  NpyInt32Array(const NpyInt32Array&) = delete;
  NpyInt32Array& operator=(const NpyInt32Array&) = delete;
  ~NpyInt32Array();

  const std::vector<int64_t>& shape() const { return shape_; }
  const int32_t* data() const { return data_; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  NpyInt32Array() = default;
  std::string path_;
  std::vector<int64_t> shape_;
  const int32_t* data_ = nullptr;
  size_t size_ = 0;
  void* map_ = nullptr;
  size_t map_len_ = 0;
};

}  // namespace trm::data
