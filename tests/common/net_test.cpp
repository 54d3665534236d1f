#include "trm/common/net.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "host_addresses.h"
#include "trm/common/error.h"

namespace trm {
namespace {

TEST(NetTest, LoopbackIsReachedFromLoopback) {
  EXPECT_EQ(LocalAddressToward("127.0.0.1", 29500), "127.0.0.1");
  const std::string local = LocalAddressToward("localhost", 29500);
  EXPECT_TRUE(local == "127.0.0.1" || local == "::1") << local;
}

TEST(NetTest, OwnAddressIsReachedFromItself) {
  // Sending to one of this host's own addresses goes out from that address, so a rank on the
  // node that serves MASTER_ADDR advertises an address the other nodes reach it at.
  const std::vector<std::string> own = NonLoopbackIpv4Addresses();
  if (own.empty()) GTEST_SKIP() << "this host has no non-loopback IPv4 address";
  for (const std::string& a : own) EXPECT_EQ(LocalAddressToward(a, 29500), a);
}

TEST(NetTest, UnresolvableHostIsAnErrorNamingIt) {
  try {
    LocalAddressToward("no-such-host.invalid", 29500);
    FAIL() << "an unresolvable host gave an address";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), Code::kUnavailable);
    EXPECT_NE(std::string(e.what()).find("no-such-host.invalid"), std::string::npos) << e.what();
  }
}

TEST(NetTest, PickedPortCanBeBound) {
  const int port = PickFreePort();
  ASSERT_GT(port, 0);
  const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ASSERT_GE(fd, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = htons(static_cast<uint16_t>(port));
  EXPECT_EQ(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  ::close(fd);
}

}  // namespace
}  // namespace trm
