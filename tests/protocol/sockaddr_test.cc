// SockAddr conversions (shared/protocol.h): kernel sockaddr <-> wire address <-> text.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <catch2/catch.hpp>
#include <cstddef>
#include <cstring>
#include <string>

#include "shared/protocol.h"

namespace xsock::proto {
namespace {

using Catch::Matchers::StartsWith;

sockaddr_in MakeV4(const char* ip, uint16_t port) {
  sockaddr_in in = {};
  in.sin_family = AF_INET;
  in.sin_port = htons(port);
  REQUIRE(inet_pton(AF_INET, ip, &in.sin_addr) == 1);
  return in;
}

sockaddr_in6 MakeV6(const char* ip, uint16_t port, uint32_t flowinfo, uint32_t scope) {
  sockaddr_in6 in6 = {};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(port);
  in6.sin6_flowinfo = htonl(flowinfo);
  in6.sin6_scope_id = scope;
  REQUIRE(inet_pton(AF_INET6, ip, &in6.sin6_addr) == 1);
  return in6;
}

std::string ErrorOf(const absl::StatusOr<SockAddr>& a) {
  if (a.ok()) return "(accepted)";
  CHECK(a.status().code() == absl::StatusCode::kInvalidArgument);
  const auto m = a.status().message();
  return std::string(m.data(), m.size());
}

TEST_CASE("an IPv4 sockaddr converts to a canonical wire address and back", "[sockaddr]") {
  sockaddr_in in = MakeV4("192.168.1.20", 8080);
  std::memset(in.sin_zero, 0xAB, sizeof(in.sin_zero));  // junk the kernel ignores
  auto a = FromSockaddr(reinterpret_cast<sockaddr*>(&in), sizeof(in));
  REQUIRE(a.ok());
  CHECK(a->family == AF_INET);
  CHECK(a->port == 8080);
  CHECK(a->flowinfo == 0);
  CHECK(a->scope_id == 0);
  const std::array<uint8_t, 16> expected = {192, 168, 1, 20};
  CHECK(a->addr == expected);
  CHECK(ToString(*a) == "192.168.1.20:8080");

  sockaddr_storage back;
  REQUIRE(ToSockaddr(*a, &back) == sizeof(sockaddr_in));
  const auto* out = reinterpret_cast<const sockaddr_in*>(&back);
  CHECK(out->sin_family == AF_INET);
  CHECK(out->sin_port == htons(8080));
  CHECK(out->sin_addr.s_addr == in.sin_addr.s_addr);
  const unsigned char zero[sizeof(in.sin_zero)] = {};
  CHECK(std::memcmp(out->sin_zero, zero, sizeof(zero)) == 0);

  // What FromSockaddr makes, the decoder accepts.
  const auto bytes = EncodeRequest(1, ConnectRequest{.socket_id = 1, .addr = *a});
  CHECK(DecodeRequest(bytes).ok());
}

TEST_CASE("an IPv6 sockaddr keeps its flow label and scope through the wire address",
          "[sockaddr]") {
  const sockaddr_in6 in6 = MakeV6("fe80::1:2", 22, 0x000ABCDE, 3);
  auto a = FromSockaddr(reinterpret_cast<const sockaddr*>(&in6), sizeof(in6));
  REQUIRE(a.ok());
  CHECK(a->family == AF_INET6);
  CHECK(a->port == 22);
  CHECK(a->flowinfo == 0x000ABCDE);  // a number, like the port
  CHECK(a->scope_id == 3);
  CHECK(a->addr[0] == 0xfe);
  CHECK(a->addr[1] == 0x80);
  CHECK(a->addr[13] == 0x01);
  CHECK(a->addr[15] == 0x02);
  CHECK(ToString(*a) == "[fe80::1:2]:22");

  sockaddr_storage back;
  REQUIRE(ToSockaddr(*a, &back) == sizeof(sockaddr_in6));
  CHECK(std::memcmp(&back, &in6, sizeof(in6)) == 0);

  const auto bytes = EncodeRequest(9, ConnectRequest{.socket_id = 1, .addr = *a});
  auto d = DecodeRequest(bytes);
  REQUIRE(d.ok());
  CHECK(std::get<ConnectRequest>(d->msg).addr == *a);
}

TEST_CASE("an RFC 2133 sockaddr_in6 without scope_id is accepted as the kernel does",
          "[sockaddr]") {
  sockaddr_in6 in6 = MakeV6("2001:db8::5", 443, 0, 0);
  in6.sin6_scope_id = 7;  // beyond the 24 bytes given: must not be read
  constexpr socklen_t kShort = offsetof(sockaddr_in6, sin6_scope_id);
  auto a = FromSockaddr(reinterpret_cast<const sockaddr*>(&in6), kShort);
  REQUIRE(a.ok());
  CHECK(a->scope_id == 0);
  CHECK(ToString(*a) == "[2001:db8::5]:443");
  CHECK_THAT(ErrorOf(FromSockaddr(reinterpret_cast<const sockaddr*>(&in6), kShort - 1)),
             StartsWith("address: short sockaddr_in6"));
}

TEST_CASE("FromSockaddr rejects other families and short lengths", "[sockaddr]") {
  CHECK_THAT(ErrorOf(FromSockaddr(nullptr, 16)), StartsWith("address: too short"));
  sockaddr_in in = MakeV4("10.0.0.1", 1);
  CHECK_THAT(ErrorOf(FromSockaddr(reinterpret_cast<sockaddr*>(&in), 1)),
             StartsWith("address: too short"));
  CHECK_THAT(ErrorOf(FromSockaddr(reinterpret_cast<sockaddr*>(&in), sizeof(in) - 1)),
             StartsWith("address: short sockaddr_in"));
  sockaddr_un un = {};
  un.sun_family = AF_UNIX;
  CHECK_THAT(ErrorOf(FromSockaddr(reinterpret_cast<sockaddr*>(&un), sizeof(un))),
             StartsWith("address: family 1 is neither AF_INET nor AF_INET6"));
}

TEST_CASE("ToString formats the wildcard addresses and an unknown family", "[sockaddr]") {
  SockAddr any4;
  any4.family = AF_INET;
  CHECK(ToString(any4) == "0.0.0.0:0");
  SockAddr any6;
  any6.family = AF_INET6;
  any6.port = 65535;
  CHECK(ToString(any6) == "[::]:65535");
  SockAddr mapped = any6;
  mapped.addr = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 127, 0, 0, 1};
  mapped.port = 80;
  CHECK(ToString(mapped) == "[::ffff:127.0.0.1]:80");
  SockAddr unix_family;
  unix_family.family = AF_UNIX;
  CHECK(ToString(unix_family) == "<family 1>");
}

}  // namespace
}  // namespace xsock::proto
