#include "trm/rpc/tar.h"

#include <google/protobuf/util/json_util.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "trm/common/error.h"
#include "trm/common/file_util.h"
#include "trm/common/sha256.h"
#include "trm/rpc/transfer.h"

namespace fs = std::filesystem;

namespace trm::rpc {
namespace {

void Octal(char* field, size_t width, uint64_t v) {  // width - 1 digits and a NUL
  std::snprintf(field, width, "%0*llo", static_cast<int>(width - 1), static_cast<unsigned long long>(v));
}

// Name and prefix fields: the path split at a '/' so that each part fits. False when no split
// fits (the caller writes a GNU long-name member first).
bool SetName(char* header, const std::string& path) {
  if (path.size() <= 100) {
    std::memcpy(header, path.data(), path.size());
    return true;
  }
  for (size_t slash = path.find('/'); slash != std::string::npos; slash = path.find('/', slash + 1)) {
    if (slash <= 155 && path.size() - slash - 1 <= 100) {
      std::memcpy(header + 345, path.data(), slash);
      std::memcpy(header, path.data() + slash + 1, path.size() - slash - 1);
      return true;
    }
  }
  return false;
}

unsigned Checksum(const char* h) {
  unsigned sum = 0;
  for (size_t i = 0; i < kTarBlock; ++i) sum += (i >= 148 && i < 156) ? ' ' : static_cast<unsigned char>(h[i]);
  return sum;
}

// A NUL- or space-terminated octal field, or base-256 (top bit set). -1 when malformed.
int64_t ParseNumber(const char* field, size_t width) {
  if (static_cast<unsigned char>(field[0]) & 0x80) {
    uint64_t v = static_cast<unsigned char>(field[0]) & 0x7f;
    for (size_t i = 1; i < width; ++i) {
      if (v >> 55) return -1;
      v = (v << 8) | static_cast<unsigned char>(field[i]);
    }
    return static_cast<int64_t>(v);
  }
  int64_t v = 0;
  size_t i = 0;
  while (i < width && field[i] == ' ') ++i;
  bool digits = false;
  for (; i < width && field[i] >= '0' && field[i] <= '7'; ++i) {
    if (v >> 58) return -1;
    v = v * 8 + (field[i] - '0');
    digits = true;
  }
  for (; i < width; ++i)
    if (field[i] != '\0' && field[i] != ' ') return -1;
  return digits ? v : -1;
}

std::string ManifestJson(const v1::Manifest& m) {
  std::string out;
  google::protobuf::util::JsonPrintOptions o;
  o.add_whitespace = true;
  o.preserve_proto_field_names = true;
  if (!google::protobuf::util::MessageToJsonString(m, &out, o).ok()) Internal("manifest: cannot write JSON");
  return out;
}

// What an archive's manifest may hold: more files than a single transfer (a whole data
// directory), otherwise CheckManifest's rules.
void CheckArchiveManifest(const v1::Manifest& m, uint64_t max_total_bytes, const std::string& where) {
  uint64_t total = 0;
  std::vector<std::string> seen;
  for (int i = 0; i < m.files_size(); ++i) {
    const auto& f = m.files(i);
    CheckRelativePath(f.path(), where + "files[" + std::to_string(i) + "].path");
    if (f.sha256().size() != 64)
      DataLoss(where + "files[" + std::to_string(i) + "].sha256: expected 64 hex digits");
    total += f.size();
    seen.push_back(f.path());
  }
  std::sort(seen.begin(), seen.end());
  if (const auto d = std::adjacent_find(seen.begin(), seen.end()); d != seen.end())
    DataLoss(where + "the path " + *d + " appears twice");
  if (total != m.total_bytes())
    DataLoss(where + "total_bytes is " + std::to_string(m.total_bytes()) + " but the files add up to " +
             std::to_string(total));
  if (total > max_total_bytes)
    ThrowError(Code::kResourceExhausted,
               where + std::to_string(total) + " bytes exceeds the limit of " + std::to_string(max_total_bytes));
  if (m.content_sha256() != ContentHash(m)) DataLoss(where + "content_sha256 does not match its files");
}

class Out {
 public:
  explicit Out(std::string path) : path_(std::move(path)) {
    f_ = std::fopen(path_.c_str(), "wb");
    if (!f_) FileError(path_ + ": cannot create", errno);
  }
  ~Out() {
    if (f_) std::fclose(f_);
  }
  void Write(const void* p, size_t n) {
    if (n > 0 && std::fwrite(p, 1, n, f_) != n) FileError(path_ + ": write failed", errno);
  }
  void Zeros(size_t n) {
    static const char zero[kTarBlock] = {};
    while (n > 0) {
      const size_t k = std::min(n, kTarBlock);
      Write(zero, k);
      n -= k;
    }
  }
  void Close() {  // a full disk often shows only when the tail is flushed
    int err = 0;
    if (std::fflush(f_) != 0 || ::fsync(fileno(f_)) != 0) err = errno;
    if (std::fclose(f_) != 0 && err == 0) err = errno;
    f_ = nullptr;
    if (err) FileError(path_ + ": write failed", err);
  }

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
};

}  // namespace

namespace {

std::string OneHeader(const std::string& path, uint64_t size, char type) {
  std::string h(kTarBlock, '\0');
  if (!SetName(h.data(), path)) std::memcpy(h.data(), path.data(), 100);  // the long-name member has it
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
  h[156] = type;
  std::memcpy(&h[257], "ustar", 6);
  std::memcpy(&h[263], "00", 2);
  std::snprintf(&h[148], 8, "%06o", Checksum(h.data()));  // six digits, NUL, then a space
  h[155] = ' ';
  return h;
}

}  // namespace

std::string TarHeader(const std::string& path, uint64_t size) {
  if (path.empty() || path.size() > 4096 || path.find('\0') != std::string::npos)
    InvalidArgument("file '" + path + "': not a path a tar header can hold");
  std::string h(kTarBlock, '\0');
  if (SetName(h.data(), path)) return OneHeader(path, size, '0');
  // GNU tar's long name (Python's tarfile reads it too): a member ././@LongLink of type L
  // holding the path and a NUL, then the file's own header.
  std::string name = path + '\0';
  std::string out = OneHeader("././@LongLink", name.size(), 'L');
  name.resize(TarPadded(name.size()), '\0');
  return out + name + OneHeader(path, size, '0');
}

struct TarTransferWriter::Impl {
  std::string path, partial, member;
  uint64_t max_total = 0;
  std::unique_ptr<Out> out;
  bool have_manifest = false, finished = false;
  v1::Manifest manifest;
  uint64_t received = 0;
  int file = 0;            // the file `received` points into
  uint64_t file_left = 0;  // its bytes still to come
  Sha256 hash;

