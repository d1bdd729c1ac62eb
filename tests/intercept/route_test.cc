// XSOCK_ROUTE parsing and matching (libintercept/route.h).
#include "libintercept/route.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <vector>

namespace xsock::intercept {
namespace {

sockaddr_in V4(const char* ip, uint16_t port) {
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  REQUIRE(inet_pton(AF_INET, ip, &a.sin_addr) == 1);
  return a;
}

sockaddr_in6 V6(const char* ip, uint16_t port) {
  sockaddr_in6 a = {};
  a.sin6_family = AF_INET6;
  a.sin6_port = htons(port);
  REQUIRE(inet_pton(AF_INET6, ip, &a.sin6_addr) == 1);
  return a;
}

bool Matches(const RouteTable& t, const sockaddr_in& a) {
  return t.Matches(reinterpret_cast<const sockaddr*>(&a), sizeof(a));
}
bool Matches(const RouteTable& t, const sockaddr_in6& a) {
  return t.Matches(reinterpret_cast<const sockaddr*>(&a), sizeof(a));
}

RouteTable Parse(const char* spec) {
  std::vector<std::string> errors;
  RouteTable t = RouteTable::Parse(spec, &errors);
  INFO(spec);
  REQUIRE(errors.empty());
  return t;
}

}  // namespace

TEST_CASE("route entries of every documented form parse", "[route]") {
  struct Case {
    const char* text;
    sa_family_t family;
    int prefix;
    uint16_t port;
  };
  const Case cases[] = {
      {"127.0.0.0/8", AF_INET, 8, 0},       {"10.0.0.0/8:5432", AF_INET, 8, 5432},
      {"192.168.1.7", AF_INET, 32, 0},      {"192.168.1.7:80", AF_INET, 32, 80},
      {"0.0.0.0/0", AF_INET, 0, 0},         {"[::1]/128", AF_INET6, 128, 0},
      {"[fd00::]/8:443", AF_INET6, 8, 443}, {"[::1]", AF_INET6, 128, 0},
      {"[::1]:22", AF_INET6, 128, 22},      {"::1", AF_INET6, 128, 0},
      {"fd00::/8", AF_INET6, 8, 0},         {"[::]/0:65535", AF_INET6, 0, 65535},
  };
  for (const Case& c : cases) {
    INFO(c.text);
    auto e = ParseRouteEntry(c.text);
    REQUIRE(e.ok());
    CHECK(e->family == c.family);
    CHECK(e->prefix == c.prefix);
    CHECK(e->port == c.port);
  }
}

TEST_CASE("malformed route entries are rejected with a reason naming the problem", "[route]") {
  struct Case {
    const char* text;
    const char* reason_part;
  };
  const Case cases[] = {
      {"bogus", "not an IPv4 address"},
      {"10.0.0.0/33", "0..32"},
      {"10.0.0.0/-1", "prefix"},
      {"10.0.0.0/8:0", "1..65535"},
      {"10.0.0.0/8:65536", "1..65535"},
      {"10.0.0.0/8:http", "port 'http'"},
      {"10.0.0/8", "not an IPv4 address"},
      {"[::1", "without a matching ']'"},
      {"[::1]/129", "0..128"},
      {"[::1]x", "unexpected 'x'"},
      {"[10.0.0.1]", "not an IPv6 address"},
      {"fd00::/8:443", "[addr]/prefix:port"},
      {"1.2.3.4:", "port ''"},
  };
  for (const Case& c : cases) {
    INFO(c.text);
    auto e = ParseRouteEntry(c.text);
    REQUIRE_FALSE(e.ok());
    CHECK_THAT(std::string(e.status().message()), Catch::Contains(c.reason_part));
  }
}

TEST_CASE("a route list skips malformed entries, reports each once, keeps the rest", "[route]") {
  std::vector<std::string> errors;
  const RouteTable t =
      RouteTable::Parse(" 127.0.0.0/8 , nonsense,,[::1]/200, 10.1.0.0/16:5432,", &errors);
  REQUIRE(errors.size() == 2);
  CHECK(errors[0] == "XSOCK_ROUTE entry 'nonsense' ignored: 'nonsense' is not an IPv4 address");
  CHECK_THAT(errors[1], Catch::StartsWith("XSOCK_ROUTE entry '[::1]/200' ignored: "));
  REQUIRE(t.entries().size() == 2);
  CHECK(Matches(t, V4("127.1.2.3", 80)));
  CHECK(Matches(t, V4("10.1.200.3", 5432)));
  CHECK_FALSE(Matches(t, V4("10.1.200.3", 5433)));
}

TEST_CASE("an empty or unset route list routes nothing", "[route]") {
  for (const char* spec : {"", " ", ",,"}) {
    const RouteTable t = Parse(spec);
    CHECK(t.empty());
    CHECK_FALSE(Matches(t, V4("127.0.0.1", 80)));
  }
}

TEST_CASE("IPv4 matching honours prefix boundaries and ports", "[route]") {
  const RouteTable t = Parse("10.0.0.0/8:5432,192.168.1.128/25,172.16.5.5");
  CHECK(Matches(t, V4("10.255.255.255", 5432)));
  CHECK_FALSE(Matches(t, V4("10.0.0.1", 80)));
  CHECK_FALSE(Matches(t, V4("11.0.0.1", 5432)));
  CHECK(Matches(t, V4("192.168.1.128", 1)));
  CHECK(Matches(t, V4("192.168.1.255", 1)));
  CHECK_FALSE(Matches(t, V4("192.168.1.127", 1)));
  CHECK(Matches(t, V4("172.16.5.5", 443)));
  CHECK_FALSE(Matches(t, V4("172.16.5.6", 443)));
}

TEST_CASE("host bits below the prefix are ignored", "[route]") {
  const RouteTable t = Parse("10.1.2.3/8");
  CHECK(Matches(t, V4("10.200.0.1", 80)));
}

TEST_CASE("IPv6 matching honours prefixes, ports and keeps families apart", "[route]") {
  const RouteTable t = Parse("[fd00::]/8:443,[::1]/128,[2001:db8::]/33");
  CHECK(Matches(t, V6("fd12:3456::1", 443)));
  CHECK_FALSE(Matches(t, V6("fd12:3456::1", 80)));
  CHECK_FALSE(Matches(t, V6("fe80::1", 443)));
  CHECK(Matches(t, V6("::1", 9)));
  CHECK_FALSE(Matches(t, V6("::2", 9)));
  CHECK(Matches(t, V6("2001:db8:7fff::1", 1)));
  CHECK_FALSE(Matches(t, V6("2001:db8:8000::1", 1)));
  CHECK_FALSE(Matches(t, V4("127.0.0.1", 9)));
}

TEST_CASE("an IPv4-mapped IPv6 destination matches IPv4 routes", "[route]") {
  const RouteTable t = Parse("127.0.0.0/8");
  CHECK(Matches(t, V6("::ffff:127.0.0.1", 80)));
  CHECK_FALSE(Matches(t, V6("::ffff:10.0.0.1", 80)));
}

TEST_CASE("matching rejects other families and short addresses", "[route]") {
  const RouteTable t = Parse("0.0.0.0/0,[::]/0");
  sockaddr_in a = V4("1.2.3.4", 80);
  CHECK_FALSE(t.Matches(reinterpret_cast<sockaddr*>(&a), sizeof(a) - 1));
  a.sin_family = AF_UNIX;
  CHECK_FALSE(t.Matches(reinterpret_cast<sockaddr*>(&a), sizeof(a)));
  CHECK_FALSE(t.Matches(nullptr, 0));
  // The 24-byte RFC 2133 sockaddr_in6 (no scope id) is complete enough for the kernel.
  sockaddr_in6 b = V6("::1", 80);
  CHECK(t.Matches(reinterpret_cast<sockaddr*>(&b), 24));
  CHECK_FALSE(t.Matches(reinterpret_cast<sockaddr*>(&b), 23));
}

}  // namespace xsock::intercept
