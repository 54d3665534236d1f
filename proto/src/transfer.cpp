#include "trm/rpc/transfer.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <vector>

#include "trm/common/error.h"
#include "trm/common/sha256.h"
#include "trm/rpc/client.h"

namespace fs = std::filesystem;

namespace trm::rpc {

void CheckRelativePath(const std::string& path, const std::string& what) {
  if (path.empty()) InvalidArgument(what + ": empty path");
  if (path.size() > 512) InvalidArgument(what + ": path longer than 512 bytes");
  if (path[0] == '/') InvalidArgument(what + " '" + path + "': must be relative");
  if (path.find('\\') != std::string::npos || path.find('\0') != std::string::npos)
    InvalidArgument(what + " '" + path + "': backslash or NUL not allowed");
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string::npos) end = path.size();
    const std::string part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..")
      InvalidArgument(what + " '" + path + "': empty, '.' or '..' components are not allowed");
    start = end + 1;
  }
}

bool NameOk(const std::string& name) {
  if (name.empty() || name.size() > 128 || name[0] == '.') return false;
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-' || c == ':';
    if (!ok) return false;
  }
  return true;
}

void CheckName(const std::string& name, const std::string& what) {
  if (name.empty() || name.size() > 128) InvalidArgument(what + ": expected 1 to 128 characters");
  if (name[0] == '.') InvalidArgument(what + " '" + name + "': must not start with '.'");
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-' || c == ':';
    if (!ok) InvalidArgument(what + " '" + name + "': only letters, digits and . _ - : are allowed");
  }
}

v1::Manifest BuildManifest(const std::string& dir, const std::string& name) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) NotFound(dir + ": not a directory");
  std::vector<std::string> files;
  fs::recursive_directory_iterator it(dir, ec), end;
  for (; !ec && it != end; it.increment(ec)) {
    if (!it->is_regular_file(ec) || ec) continue;
    const fs::path rel = fs::relative(it->path(), dir, ec);
    if (ec) break;
    files.push_back(rel.generic_string());
  }
  if (ec) FileError(dir + ": cannot list", ec);
  std::sort(files.begin(), files.end());
  v1::Manifest m;
  m.set_name(name);
  uint64_t total = 0;
  for (const auto& f : files) {
    auto* e = m.add_files();
    e->set_path(f);
    const std::string full = (fs::path(dir) / f).string();
    const uintmax_t size = fs::file_size(full, ec);
    if (ec) FileError(full + ": cannot stat", ec);
    e->set_size(size);
    e->set_sha256(Sha256File(full));
    total += e->size();
  }
  m.set_total_bytes(total);
  m.set_content_sha256(ContentHash(m));
  return m;
}

std::string ContentHash(const v1::Manifest& manifest) {
  Sha256 h;
  for (const auto& f : manifest.files()) {
    h.Update(f.path() + "\t" + std::to_string(f.size()) + "\t" + f.sha256() + "\n");
  }
  return h.HexDigest();
}

void CheckManifest(const v1::Manifest& m, uint64_t max_total_bytes) {
  if (m.files_size() > 10000) InvalidArgument("manifest: more than 10000 files");
  uint64_t total = 0;
  std::vector<std::string> seen;
  for (int i = 0; i < m.files_size(); ++i) {
    const auto& f = m.files(i);
    CheckRelativePath(f.path(), "manifest.files[" + std::to_string(i) + "].path");
    if (f.sha256().size() != 64) InvalidArgument("manifest.files[" + std::to_string(i) + "].sha256: expected 64 hex digits");
    if (f.size() > max_total_bytes) InvalidArgument("manifest.files[" + std::to_string(i) + "].size: too large");
    total += f.size();
    seen.push_back(f.path());
  }
  std::sort(seen.begin(), seen.end());
  if (std::adjacent_find(seen.begin(), seen.end()) != seen.end()) InvalidArgument("manifest: a path appears twice");
  if (total != m.total_bytes())
    InvalidArgument("manifest.total_bytes: " + std::to_string(m.total_bytes()) + " but the files add up to " +
                    std::to_string(total));
  if (total > max_total_bytes)
    ThrowError(Code::kResourceExhausted, "manifest: " + std::to_string(total) + " bytes exceeds the limit of " +
                                             std::to_string(max_total_bytes));
  if (!m.content_sha256().empty() && m.content_sha256() != ContentHash(m))
    InvalidArgument("manifest.content_sha256 does not match its files");
}

