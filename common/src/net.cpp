#include "trm/common/net.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include "trm/common/error.h"

namespace trm {

bool IsLoopbackHost(const std::string& h) { return h == "localhost" || h == "::1" || h.rfind("127.", 0) == 0; }

HostPort SplitHostPort(const std::string& text, const std::string& what, int min_port) {
  HostPort out;
  std::string port;
  out.host = text;
  if (!text.empty() && text.front() == '[') {
    const auto close = text.find(']');
    if (close == std::string::npos) InvalidArgument(what + ": expected HOST:PORT, got '" + text + "' (unclosed '[')");
    out.host = text.substr(1, close - 1);
    const std::string rest = text.substr(close + 1);
    if (!rest.empty()) {
      if (rest[0] != ':') InvalidArgument(what + ": expected [IPV6]:PORT, got '" + text + "'");
      port = rest.substr(1);
      if (port.empty()) InvalidArgument(what + ": expected HOST:PORT, got '" + text + "' (empty port)");
    }
  } else if (const auto colon = text.rfind(':'); colon != std::string::npos) {
    if (text.find(':') != colon) {
      InvalidArgument(what + ": expected HOST:PORT, got '" + text + "' (write IPv6 as [ADDR]:PORT)");
    }
    out.host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (port.empty()) InvalidArgument(what + ": expected HOST:PORT, got '" + text + "' (empty port)");
  }
  if (out.host.empty()) InvalidArgument(what + ": expected HOST:PORT, got '" + text + "' (empty host)");
  if (!port.empty()) {
    errno = 0;
    char* end = nullptr;
    const long p = std::strtol(port.c_str(), &end, 10);
    if (*end != '\0' || errno == ERANGE || p < min_port || p > 65535) {
      InvalidArgument(what + ": expected a port in [" + std::to_string(min_port) + ", 65535] after ':', got '" + text + "'");
    }
    out.port = static_cast<int>(p);
  }
  return out;
}

int PickFreePort() {
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) ThrowError(Code::kUnavailable, std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_ANY);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
                  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  const int err = errno;
  ::close(fd);
  if (!ok) ThrowError(Code::kUnavailable, std::string("cannot pick a free port: ") + std::strerror(err));
  return ntohs(addr.sin_port);
}

std::string LocalAddressToward(const std::string& host, int port) {
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_DGRAM;
  addrinfo* found = nullptr;
  const std::string service = std::to_string(port);
  if (const int rc = ::getaddrinfo(host.c_str(), service.c_str(), &hints, &found); rc != 0) {
    ThrowError(Code::kUnavailable, "cannot resolve host '" + host + "': " + ::gai_strerror(rc));
  }
  std::string error = "no address";
  std::string local;
  for (const addrinfo* ai = found; ai && local.empty(); ai = ai->ai_next) {
    const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      error = std::string("socket: ") + std::strerror(errno);
      continue;
    }
    sockaddr_storage self{};
    socklen_t len = sizeof self;
    // connect() on a UDP socket only picks the route and the source address.
    if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
        ::getsockname(fd, reinterpret_cast<sockaddr*>(&self), &len) == 0) {
      char text[INET6_ADDRSTRLEN] = {};
      const void* a = self.ss_family == AF_INET6
                          ? static_cast<const void*>(&reinterpret_cast<const sockaddr_in6*>(&self)->sin6_addr)
                          : static_cast<const void*>(&reinterpret_cast<const sockaddr_in*>(&self)->sin_addr);
      if (::inet_ntop(self.ss_family, a, text, sizeof text)) local = text;
    } else {
      error = std::strerror(errno);
    }
    ::close(fd);
  }
  ::freeaddrinfo(found);
  if (local.empty()) {
    ThrowError(Code::kUnavailable, "no route from this host to " + host + ":" + service + ": " + error);
  }
  return local;
}

}  // namespace trm
