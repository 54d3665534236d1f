// Chunked, resumable, verified file transfer of a directory tree (a dataset or a checkpoint):
// a Manifest (files in order with size and SHA-256) followed by Chunks whose offsets run over
// the concatenation of the files. Used by every upload and download in the API.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "trm/v1/trm.pb.h"

namespace trm::rpc {

// Rejects what could escape a root: empty, absolute, '..' or '.' components, backslashes, NUL,
// over 512 bytes. `what` names the field in the error (InvalidArgument).
void CheckRelativePath(const std::string& path, const std::string& what);
// A name used as one path component (job id, dataset name, checkpoint name): [A-Za-z0-9._:-],
// not starting with '.', 1..128 bytes.
void CheckName(const std::string& name, const std::string& what);
bool NameOk(const std::string& name);  // what CheckName accepts

// Lists every regular file under `dir` (sorted, relative paths), hashing each.
v1::Manifest BuildManifest(const std::string& dir, const std::string& name);
// SHA-256 of the canonical listing "path\tsize\tsha256\n" in manifest order.
std::string ContentHash(const v1::Manifest& manifest);
// A short stable name of a shard spec (16 hex digits of a SHA-256 over its fields): the worker's
// cache key and the coordinator's directory name for that shard.
std::string ShardKey(const v1::ShardSpec& shard);
// Validates paths, sizes and the total; throws InvalidArgument naming the problem.
void CheckManifest(const v1::Manifest& manifest, uint64_t max_total_bytes);

// Streams `dir`'s files described by `manifest`: the manifest, then chunks from `offset`.
// `write` returns false when the peer went away; SendFiles then stops and returns false.
bool SendFiles(const std::string& dir, const v1::Manifest& manifest, uint64_t offset,
               const std::function<bool(const v1::TransferMessage&)>& write);
// Same for a client stream whose messages wrap chunks (uploads): only chunks from `offset`.
bool SendChunks(const std::string& dir, const v1::Manifest& manifest, uint64_t offset,
                const std::function<bool(const v1::Chunk&)>& write);

// Receives a transfer into `tmp_dir`, then verifies and renames it to its final place.
// Resumable: after a broken stream, ask the sender for offset received() and keep feeding the
// same receiver (a repeated manifest must equal the first). Not thread-safe.
class FileReceiver {
 public:
  // tmp_dir is created (and emptied if it exists); max_total_bytes bounds what a peer may send.
  FileReceiver(std::string tmp_dir, uint64_t max_total_bytes);
  ~FileReceiver();  // removes tmp_dir unless committed
  FileReceiver(const FileReceiver&) = delete;
  FileReceiver& operator=(const FileReceiver&) = delete;

  void OnManifest(const v1::Manifest& manifest);
  void OnChunk(const v1::Chunk& chunk);  // offset must equal received()
  void OnMessage(const v1::TransferMessage& msg);
  bool has_manifest() const;
  const v1::Manifest& manifest() const;
  uint64_t received() const;
  bool complete() const;

  // Checks every file's size and SHA-256 (DataLoss naming the file on mismatch), fsyncs, and
  // renames tmp_dir to final_dir. If final_dir exists it is replaced only when `replace`.
  void Commit(const std::string& final_dir, bool replace = false);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace trm::rpc
