#include "tar_stream.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "trm/common/error.h"
#include "trm/rpc/tar.h"

namespace trm::coordinator {
namespace {

constexpr size_t kBlock = rpc::kTarBlock;
uint64_t Padded(uint64_t n) { return rpc::TarPadded(n); }
std::string Header(const std::string& path, uint64_t size) { return rpc::TarHeader(path, size); }

}  // namespace

uint64_t TarSize(const FileSet& files, const std::string& prefix) {
  uint64_t n = 2 * kBlock;
  for (const auto& f : files.manifest.files()) {
    const uint64_t header = Header(prefix + "/" + f.path(), f.size()).size();
    const std::string src = files.dir + "/" + f.path();
    std::error_code ec;
    const uint64_t size = std::filesystem::file_size(src, ec);
    if (ec) ThrowError(Code::kNotFound, src + ": missing (the checkpoint was deleted meanwhile?)");
    if (size != f.size())
      ThrowError(Code::kDataLoss, src + ": " + std::to_string(size) + " bytes, its manifest says " + std::to_string(f.size()));
    n += header + Padded(f.size());
  }
  return n;
}

bool WriteTar(const FileSet& files, const std::string& prefix, const std::function<bool(const char*, size_t)>& write) {
  std::vector<char> buf(1 << 20);
  for (const auto& f : files.manifest.files()) {
    const std::string src = files.dir + "/" + f.path();
    std::ifstream in(src, std::ios::binary);
    if (!in) ThrowError(Code::kNotFound, src + ": missing (the checkpoint was deleted meanwhile?)");
    const std::string h = Header(prefix + "/" + f.path(), f.size());
    if (!write(h.data(), h.size())) return false;
    uint64_t left = f.size();
    while (left > 0) {
      in.read(buf.data(), static_cast<std::streamsize>(std::min<uint64_t>(left, buf.size())));
      const auto got = static_cast<uint64_t>(in.gcount());
      if (got == 0) ThrowError(Code::kDataLoss, src + ": shorter than its manifest's " + std::to_string(f.size()) + " bytes");
      if (!write(buf.data(), got)) return false;
      left -= got;
    }
    if (in.peek() != std::ifstream::traits_type::eof())
      ThrowError(Code::kDataLoss, src + ": longer than its manifest's " + std::to_string(f.size()) + " bytes");
    const size_t pad = Padded(f.size()) - f.size();
    if (pad > 0) {
      std::memset(buf.data(), 0, pad);
      if (!write(buf.data(), pad)) return false;
    }
  }
  std::memset(buf.data(), 0, 2 * kBlock);
  return write(buf.data(), 2 * kBlock);
}

}  // namespace trm::coordinator