bool SendChunks(const std::string& dir, const v1::Manifest& manifest, uint64_t offset,
                const std::function<bool(const v1::Chunk&)>& write) {
  if (offset > manifest.total_bytes())
    ThrowError(Code::kOutOfRange, "offset " + std::to_string(offset) + " is past the end (" +
                                      std::to_string(manifest.total_bytes()) + " bytes)");
  uint64_t file_start = 0;
  std::vector<char> buf(kChunkBytes);
  for (const auto& f : manifest.files()) {
    const uint64_t file_end = file_start + f.size();
    if (offset < file_end) {
      const std::string path = (fs::path(dir) / f.path()).string();
      std::ifstream in(path, std::ios::binary);
      if (!in) NotFound(path + ": cannot open");
      in.seekg(static_cast<std::streamoff>(offset - file_start));
      while (offset < file_end) {
        const size_t n = static_cast<size_t>(std::min<uint64_t>(buf.size(), file_end - offset));
        in.read(buf.data(), static_cast<std::streamsize>(n));
        if (static_cast<size_t>(in.gcount()) != n) DataLoss(path + ": shorter than its manifest says");
        v1::Chunk c;
        c.set_offset(offset);
        c.set_data(buf.data(), n);
        if (!write(c)) return false;
        offset += n;
      }
    }
    file_start = file_end;
  }
  return true;
}

bool SendFiles(const std::string& dir, const v1::Manifest& manifest, uint64_t offset,
               const std::function<bool(const v1::TransferMessage&)>& write) {
  v1::TransferMessage head;
  *head.mutable_manifest() = manifest;
  if (!write(head)) return false;
  v1::TransferMessage msg;
  return SendChunks(dir, manifest, offset, [&](const v1::Chunk& c) {
    *msg.mutable_chunk() = c;
    return write(msg);
  });
}

struct FileReceiver::Impl {
  std::string tmp_dir;
  uint64_t max_total = 0;
  bool have_manifest = false;
  bool committed = false;
  v1::Manifest manifest;
  std::vector<uint64_t> starts;  // offset where each file starts
  uint64_t received = 0;
  size_t file = 0;               // the file that `received` points into
  std::FILE* out = nullptr;
  std::string out_path;

  // Returns 0 or the errno of the first failure: a full disk often shows only when the buffered
  // tail is flushed, and must not pass for a complete file.
  int CloseOut() {
    if (!out) return 0;
    int err = 0;
    if (std::fflush(out) != 0 || ::fsync(fileno(out)) != 0) err = errno;
    if (std::fclose(out) != 0 && err == 0) err = errno;
    out = nullptr;
    return err;
  }
  void CloseOutOrThrow() {
    const std::string path = out_path;
    if (const int err = CloseOut()) FileError(path + ": write failed", err);
  }
};

FileReceiver::FileReceiver(std::string tmp_dir, uint64_t max_total_bytes) : impl_(std::make_unique<Impl>()) {
  impl_->tmp_dir = std::move(tmp_dir);
  impl_->max_total = max_total_bytes;
  std::error_code ec;
  fs::remove_all(impl_->tmp_dir, ec);
  fs::create_directories(impl_->tmp_dir, ec);
  if (ec) FileError(impl_->tmp_dir + ": cannot create", ec.value());
}

FileReceiver::~FileReceiver() {
  impl_->CloseOut();
  if (!impl_->committed) {
    std::error_code ec;
    fs::remove_all(impl_->tmp_dir, ec);
  }
}

void FileReceiver::OnManifest(const v1::Manifest& m) {
  if (impl_->have_manifest) {
    if (ContentHash(m) != ContentHash(impl_->manifest) || m.total_bytes() != impl_->manifest.total_bytes())
      ThrowError(Code::kFailedPrecondition, "transfer '" + m.name() + "' changed while resuming");
    return;
  }
  CheckManifest(m, impl_->max_total);
  impl_->manifest = m;
  impl_->have_manifest = true;
  uint64_t at = 0;
  for (const auto& f : m.files()) {
    impl_->starts.push_back(at);
    at += f.size();
    // Directories and empty files exist even when no chunk touches them.
    const fs::path p = fs::path(impl_->tmp_dir) / f.path();
    std::error_code ec;
    fs::create_directories(p.parent_path(), ec);
    if (ec) FileError(p.parent_path().string() + ": cannot create", ec.value());
    std::FILE* o = std::fopen(p.c_str(), "wb");
    if (!o) FileError(p.string() + ": cannot create", errno);
    std::fclose(o);
  }
}

