// KvStore over c10d::TCPStore. Everything that differs between LibTorch 1.13 (Debian, CPU) and
// 2.x (the GPU machine) stays in this file.
//
// Why only set / compareSet / check / add: a TCPStore client whose get() or wait() timed out is
// left with a stale reply in its socket (1.13), so waits are done by the caller as bounded
// polls of check(), and every call here answers at once.
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <cstring>
#include <string>
#include <vector>

#include "kv_store.h"
#include "trm/common/error.h"
#include "trm/common/torch_compat.h"

namespace trm::launch {
namespace {

std::vector<uint8_t> Bytes(const std::string& s) { return {s.begin(), s.end()}; }
std::string Text(const std::vector<uint8_t>& v) { return {v.begin(), v.end()}; }

// c10::Error carries a C++ backtrace in what(); users need the first line.
std::string Message(const std::exception& e) {
  if (const auto* c = dynamic_cast<const c10::Error*>(&e)) return c->what_without_backtrace();
  return e.what();
}

[[noreturn]] void Rethrow(const std::string& where, const std::exception& e) {
  const std::string msg = Message(e);
  const bool timeout = msg.find("imed out") != std::string::npos || msg.find("imeout") != std::string::npos;
  ThrowError(timeout ? Code::kDeadlineExceeded : Code::kUnavailable, where + ": " + msg);
}

class C10dStore final : public KvStore {
 public:
  C10dStore(const std::string& host, int port, bool server, std::chrono::milliseconds timeout)
      : where_("rendezvous store " + host + ":" + std::to_string(port)) {
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = server;
    opts.numWorkers.reset();  // the launchers count themselves (join keys); c10:: or std::optional
    opts.waitWorkers = false;
    opts.timeout = timeout;
    compat::UseClassicTcpStore(opts);
    try {
      // The server listens on every local address; its own client part connects over loopback.
      store_ = c10::make_intrusive<c10d::TCPStore>(server ? std::string("127.0.0.1") : host, opts);
    } catch (const std::exception& e) {
      Rethrow(where_ + (server ? ": cannot serve" : ": cannot connect"), e);
    }
  }

  void Set(const std::string& key, const std::string& value) override {
    try {
      store_->set(key, Bytes(value));
    } catch (const std::exception& e) {
      Rethrow(where_ + ": set " + key, e);
    }
  }

  std::string SetIfAbsent(const std::string& key, const std::string& value) override {
    // compareSet with an empty expected value stores when the key is missing and returns the
    // stored value either way (1.13 and 2.x).
    try {
      return Text(store_->compareSet(key, {}, Bytes(value)));
    } catch (const std::exception& e) {
      Rethrow(where_ + ": compareSet " + key, e);
    }
  }

  std::optional<std::string> TryGet(const std::string& key) override {
    try {
      if (!store_->check({key})) return std::nullopt;
      return Text(store_->get(key));  // exists: get answers at once
    } catch (const std::exception& e) {
      Rethrow(where_ + ": get " + key, e);
    }
  }

  int64_t Add(const std::string& key, int64_t delta) override {
    try {
      return store_->add(key, delta);
    } catch (const std::exception& e) {
      Rethrow(where_ + ": add " + key, e);
    }
  }

 private:
  std::string where_;
  c10::intrusive_ptr<c10d::TCPStore> store_;
};

}  // namespace

std::unique_ptr<KvStore> ServeKvStore(const std::string& host, int port, std::chrono::milliseconds timeout) {
  return std::make_unique<C10dStore>(host, port, /*server=*/true, timeout);
}

std::unique_ptr<KvStore> ConnectKvStore(const std::string& host, int port, std::chrono::milliseconds timeout) {
  return std::make_unique<C10dStore>(host, port, /*server=*/false, timeout);
}

}  // namespace trm::launch
