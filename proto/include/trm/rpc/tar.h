// POSIX ustar archives of a transfer's files: the dashboard's checkpoint download and the
// coordinator's backup file. Only what those need: regular files (mode 0644, uid 0, mtime 0, so
// an archive of the same files is the same bytes), paths split over the name and prefix fields
// (longer ones as GNU long names), sizes of 8 GiB and more in the base-256 field that GNU tar
// and Python's tarfile read.
#pragma once

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <string>

#include "trm/v1/trm.pb.h"

namespace trm::rpc {

constexpr size_t kTarBlock = 512;
// The first member of a coordinator backup (trmctl admin backup, trm-coordinator --restore).
inline constexpr const char kBackupManifestMember[] = "trm-backup.json";
inline uint64_t TarPadded(uint64_t n) { return (n + kTarBlock - 1) / kTarBlock * kTarBlock; }

// The header of a regular file: one 512-byte block, or for a path that does not fit the ustar
// fields a GNU long-name member (type L) before it. Throws InvalidArgument for an empty path or
// one over 4096 bytes.
std::string TarHeader(const std::string& path, uint64_t size);

// A verified archive file written from a transfer (a Manifest, then chunks in order, as
// SendFiles produces): its first member is the manifest itself (`manifest_member`, the
// Manifest's JSON), then every file under its manifest path. Each file's SHA-256 is checked as
// its last chunk arrives (DataLoss naming it), and the archive appears at `path` only once
// Finish has verified the whole transfer: until then it is `path`.partial, removed by the
// destructor. Not thread-safe.
class TarTransferWriter {
 public:
  TarTransferWriter(std::string path, std::string manifest_member, uint64_t max_total_bytes);
  ~TarTransferWriter();
  TarTransferWriter(const TarTransferWriter&) = delete;
  TarTransferWriter& operator=(const TarTransferWriter&) = delete;

  void OnMessage(const v1::TransferMessage& msg);  // the manifest first, then chunks in order
  bool has_manifest() const;
  const v1::Manifest& manifest() const;
  uint64_t received() const;  // bytes of files so far
  // Requires every byte; writes the end of the archive, fsyncs and renames it into place.
  void Finish();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Extracts an archive TarTransferWriter wrote into `dir` (created; it must not exist or be
// empty): the manifest member first, then exactly its files in its order, each checked against
// its size and SHA-256. Any other member, a path that could escape `dir`, a truncated or
// corrupt archive is refused with an error naming `path` and the member (DataLoss /
// InvalidArgument); what was extracted stays under `dir` for the caller to remove. Returns the
// manifest.
v1::Manifest ExtractTarTransfer(const std::string& path, const std::string& manifest_member, const std::string& dir);

}  // namespace trm::rpc