  // Opens file `file` (and the empty ones after it, which no chunk will reach).
  void Advance() {
    while (file < manifest.files_size()) {
      const auto& f = manifest.files(file);
      if (file_left == 0) {
        const std::string h = TarHeader(f.path(), f.size());
        out->Write(h.data(), h.size());
        file_left = f.size();
      }
      if (file_left > 0) return;
      CloseFile();
    }
  }
  void CloseFile() {
    const auto& f = manifest.files(file);
    const std::string got = hash.HexDigest();
    if (got != f.sha256()) DataLoss(f.path() + ": SHA-256 " + got + " does not match its manifest's " + f.sha256());
    out->Zeros(TarPadded(f.size()) - f.size());
    ++file;
  }
};

TarTransferWriter::TarTransferWriter(std::string path, std::string manifest_member, uint64_t max_total_bytes)
    : impl_(std::make_unique<Impl>()) {
  impl_->path = std::move(path);
  impl_->partial = impl_->path + ".partial";
  impl_->member = std::move(manifest_member);
  impl_->max_total = max_total_bytes;
}

TarTransferWriter::~TarTransferWriter() {
  if (impl_->finished) return;
  impl_->out.reset();
  std::error_code ec;
  fs::remove(impl_->partial, ec);
}

bool TarTransferWriter::has_manifest() const { return impl_->have_manifest; }
const v1::Manifest& TarTransferWriter::manifest() const { return impl_->manifest; }
uint64_t TarTransferWriter::received() const { return impl_->received; }

void TarTransferWriter::OnMessage(const v1::TransferMessage& msg) {
  auto& s = *impl_;
  if (msg.has_manifest()) {
    if (s.have_manifest) InvalidArgument("transfer: a second manifest");
    CheckArchiveManifest(msg.manifest(), s.max_total, "manifest: ");
    s.manifest = msg.manifest();
    s.have_manifest = true;
    s.out = std::make_unique<Out>(s.partial);
    const std::string json = ManifestJson(s.manifest);
    const std::string h = TarHeader(s.member, json.size());
    s.out->Write(h.data(), h.size());
    s.out->Write(json.data(), json.size());
    s.out->Zeros(TarPadded(json.size()) - json.size());
    s.Advance();
    return;
  }
  if (!s.have_manifest) InvalidArgument("transfer: a chunk before the manifest");
  const auto& c = msg.chunk();
  if (c.offset() != s.received)
    InvalidArgument("transfer: a chunk at offset " + std::to_string(c.offset()) + ", expected " +
                    std::to_string(s.received));
  const std::string& data = c.data();
  size_t pos = 0;
  while (pos < data.size()) {
    if (s.file >= s.manifest.files_size())
      InvalidArgument("transfer: more bytes than the manifest's " + std::to_string(s.manifest.total_bytes()));
    const size_t n = static_cast<size_t>(std::min<uint64_t>(s.file_left, data.size() - pos));
    s.out->Write(data.data() + pos, n);
    s.hash.Update(data.data() + pos, n);
    pos += n;
    s.file_left -= n;
    s.received += n;
    if (s.file_left == 0) {
      s.CloseFile();
      s.Advance();
    }
  }
}

void TarTransferWriter::Finish() {
  auto& s = *impl_;
  if (!s.have_manifest) DataLoss(s.path + ": the transfer sent no manifest");
  if (s.file < s.manifest.files_size())
    DataLoss(s.path + ": the transfer ended at byte " + std::to_string(s.received) + " of " +
             std::to_string(s.manifest.total_bytes()));
  s.out->Zeros(2 * kTarBlock);
  s.out->Close();
  std::error_code ec;
  fs::rename(s.partial, s.path, ec);
  if (ec) FileError(s.path + ": cannot rename " + s.partial + " into place", ec);
  const std::string parent = fs::path(s.path).parent_path().string();
  FsyncDirectory(parent.empty() ? "." : parent);
  s.finished = true;
}

namespace {

class In {
 public:
  explicit In(std::string path) : path_(std::move(path)) {
    f_ = std::fopen(path_.c_str(), "rb");
    if (!f_) FileError(path_ + ": cannot open", errno);
  }
  ~In() { std::fclose(f_); }
  void Read(void* p, size_t n, const std::string& what) {
    if (std::fread(p, 1, n, f_) != n) {
      if (std::ferror(f_)) FileError(path_ + ": read failed", errno);
      DataLoss(path_ + ": truncated in " + what + " (not a whole backup: was it copied completely?)");
    }
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
};

// The next member's header: its path (a GNU long name before it included) and size. False at
// the end-of-archive block.
bool NextHeader(In& in, int index, std::string* path, uint64_t* size) {
  const std::string what = "member " + std::to_string(index) + "'s header";
  std::string long_name;
  for (int part = 0;; ++part) {
    char h[kTarBlock];
    in.Read(h, kTarBlock, what);
    bool zero = true;
    for (char c : h) zero = zero && c == '\0';
    if (zero) {
      if (!long_name.empty()) DataLoss(in.path() + ": " + what + ": a long name with no file after it");
      return false;
    }
    if (std::memcmp(h + 257, "ustar", 5) != 0) DataLoss(in.path() + ": " + what + " is not a ustar header");
    if (ParseNumber(h + 148, 8) != static_cast<int64_t>(Checksum(h))) DataLoss(in.path() + ": " + what + " fails its checksum");
    const int64_t n = ParseNumber(h + 124, 12);
    if (n < 0) DataLoss(in.path() + ": " + what + ": a malformed size");
    if (h[156] == 'L' && part == 0) {
      if (n < 2 || n > 4097) DataLoss(in.path() + ": " + what + ": a long name of " + std::to_string(n) + " bytes");
      std::string name(TarPadded(static_cast<uint64_t>(n)), '\0');
      in.Read(name.data(), name.size(), what);
      long_name.assign(name.data(), strnlen(name.data(), static_cast<size_t>(n)));
      continue;
    }
    if (h[156] != '0' && h[156] != '\0')
      DataLoss(in.path() + ": " + what + ": not a regular file (type '" + std::string(1, h[156]) + "')");
    std::string name(h, strnlen(h, 100));
    const std::string prefix(h + 345, strnlen(h + 345, 155));
    *path = !long_name.empty() ? long_name : prefix.empty() ? name : prefix + "/" + name;
    *size = static_cast<uint64_t>(n);
    return true;
  }
}

}  // namespace

v1::Manifest ExtractTarTransfer(const std::string& path, const std::string& manifest_member, const std::string& dir) {
  In in(path);
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_empty(dir, ec)) InvalidArgument(dir + ": exists and is not empty");
  fs::create_directories(dir, ec);
  if (ec) FileError(dir + ": cannot create", ec);

