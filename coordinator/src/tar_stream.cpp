#include "tar_stream.h"

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "trm/common/error.h"

namespace trm::coordinator {
namespace {

constexpr size_t kBlock = 512;

uint64_t Padded(uint64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }

void Octal(char* field, size_t width, uint64_t v) {  // width - 1 digits and a NUL
  std::snprintf(field, width, "%0*llo", static_cast<int>(width - 1), static_cast<unsigned long long>(v));
}

// Name and prefix fields: the path split at a '/' so that each part fits.
void SetName(char* header, const std::string& path) {
  if (path.size() <= 100) {
    std::memcpy(header, path.data(), path.size());
    return;
  }
  for (size_t slash = path.find('/'); slash != std::string::npos; slash = path.find('/', slash + 1)) {
    if (slash <= 155 && path.size() - slash - 1 <= 100) {
      std::memcpy(header + 345, path.data(), slash);
      std::memcpy(header, path.data() + slash + 1, path.size() - slash - 1);
      return;
    }
  }
  InvalidArgument("checkpoint file '" + path + "': too long a path for a tar header");
}

std::vector<char> Header(const std::string& path, uint64_t size) {
  std::vector<char> h(kBlock, '\0');
  SetName(h.data(), path);
  Octal(&h[100], 8, 0644);
  Octal(&h[108], 8, 0);
  Octal(&h[116], 8, 0);
  if (size < (uint64_t{1} << 33)) {
    Octal(&h[124], 12, size);
  } else {  // base-256: the top bit set, the size big-endian in the rest
    h[124] = static_cast<char>(0x80);
    for (int i = 0; i < 8; ++i) h[135 - i] = static_cast<char>((size >> (8 * i)) & 0xff);
  }
  Octal(&h[136], 12, 0);  // mtime: the archive is the same bytes every time
  h[156] = '0';
  std::memcpy(&h[257], "ustar", 6);
  std::memcpy(&h[263], "00", 2);
  std::memset(&h[148], ' ', 8);
  unsigned sum = 0;
  for (char c : h) sum += static_cast<unsigned char>(c);
  std::snprintf(&h[148], 8, "%06o", sum);  // six digits, NUL, then the space already there
  h[155] = ' ';
  return h;
}

}  // namespace

uint64_t TarSize(const FileSet& files, const std::string& prefix) {
  uint64_t n = 2 * kBlock;
  for (const auto& f : files.manifest.files()) {
    Header(prefix + "/" + f.path(), f.size());
    const std::string src = files.dir + "/" + f.path();
    std::error_code ec;
    const uint64_t size = std::filesystem::file_size(src, ec);
    if (ec) ThrowError(Code::kNotFound, src + ": missing (the checkpoint was deleted meanwhile?)");
    if (size != f.size())
      ThrowError(Code::kDataLoss, src + ": " + std::to_string(size) + " bytes, its manifest says " + std::to_string(f.size()));
    n += kBlock + Padded(f.size());
  }
  return n;
}

bool WriteTar(const FileSet& files, const std::string& prefix, const std::function<bool(const char*, size_t)>& write) {
  std::vector<char> buf(1 << 20);
  for (const auto& f : files.manifest.files()) {
    const std::string src = files.dir + "/" + f.path();
    std::ifstream in(src, std::ios::binary);
    if (!in) ThrowError(Code::kNotFound, src + ": missing (the checkpoint was deleted meanwhile?)");
    const std::vector<char> h = Header(prefix + "/" + f.path(), f.size());
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
