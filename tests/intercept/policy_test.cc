// RoutingPolicy: the configuration file (or XSOCK_ROUTE) as the interceptor sees it.
#include "libintercept/policy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace xsock::intercept {
namespace {

struct TempConfig {
  std::string path;
  explicit TempConfig(const std::string& text) {
    char tmpl[] = "/tmp/xsock-policy-test.XXXXXX";
    const int fd = mkstemp(tmpl);
    REQUIRE(fd >= 0);
    REQUIRE(write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
    close(fd);
    path = tmpl;
  }
  ~TempConfig() { unlink(path.c_str()); }
};

constexpr const char* kConfig = R"(
[settings]
ring_size = 65536
[[profile]]
name = "db"
apps = ["billingd"]
outgoing_default = "bypass"
on_unreachable = "fallback"
  [[profile.outgoing]]
  action = "route"
  to = "10.20.0.0/16"
  port = 5432
[[profile]]
name = "web"
outgoing_default = "route"
log_level = "debug"
resolve = "backend"
  [[profile.outgoing]]
  action = "bypass"
  to = "127.0.0.0/8"
  [[profile.incoming]]
  action = "route"
  port = 80
  host_port = 8080
)";

PolicySource Source(const std::string& path, const std::string& exe, const std::string& profile) {
  PolicySource s;
  s.config_path = path;
  s.config_path_explicit = true;
  s.profile = profile;
  s.exe_storage = exe;
  s.app.exe = s.exe_storage;
  s.app.uid = 1000;
  return s;
}

sockaddr_in V4(const char* ip, uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

bool Routes(const RoutingPolicy& p, const char* ip, uint16_t port) {
  const sockaddr_in a = V4(ip, port);
  return p.ForConnect(reinterpret_cast<const sockaddr*>(&a), sizeof a).route;
}

struct Lines {
  std::vector<std::string> lines;
  RoutingPolicy::LogFn fn() {
    return [this](absl::string_view l) { lines.emplace_back(l); };
  }
};

TEST_CASE("the profile chosen by application decides connects, first match wins", "[policy]") {
  TempConfig cfg(kConfig);
  Lines log;
  auto p = RoutingPolicy::Load(Source(cfg.path, "/usr/sbin/billingd", ""), log.fn());
  CHECK(log.lines.empty());
  CHECK(p->origin() == "profile 'db' (application matches 'billingd')");
  CHECK(Routes(*p, "10.20.3.4", 5432));
  CHECK_FALSE(Routes(*p, "10.20.3.4", 5433));
  CHECK_FALSE(Routes(*p, "10.21.0.1", 5432));
  CHECK(p->fallback_when_unreachable());
  CHECK(p->ring_order() == 16);
  CHECK(p->may_route());
  CHECK_FALSE(p->resolve_through_backend());
}

TEST_CASE("XSOCK_PROFILE picks a profile by name; its settings and binds apply", "[policy]") {
  TempConfig cfg(kConfig);
  Lines log;
  auto p = RoutingPolicy::Load(Source(cfg.path, "/usr/bin/python3", "web"), log.fn());
  CHECK(log.lines.empty());
  CHECK(p->origin() == "profile 'web' (XSOCK_PROFILE)");
  CHECK(Routes(*p, "192.0.2.7", 443));
  CHECK_FALSE(Routes(*p, "127.0.0.1", 443));
  CHECK(p->log_level() == config::LogLevel::kDebug);
  CHECK(p->resolve_through_backend());
  CHECK_FALSE(p->fallback_when_unreachable());
  const sockaddr_in any80 = V4("0.0.0.0", 80);
  const BindVerdict b = p->ForBind(reinterpret_cast<const sockaddr*>(&any80), sizeof any80);
  REQUIRE(b.route);
  CHECK(b.mapped);
  REQUIRE(b.host_len == sizeof(sockaddr_in));
  CHECK(ntohs(reinterpret_cast<const sockaddr_in&>(b.host).sin_port) == 8080);
  const sockaddr_in any81 = V4("0.0.0.0", 81);
  CHECK_FALSE(p->ForBind(reinterpret_cast<const sockaddr*>(&any81), sizeof any81).route);
  const sockaddr_in up = V4("192.0.2.7", 443);
  const std::string why = p->ExplainConnect(reinterpret_cast<const sockaddr*>(&up), sizeof up);
  CHECK(why.rfind("connect 192.0.2.7:443: ", 0) == 0);
  CHECK(why.find("profile 'web'") != std::string::npos);
  CHECK(why.find("route") != std::string::npos);
}

TEST_CASE("no profile matches and no default_profile: nothing is routed", "[policy]") {
  TempConfig cfg(kConfig);
  Lines log;
  auto p = RoutingPolicy::Load(Source(cfg.path, "/usr/bin/curl", ""), log.fn());
  CHECK(log.lines.empty());
  CHECK_FALSE(p->may_route());
  CHECK_FALSE(Routes(*p, "10.20.3.4", 5432));
  CHECK(p->ring_order() == 16);  // [settings] still apply
}

TEST_CASE("XSOCK_ROUTE replaces the configuration file", "[policy]") {
  TempConfig cfg(kConfig);
  Lines log;
  PolicySource s = Source(cfg.path, "/usr/sbin/billingd", "");
  s.route_env = "192.0.2.0/24";
  s.route_env_set = true;
  auto p = RoutingPolicy::Load(s, log.fn());
  CHECK(p->origin() == "XSOCK_ROUTE");
  CHECK(Routes(*p, "192.0.2.9", 1));
  CHECK_FALSE(Routes(*p, "10.20.3.4", 5432));
  CHECK(p->ring_order() == 0);
}

TEST_CASE("a missing default file routes nothing and says nothing", "[policy]") {
  Lines log;
  PolicySource s = Source("/nonexistent/xsock.conf", "/usr/bin/curl", "");
  s.config_path_explicit = false;
  auto p = RoutingPolicy::Load(s, log.fn());
  CHECK(log.lines.empty());
  CHECK_FALSE(p->may_route());
  CHECK(p->origin() == "no configuration file");
}

TEST_CASE("an unusable configuration fails closed with one line", "[policy]") {
  Lines log;
  SECTION("malformed") {
    TempConfig cfg("[[profile]]\nname = 3\n");
    auto p = RoutingPolicy::Load(Source(cfg.path, "/usr/bin/curl", ""), log.fn());
    REQUIRE(log.lines.size() == 1);
    CHECK(log.lines[0].rfind("xsock: " + cfg.path + ":2:", 0) == 0);
    CHECK(log.lines[0].find("; TCP connect() and bind() fail (ECONNREFUSED / EACCES), "
                            "everything else is untouched") != std::string::npos);
    const sockaddr_in a = V4("127.0.0.1", 80);
    CHECK(p->ForConnect(reinterpret_cast<const sockaddr*>(&a), sizeof a).fail);
    CHECK(p->ForBind(reinterpret_cast<const sockaddr*>(&a), sizeof a).fail);
    sockaddr un{};
    un.sa_family = AF_UNIX;
    CHECK_FALSE(p->ForConnect(&un, sizeof un).fail);  // not IP: untouched
  }
  SECTION("an explicit XSOCK_CONFIG that does not exist") {
    auto p = RoutingPolicy::Load(Source("/nonexistent/x.conf", "/usr/bin/curl", ""), log.fn());
    REQUIRE(log.lines.size() == 1);
    CHECK(log.lines[0].rfind("xsock: /nonexistent/x.conf: cannot read", 0) == 0);
    CHECK(Routes(*p, "10.0.0.1", 1) == false);
  }
  SECTION("an unknown XSOCK_PROFILE") {
    TempConfig cfg(kConfig);
    auto p = RoutingPolicy::Load(Source(cfg.path, "/usr/bin/curl", "nope"), log.fn());
    REQUIRE(log.lines.size() == 1);
    CHECK(log.lines[0] == "xsock: XSOCK_PROFILE 'nope' names no profile of " + cfg.path +
                              "; TCP connect() and bind() fail (ECONNREFUSED / EACCES), "
                              "everything else is untouched");
  }
}

TEST_CASE("XSOCK_LOG overrides the profile's log level; a bad value is reported", "[policy]") {
  TempConfig cfg(kConfig);
  Lines log;
  PolicySource s = Source(cfg.path, "/x", "web");
  s.log_env = "error";
  CHECK(RoutingPolicy::Load(s, log.fn())->log_level() == config::LogLevel::kError);
  s.log_env = "loud";
  auto p = RoutingPolicy::Load(s, log.fn());
  REQUIRE(log.lines.size() == 1);
  CHECK(log.lines[0] == "xsock: XSOCK_LOG 'loud' ignored: expected error, warn, info or debug");
  CHECK(p->log_level() == config::LogLevel::kDebug);  // the profile's
}

TEST_CASE("host rules decide connects to addresses resolved from their names", "[policy]") {
  TempConfig cfg(R"(
[[profile]]
name = "svc"
outgoing_default = "bypass"
  [[profile.outgoing]]
  action = "route"
  host = "*.db.internal"
  port = 5432
)");
  Lines log;
  auto p = RoutingPolicy::Load(Source(cfg.path, "/x", "svc"), log.fn());
  NameMemory names;
  p->set_names(&names);
  CHECK_FALSE(Routes(*p, "10.7.0.9", 5432));  // nothing resolved yet: by address, bypass
  names.Remember("main.db.internal", *config::ParseEndpoint("10.7.0.9", false));
  CHECK(Routes(*p, "10.7.0.9", 5432));
  CHECK_FALSE(Routes(*p, "10.7.0.9", 5433));
  CHECK_FALSE(Routes(*p, "10.7.0.10", 5432));
  const sockaddr_in a = V4("10.7.0.9", 5432);
  const std::string why = p->ExplainConnect(reinterpret_cast<const sockaddr*>(&a), sizeof a);
  CHECK(why.find("route") != std::string::npos);
  CHECK(why.find("(resolved from main.db.internal)") != std::string::npos);
  // A v4-mapped connect of a dual-stack socket finds the IPv4 name.
  sockaddr_in6 m{};
  m.sin6_family = AF_INET6;
  m.sin6_port = htons(5432);
  inet_pton(AF_INET6, "::ffff:10.7.0.9", &m.sin6_addr);
  CHECK(p->ForConnect(reinterpret_cast<const sockaddr*>(&m), sizeof m).route);
}

TEST_CASE("getsockname of a mapped bind shows the application's address", "[policy]") {
  TempConfig cfg(kConfig);
  Lines log;
  auto p = RoutingPolicy::Load(Source(cfg.path, "/x", "web"), log.fn());
  const sockaddr_in host = V4("0.0.0.0", 8080);
  const auto g = p->GuestLocal(reinterpret_cast<const sockaddr*>(&host), sizeof host);
  REQUIRE(g.has_value());
  CHECK(config::EndpointToString(*g) == "0.0.0.0:80");
  const sockaddr_in other = V4("0.0.0.0", 8081);
  CHECK_FALSE(p->GuestLocal(reinterpret_cast<const sockaddr*>(&other), sizeof other));
  // The db profile maps nothing.
  auto db = RoutingPolicy::Load(Source(cfg.path, "/usr/sbin/billingd", ""), log.fn());
  CHECK_FALSE(db->GuestLocal(reinterpret_cast<const sockaddr*>(&host), sizeof host));
}

TEST_CASE("NameMemory: latest name first, bounded per address and in all", "[policy]") {
  NameMemory m;
  const config::Endpoint a = *config::ParseEndpoint("10.0.0.1", false);
  const config::Endpoint b = *config::ParseEndpoint("[fd00::1]:80", false);
  CHECK(m.empty());
  CHECK(m.NamesOf(a).empty());
  m.Remember("one.example", a);
  m.Remember("two.example", a);
  m.Remember("one.example", a);  // again: moves to the front, not duplicated
  CHECK(m.NamesOf(a) == std::vector<std::string>{"one.example", "two.example"});
  CHECK(m.NamesOf(b).empty());
  m.Remember("v6.example", b);
  CHECK(m.NamesOf(b) == std::vector<std::string>{"v6.example"});
  for (int i = 0; i < 10; ++i) m.Remember("n" + std::to_string(i), a);
  CHECK(m.NamesOf(a).size() == NameMemory::kMaxNamesPerAddress);
  CHECK(m.NamesOf(a).front() == "n9");
  // The oldest address is forgotten first.
  for (size_t i = 0; i < NameMemory::kMaxAddresses; ++i) {
    config::Endpoint e{};
    e.family = AF_INET;
    e.addr[0] = 192;
    e.addr[1] = static_cast<uint8_t>(i >> 16);
    e.addr[2] = static_cast<uint8_t>(i >> 8);
    e.addr[3] = static_cast<uint8_t>(i);
    m.Remember("bulk", e);
  }
  CHECK(m.NamesOf(a).empty());
  CHECK(m.NamesOf(b).empty());
}

}  // namespace
}  // namespace xsock::intercept
