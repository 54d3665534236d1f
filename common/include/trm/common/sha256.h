// SHA-256 (OpenSSL's libcrypto), for content-addressed datasets and checkpoint manifests.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace trm {

// Incremental hasher. Not thread-safe; one per stream.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void Update(const void* data, size_t n);
  void Update(const std::string& s) { Update(s.data(), s.size()); }
  std::string HexDigest();  // finishes; the hasher is reset afterwards

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string Sha256Hex(const std::string& data);
// Streams the file; throws NotFound / IoError naming it.
std::string Sha256File(const std::string& path);

}  // namespace trm
