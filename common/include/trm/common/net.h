// Socket helpers shared by the launcher, the collectives, the data-parallel tests and benchmarks.
#pragma once

#include <string>

namespace trm {

// HOST, HOST:PORT or [IPV6]:PORT, split; the brackets are removed and port is 0 when none is
// given. Throws trm::Error(kInvalidArgument) starting with `what` (e.g. the flag) and naming the
// text: an empty host or port, an unclosed '[', a port outside [1, 65535], or an IPv6 address
// without brackets.
struct HostPort {
  std::string host;
  int port = 0;
};
// `min_port` 0 also accepts port 0 (a listener's "pick a free one").
HostPort SplitHostPort(const std::string& text, const std::string& what, int min_port = 1);

// Whether `host` (no brackets) names this machine's loopback: localhost, 127.x.y.z, ::1.
bool IsLoopbackHost(const std::string& host);

// A TCP port that is free on every local address right now (bind to port 0, read it back,
// close). Another process may take it before it is used, so callers use it at once. Throws
// trm::Error(kUnavailable).
int PickFreePort();

// The local IP address (numeric, IPv4 or IPv6, no brackets) this host sends from when it talks
// to host:port: the kernel's route choice, read back from a connected UDP socket (no packet is
// sent). It is the address peers on other machines can reach this host at, unlike the address
// the host name resolves to (often 127.0.0.1 or 127.0.1.1). Throws trm::Error(kUnavailable)
// naming host when it does not resolve or no route reaches it. Thread-safe.
std::string LocalAddressToward(const std::string& host, int port);

}  // namespace trm
