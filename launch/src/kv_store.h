// The key-value store the launchers of a multi-node run coordinate through, without LibTorch in
// the header: c10d_store.cpp is the only file that sees c10d (and its version differences).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace trm::launch {

// One connection; not thread-safe (the launcher uses it from its supervision loop only). Every
// call returns or throws within the store timeout: kDeadlineExceeded when the server does not
// answer in time, kUnavailable when the connection is gone (e.g. the node-0 launcher exited).
class KvStore {
 public:
  virtual ~KvStore() = default;
  virtual void Set(const std::string& key, const std::string& value) = 0;
  // Stores `value` unless the key exists; returns the stored value (the first writer's).
  virtual std::string SetIfAbsent(const std::string& key, const std::string& value) = 0;
  // The value, or nullopt when the key does not exist; never waits for it.
  virtual std::optional<std::string> TryGet(const std::string& key) = 0;
  // Atomically adds `delta` (a missing key counts as 0) and returns the new value; Add(k, 0) reads.
  virtual int64_t Add(const std::string& key, int64_t delta) = 0;
};

// Serves the store on `port` (all local addresses) and connects to it; `host` only names the
// endpoint in messages. Throws kUnavailable when the port is taken.
std::unique_ptr<KvStore> ServeKvStore(const std::string& host, int port, std::chrono::milliseconds timeout);
// Connects to a running server (see CanConnect to wait for it first).
std::unique_ptr<KvStore> ConnectKvStore(const std::string& host, int port, std::chrono::milliseconds timeout);

}  // namespace trm::launch
