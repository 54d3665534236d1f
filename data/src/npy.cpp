#include "trm/data/npy.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "trm/common/sha256.h"
#include "trm/common/error.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the .npy arrays are '<i4': little-endian hosts only");

namespace trm::data {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;

std::string ShapeRepr(const std::vector<int64_t>& shape) {
  if (shape.size() == 1) return "(" + std::to_string(shape[0]) + ",)";
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + ")";
}

size_t Product(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= static_cast<size_t>(d);
  return n;
}

}  // namespace

std::string NpyHeader(const std::vector<int64_t>& shape) {
  // As numpy/lib/format.py (1.x) writes it: the dict repr, spare spaces so the first axis can
  // grow to 21 digits in place, then padding to a multiple of 64 bytes ending in '\n'.
  std::string dict = "{'descr': '<i4', 'fortran_order': False, 'shape': " + ShapeRepr(shape) + ", }";
  if (!shape.empty()) dict.append(21 - std::to_string(shape[0]).size(), ' ');
  const size_t hlen = dict.size() + 1;
  const size_t pad = 64 - ((kMagicLen + 2 + 2 + hlen) % 64);
  const size_t total = hlen + pad;
  std::string out(kMagic, kMagicLen);
  out.push_back('\x01');
  out.push_back('\x00');
  out.push_back(static_cast<char>(total & 0xFF));
  out.push_back(static_cast<char>(total >> 8));
  out += dict;
  out.append(pad, ' ');
  out.push_back('\n');
  return out;
}

struct NpyInt32Writer::Impl {
  std::string path;
  std::FILE* f = nullptr;
  size_t expected = 0, written = 0;
  trm::Sha256 sha;
  std::vector<char> buffer = std::vector<char>(size_t{1} << 20);

  void Put(const void* p, size_t n) {
    if (std::fwrite(p, 1, n, f) != n) FileError(path + ": write failed", errno);
    sha.Update(p, n);
  }
};

NpyInt32Writer::NpyInt32Writer(const std::string& path, std::vector<int64_t> shape) : impl_(new Impl) {
  impl_->path = path;
  impl_->expected = Product(shape);
  impl_->f = std::fopen(path.c_str(), "wb");
  if (impl_->f == nullptr) {
    const int err = errno;
    delete impl_;
    FileError(path + ": cannot create", err);
  }
  std::setvbuf(impl_->f, impl_->buffer.data(), _IOFBF, impl_->buffer.size());
  const std::string header = NpyHeader(shape);
  impl_->Put(header.data(), header.size());
}

NpyInt32Writer::~NpyInt32Writer() {
  if (impl_->f != nullptr) std::fclose(impl_->f);
  delete impl_;
}

void NpyInt32Writer::Write(const int32_t* values, size_t count) {
  impl_->Put(values, count * sizeof(int32_t));
  impl_->written += count;
}

std::string NpyInt32Writer::Close() {
  if (impl_->written != impl_->expected) {
    Internal(impl_->path + ": wrote " + std::to_string(impl_->written) + " values, the header says " +
             std::to_string(impl_->expected));
  }
  std::FILE* f = impl_->f;
  impl_->f = nullptr;
  const bool ok = std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  const int err = errno;
  if (std::fclose(f) != 0 || !ok) FileError(impl_->path + ": flush failed", err);
  return impl_->sha.HexDigest();
}