void FileReceiver::OnChunk(const v1::Chunk& c) {
  Impl& s = *impl_;
  if (!s.have_manifest) InvalidArgument("transfer: a chunk arrived before the manifest");
  if (c.offset() != s.received)
    InvalidArgument("transfer: chunk at offset " + std::to_string(c.offset()) + ", expected " +
                    std::to_string(s.received));
  if (c.data().size() > s.manifest.total_bytes() - s.received)
    InvalidArgument("transfer: more data than the manifest's " + std::to_string(s.manifest.total_bytes()) + " bytes");
  const char* p = c.data().data();
  size_t left = c.data().size();
  while (left > 0) {
    while (s.file < static_cast<size_t>(s.manifest.files_size()) &&
           s.received >= s.starts[s.file] + s.manifest.files(static_cast<int>(s.file)).size()) {
      s.CloseOutOrThrow();
      ++s.file;
    }
    const auto& f = s.manifest.files(static_cast<int>(s.file));
    if (!s.out) {
      const fs::path path = fs::path(s.tmp_dir) / f.path();
      s.out = std::fopen(path.c_str(), "r+b");
      if (!s.out) FileError(path.string() + ": cannot open", errno);
      s.out_path = path.string();
      std::fseek(s.out, static_cast<long>(s.received - s.starts[s.file]), SEEK_SET);
    }
    const size_t n = static_cast<size_t>(std::min<uint64_t>(left, s.starts[s.file] + f.size() - s.received));
    if (std::fwrite(p, 1, n, s.out) != n) FileError(s.out_path + ": write failed", errno);
    p += n;
    left -= n;
    s.received += n;
  }
}

void FileReceiver::OnMessage(const v1::TransferMessage& msg) {
  if (msg.has_manifest()) OnManifest(msg.manifest());
  else if (msg.has_chunk()) OnChunk(msg.chunk());
  else InvalidArgument("transfer: empty message");
}

bool FileReceiver::has_manifest() const { return impl_->have_manifest; }
const v1::Manifest& FileReceiver::manifest() const { return impl_->manifest; }
uint64_t FileReceiver::received() const { return impl_->received; }
bool FileReceiver::complete() const { return impl_->have_manifest && impl_->received == impl_->manifest.total_bytes(); }

void FileReceiver::Commit(const std::string& final_dir, bool replace) {
  Impl& s = *impl_;
  s.CloseOutOrThrow();
  if (!complete())
    DataLoss("transfer '" + s.manifest.name() + "': got " + std::to_string(s.received) + " of " +
             std::to_string(s.manifest.total_bytes()) + " bytes");
  for (const auto& f : s.manifest.files()) {
    const std::string path = (fs::path(s.tmp_dir) / f.path()).string();
    std::error_code size_ec;
    const uintmax_t size = fs::file_size(path, size_ec);
    if (size_ec) DataLoss(f.path() + ": listed in the manifest but not received (" + size_ec.message() + ")");
    if (size != f.size()) DataLoss(f.path() + ": size differs from the manifest");
    const std::string got = Sha256File(path);
    if (got != f.sha256()) DataLoss(f.path() + ": SHA-256 " + got + " but the manifest says " + f.sha256());
  }
  std::error_code ec;
  fs::create_directories(fs::path(final_dir).parent_path(), ec);
  if (fs::exists(final_dir)) {
    if (!replace) {
      fs::remove_all(s.tmp_dir, ec);
      s.committed = true;
      return;
    }
    fs::remove_all(final_dir, ec);
  }
  fs::rename(s.tmp_dir, final_dir, ec);
  if (ec) FileError(final_dir + ": cannot move the received files into place", ec.value());
  if (int fd = ::open(fs::path(final_dir).parent_path().c_str(), O_RDONLY); fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
  s.committed = true;
}

std::string ShardKey(const v1::ShardSpec& shard) {
  std::string text = "world=" + std::to_string(shard.world_size()) + ";batch=" + std::to_string(shard.global_batch()) +
                     ";seed=" + std::to_string(shard.seed()) + ";batches=" + std::to_string(shard.batches()) + ";ranks=";
  for (int r : shard.ranks()) text += std::to_string(r) + ",";
  return Sha256Hex(text).substr(0, 16);
}

}  // namespace trm::rpc