  std::string member;
  uint64_t size = 0;
  if (!NextHeader(in, 0, &member, &size) || member != manifest_member)
    DataLoss(path + ": its first member is not " + manifest_member + " (not a backup made by trmctl admin backup)");
  if (size > (uint64_t{64} << 20)) DataLoss(path + ": " + manifest_member + " is implausibly large");
  std::string json(size, '\0');
  in.Read(json.data(), size, manifest_member);
  std::vector<char> buf(1 << 20);
  in.Read(buf.data(), TarPadded(size) - size, manifest_member);
  v1::Manifest m;
  if (!google::protobuf::util::JsonStringToMessage(json, &m).ok()) DataLoss(path + ": " + manifest_member + " is not a manifest");
  CheckArchiveManifest(m, UINT64_MAX, path + ": " + manifest_member + ": ");

  for (int i = 0; i < m.files_size(); ++i) {
    const auto& f = m.files(i);
    if (!NextHeader(in, i + 1, &member, &size))
      DataLoss(path + ": the archive ends before " + f.path() + " (" + std::to_string(m.files_size() - i) + " files missing)");
    if (member != f.path() || size != f.size())
      DataLoss(path + ": member " + std::to_string(i + 1) + " is " + member + " (" + std::to_string(size) +
               " bytes), its manifest expects " + f.path() + " (" + std::to_string(f.size()) + " bytes)");
    const fs::path dst = fs::path(dir) / f.path();
    fs::create_directories(dst.parent_path(), ec);
    if (ec) FileError(dst.parent_path().string() + ": cannot create", ec);
    Out out(dst.string());
    Sha256 hash;
    for (uint64_t left = f.size(); left > 0;) {
      const size_t n = static_cast<size_t>(std::min<uint64_t>(left, buf.size()));
      in.Read(buf.data(), n, f.path());
      hash.Update(buf.data(), n);
      out.Write(buf.data(), n);
      left -= n;
    }
    out.Close();
    const std::string got = hash.HexDigest();
    if (got != f.sha256()) DataLoss(path + ": " + f.path() + " has SHA-256 " + got + ", its manifest says " + f.sha256());
    in.Read(buf.data(), TarPadded(f.size()) - f.size(), f.path());
  }
  if (NextHeader(in, m.files_size() + 1, &member, &size))
    DataLoss(path + ": member " + member + " is not in the manifest");
  return m;
}

}  // namespace trm::rpc