NpyInt32Array NpyInt32Array::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) NotFound(path + ": no such file");
    FileError(path + ": cannot open", errno);
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    FileError(path + ": cannot stat", errno);
  }
  const size_t len = static_cast<size_t>(st.st_size);
  void* map = len == 0 ? MAP_FAILED : ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd, 0);
  ::close(fd);
  if (len == 0) DataLoss(path + ": empty file, expected a .npy array");
  if (map == MAP_FAILED) FileError(path + ": mmap failed", errno);

  NpyInt32Array a;
  a.path_ = path;
  a.map_ = map;
  a.map_len_ = len;  // from here on the destructor unmaps, also when a check below throws
  const char* p = static_cast<const char*>(map);
  if (len < 10 || std::memcmp(p, kMagic, kMagicLen) != 0) DataLoss(path + ": not a .npy file (bad magic)");
  const int major = static_cast<unsigned char>(p[6]);
  size_t hlen, start;
  if (major == 1) {
    hlen = static_cast<unsigned char>(p[8]) | (size_t{static_cast<unsigned char>(p[9])} << 8);
    start = 10;
  } else if ((major == 2 || major == 3) && len >= 12) {
    hlen = 0;
    for (int i = 0; i < 4; ++i) hlen |= size_t{static_cast<unsigned char>(p[8 + i])} << (8 * i);
    start = 12;
  } else {
    DataLoss(path + ": unsupported .npy version " + std::to_string(major));
  }
  if (start + hlen > len) DataLoss(path + ": truncated header");
  const std::string header(p + start, hlen);
  auto value_of = [&](const std::string& key) -> std::string {
    const size_t k = header.find("'" + key + "'");
    if (k == std::string::npos) DataLoss(path + ": header lacks '" + key + "'");
    size_t v = header.find(':', k);
    if (v == std::string::npos) DataLoss(path + ": malformed header");
    ++v;
    while (v < header.size() && header[v] == ' ') ++v;
    size_t e = header[v] == '(' ? header.find(')', v) + 1 : header.find_first_of(",}", v);
    if (e == std::string::npos || e == 0) DataLoss(path + ": malformed header");
    return header.substr(v, e - v);
  };
  const std::string descr = value_of("descr");
  if (descr != "'<i4'") DataLoss(path + ": dtype " + descr + ", expected '<i4' (int32)");
  if (value_of("fortran_order") != "False") DataLoss(path + ": Fortran order, expected C order");
  const std::string shape = value_of("shape");
  for (size_t i = 1; i + 1 < shape.size();) {
    while (i + 1 < shape.size() && (shape[i] == ' ' || shape[i] == ',')) ++i;
    if (i + 1 >= shape.size()) break;
    size_t used = 0;
    try {
      a.shape_.push_back(std::stoll(shape.substr(i), &used));
    } catch (const std::exception&) {
      DataLoss(path + ": malformed shape " + shape);
    }
    i += used;
  }
  a.size_ = Product(a.shape_);
  const size_t data_off = start + hlen;
  if (len - data_off != a.size_ * sizeof(int32_t)) {
    DataLoss(path + ": " + std::to_string(len - data_off) + " data bytes, the shape " + shape + " needs " +
             std::to_string(a.size_ * sizeof(int32_t)) + " (truncated or corrupt)");
  }
  a.data_ = reinterpret_cast<const int32_t*>(p + data_off);
  return a;
}

NpyInt32Array::NpyInt32Array(NpyInt32Array&& o) noexcept
    : path_(std::move(o.path_)), shape_(std::move(o.shape_)), data_(o.data_), size_(o.size_),
      map_(o.map_), map_len_(o.map_len_) {
  o.map_ = nullptr;
  o.map_len_ = 0;
  o.data_ = nullptr;
  o.size_ = 0;
}

NpyInt32Array& NpyInt32Array::operator=(NpyInt32Array&& o) noexcept {
  if (this != &o) {
    if (map_ != nullptr) ::munmap(map_, map_len_);
    path_ = std::move(o.path_);
    shape_ = std::move(o.shape_);
    data_ = o.data_;
    size_ = o.size_;
    map_ = o.map_;
    map_len_ = o.map_len_;
    o.map_ = nullptr;
    o.map_len_ = 0;
    o.data_ = nullptr;
    o.size_ = 0;
  }
  return *this;
}

NpyInt32Array::~NpyInt32Array() {
  if (map_ != nullptr) ::munmap(map_, map_len_);
}

}  // namespace trm::data
