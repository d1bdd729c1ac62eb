// shared/rules: profile selection and the outgoing/incoming decisions.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <string>
#include <vector>

#include "shared/config.h"
#include "shared/rules.h"

namespace {

using namespace xsock::config;

Config Parse(std::string_view text) {
  ParseResult r = ParseConfig(text, "r.conf");
  for (const ConfigError& e : r.errors) UNSCOPED_INFO(e.ToString());
  REQUIRE(r.config.has_value());
  return std::move(*r.config);
}

Endpoint Ep(std::string_view s) {
  std::optional<Endpoint> e = ParseEndpoint(s, false);
  REQUIRE(e.has_value());
  return *e;
}

// The rule number deciding `dest` (0: the default) and the action, as "2 route".
std::string Connect(const Profile& p, std::string_view dest) {
  const Decision d = DecideConnect(p, Ep(dest));
  return std::to_string(d.rule) + " " + std::string(ActionName(d.action));
}
std::string Host(const Profile& p, std::string_view host, uint16_t port = 0) {
  const Decision d = DecideHost(p, host, port);
  return std::to_string(d.rule) + " " + std::string(ActionName(d.action));
}
std::string Bind(const Profile& p, std::string_view local) {
  const BindDecision d = DecideBind(p, Ep(local));
  std::string out = std::to_string(d.rule) + " " + std::string(ActionName(d.action));
  if (d.mapped) out += " -> " + EndpointToString(d.host);
  return out;
}

std::string OneRule(std::string_view rule, std::string_view def = "bypass") {
  return "[[profile]]\nname = \"p\"\noutgoing_default = \"" + std::string(def) +
         "\"\n[[profile.outgoing]]\naction = \"route\"\n" + std::string(rule) + "\n";
}

}  // namespace

TEST_CASE("CIDR edge cases: /0, /32, /128, host bits, byte boundaries") {
  {
    const Config c = Parse(OneRule("to = \"0.0.0.0/0\""));
    const Profile& p = c.profiles[0];
    CHECK(Connect(p, "0.0.0.0:1") == "1 route");
    CHECK(Connect(p, "255.255.255.255:65535") == "1 route");
    CHECK(Connect(p, "[::1]:1") == "0 bypass");  // /0 of IPv4 is not IPv6
    CHECK(Connect(p, "[::ffff:1.2.3.4]:1") == "1 route");
  }
  {
    const Config c = Parse(OneRule("to = \"::/0\""));
    CHECK(Connect(c.profiles[0], "[2001:db8::1]:1") == "1 route");
    CHECK(Connect(c.profiles[0], "1.2.3.4:1") == "0 bypass");
    CHECK(Connect(c.profiles[0], "[::ffff:1.2.3.4]:1") == "0 bypass");  // mapped is IPv4
  }
  {
    const Config c = Parse(OneRule("to = [\"10.1.2.3/32\", \"10.1.2.4\"]"));
    CHECK(Connect(c.profiles[0], "10.1.2.3:80") == "1 route");
    CHECK(Connect(c.profiles[0], "10.1.2.4:80") == "1 route");
    CHECK(Connect(c.profiles[0], "10.1.2.5:80") == "0 bypass");
    CHECK(Connect(c.profiles[0], "10.1.2.2:80") == "0 bypass");
  }
  {
    const Config c = Parse(OneRule("to = [\"fd00::1/128\"]"));
    CHECK(Connect(c.profiles[0], "[fd00::1]:80") == "1 route");
    CHECK(Connect(c.profiles[0], "[fd00::2]:80") == "0 bypass");
    sockaddr_in6 in6 = {};  // a scope id does not change the match
    in6.sin6_family = AF_INET6;
    inet_pton(AF_INET6, "fd00::1", &in6.sin6_addr);
    in6.sin6_scope_id = 3;
    const auto e = EndpointFromSockaddr(reinterpret_cast<sockaddr*>(&in6), sizeof(in6));
    REQUIRE(e);
    CHECK(e->scope_id == 3);
    CHECK(DecideConnect(c.profiles[0], *e).routed());
    sockaddr_storage ss;
    ToSockaddr(*e, &ss);
    CHECK(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_scope_id == 3);
  }
  {
    // Host bits below the prefix are cleared: 10.1.2.3/8 is 10.0.0.0/8.
    const Config c = Parse(OneRule("to = \"10.1.2.3/8\""));
    CHECK(c.profiles[0].outgoing[0].to[0].addr[1] == 0);
    CHECK(Connect(c.profiles[0], "10.200.0.1:1") == "1 route");
    CHECK(Connect(c.profiles[0], "11.0.0.0:1") == "0 bypass");
  }
  {
    // A prefix that does not end on a byte: 192.168.4.0/22 is .4.0 - .7.255.
    const Config c = Parse(OneRule("to = \"192.168.5.9/22\""));
    CHECK(Connect(c.profiles[0], "192.168.3.255:1") == "0 bypass");
    CHECK(Connect(c.profiles[0], "192.168.4.0:1") == "1 route");
    CHECK(Connect(c.profiles[0], "192.168.7.255:1") == "1 route");
    CHECK(Connect(c.profiles[0], "192.168.8.0:1") == "0 bypass");
  }
  {
    const Config c = Parse(OneRule("to = \"fe80::/10\""));
    CHECK(Connect(c.profiles[0], "[febf:ffff::1]:1") == "1 route");
    CHECK(Connect(c.profiles[0], "[fec0::1]:1") == "0 bypass");
  }
}

TEST_CASE("IPv4-mapped IPv6 destinations match IPv4 rules, from a sockaddr_in6 too") {
  const Config c = Parse(OneRule("to = \"127.0.0.0/8\""));
  const Profile& p = c.profiles[0];
  sockaddr_in6 in6 = {};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(8080);
  inet_pton(AF_INET6, "::ffff:127.0.0.1", &in6.sin6_addr);
  const Decision d = DecideConnect(p, reinterpret_cast<sockaddr*>(&in6), sizeof(in6));
  CHECK(d.routed());
  CHECK(d.rule == 1);
  // The 24-byte form without a scope id is accepted, as the kernel does.
  CHECK(DecideConnect(p, reinterpret_cast<sockaddr*>(&in6), 24).routed());
  CHECK(!DecideConnect(p, reinterpret_cast<sockaddr*>(&in6), 23).routed());
  // ::127.0.0.1 (IPv4-compatible, deprecated) is not mapped.
  inet_pton(AF_INET6, "::127.0.0.1", &in6.sin6_addr);
  CHECK(!DecideConnect(p, reinterpret_cast<sockaddr*>(&in6), sizeof(in6)).routed());

  const std::optional<Endpoint> e = EndpointFromSockaddr(
      reinterpret_cast<sockaddr*>(&in6), sizeof(in6));
  REQUIRE(e);
  CHECK(e->family == AF_INET6);
  // A mapped endpoint goes back out as a mapped sockaddr_in6.
  const Endpoint mapped = Ep("[::ffff:10.0.0.1]:5");
  CHECK(mapped.family == AF_INET);
  CHECK(mapped.v4_mapped);
  sockaddr_storage ss;
  CHECK(ToSockaddr(mapped, &ss) == sizeof(sockaddr_in6));
  const auto* back = reinterpret_cast<const sockaddr_in6*>(&ss);
  CHECK(IN6_IS_ADDR_V4MAPPED(&back->sin6_addr));
  CHECK(ntohs(back->sin6_port) == 5);
}

TEST_CASE("sockaddrs that are not complete IPv4/IPv6 addresses are bypassed") {
  const Config c = Parse(OneRule("", "route"));  // a rule matching everything
  const Profile& p = c.profiles[0];
  sockaddr_un un = {};
  un.sun_family = AF_UNIX;
  CHECK(!DecideConnect(p, reinterpret_cast<sockaddr*>(&un), sizeof(un)).routed());
  sockaddr_in in = {};
  in.sin_family = AF_INET;
  CHECK(DecideConnect(p, reinterpret_cast<sockaddr*>(&in), sizeof(in)).routed());
  CHECK(!DecideConnect(p, reinterpret_cast<sockaddr*>(&in), sizeof(in) - 1).routed());
  CHECK(!DecideConnect(p, nullptr, 0).routed());
  CHECK(!DecideBind(p, reinterpret_cast<sockaddr*>(&un), sizeof(un)).routed());
}

TEST_CASE("port ranges are inclusive; a rule without port matches every port") {
  const Config c = Parse(R"([[profile]]
name = "p"
outgoing_default = "bypass"
[[profile.outgoing]]
action = "route"
port = "8000-8100"
[[profile.outgoing]]
action = "route"
port = 65535
[[profile.outgoing]]
action = "route"
to = "10.0.0.0/8"
port = "1"
)");
  const Profile& p = c.profiles[0];
  CHECK(Connect(p, "1.1.1.1:7999") == "0 bypass");
  CHECK(Connect(p, "1.1.1.1:8000") == "1 route");
  CHECK(Connect(p, "1.1.1.1:8100") == "1 route");
  CHECK(Connect(p, "1.1.1.1:8101") == "0 bypass");
  CHECK(Connect(p, "1.1.1.1:65535") == "2 route");
  CHECK(Connect(p, "10.0.0.1:1") == "3 route");
  CHECK(Connect(p, "10.0.0.1:2") == "0 bypass");
  CHECK(Connect(p, "1.1.1.1:1") == "0 bypass");
}

TEST_CASE("the first matching rule decides, then the explicit default") {
  const Config c = Parse(R"([[profile]]
name = "p"
outgoing_default = "route"
[[profile.outgoing]]
action = "bypass"
to = "10.1.0.0/16"
[[profile.outgoing]]
action = "route"
to = "10.0.0.0/8"
port = 443
[[profile.outgoing]]
action = "bypass"
to = "10.0.0.0/8"
)");
  const Profile& p = c.profiles[0];
  CHECK(Connect(p, "10.1.2.3:443") == "1 bypass");  // rule 1 first, though rule 2 matches too
  CHECK(Connect(p, "10.2.2.3:443") == "2 route");
  CHECK(Connect(p, "10.2.2.3:80") == "3 bypass");
  CHECK(Connect(p, "192.0.2.1:80") == "0 route");
  const Decision d = DecideConnect(p, Ep("10.2.2.3:443"));
  CHECK(d.matched == &p.outgoing[1]);
  CHECK(DescribeDecision(c, p, d) ==
        "outgoing rule 2 of profile 'p' (r.conf:7): route to 10.0.0.0/8 port 443");
  CHECK(DescribeDecision(c, p, DecideConnect(p, Ep("192.0.2.1:80"))) ==
        "outgoing_default of profile 'p' (r.conf:3): route");
}

TEST_CASE("host name rules: exact, globs, case, trailing dot, ports; address rules skip names") {
  const Config c = Parse(R"([[profile]]
name = "p"
outgoing_default = "bypass"
[[profile.outgoing]]
action = "route"
to = "0.0.0.0/0"
[[profile.outgoing]]
action = "bypass"
host = "secret.db.internal"
[[profile.outgoing]]
action = "route"
host = ["*.internal", "db[0-9].example.com"]
[[profile.outgoing]]
action = "route"
host = "api.example.com"
port = "443"
)");
  const Profile& p = c.profiles[0];
  CHECK(Host(p, "secret.db.internal") == "2 bypass");
  CHECK(Host(p, "a.db.internal") == "3 route");
  CHECK(Host(p, "A.DB.Internal.") == "3 route");
  CHECK(Host(p, "internal") == "0 bypass");
  CHECK(Host(p, "db7.example.com") == "3 route");
  CHECK(Host(p, "dbx.example.com") == "0 bypass");
  CHECK(Host(p, "api.example.com", 443) == "4 route");
  CHECK(Host(p, "api.example.com", 80) == "0 bypass");
  CHECK(Host(p, "api.example.com") == "0 bypass");  // port not known: a port rule cannot match
  // Name rules never decide an address, even one that reads like a name's.
  CHECK(Connect(p, "10.0.0.1:443") == "1 route");
}

TEST_CASE("a rule with neither to nor host matches addresses and names alike") {
  const Config c = Parse(OneRule("port = 53"));
  CHECK(Connect(c.profiles[0], "[::1]:53") == "1 route");
  CHECK(Host(c.profiles[0], "ns.example", 53) == "1 route");
  CHECK(Host(c.profiles[0], "ns.example", 54) == "0 bypass");
}

TEST_CASE("incoming: first match, port mapping by offset, host address, default") {
  const Config c = Parse(R"([[profile]]
name = "p"
outgoing_default = "bypass"
incoming_default = "route"
[[profile.incoming]]
action = "bypass"
address = "192.168.0.0/16"
[[profile.incoming]]
action = "route"
port = 80
host_port = 8080
[[profile.incoming]]
action = "route"
port = "9000-9009"
host_port = 19000
[[profile.incoming]]
action = "route"
address = ["0.0.0.0/0"]
port = "7000"
host_address = "127.0.0.1"
[[profile.incoming]]
action = "route"
address = "::/0"
port = "7000"
host_address = "::1"
[[profile.incoming]]
action = "bypass"
port = "1-1023"
)");
  const Profile& p = c.profiles[0];
  CHECK(Bind(p, "192.168.1.1:80") == "1 bypass");
  CHECK(Bind(p, "0.0.0.0:80") == "2 route -> 0.0.0.0:8080");
  CHECK(Bind(p, "[::]:80") == "2 route -> [::]:8080");
  CHECK(Bind(p, "0.0.0.0:9000") == "3 route -> 0.0.0.0:19000");
  CHECK(Bind(p, "0.0.0.0:9009") == "3 route -> 0.0.0.0:19009");
  CHECK(Bind(p, "0.0.0.0:9010") == "0 route");
  CHECK(Bind(p, "0.0.0.0:7000") == "4 route -> 127.0.0.1:7000");
  CHECK(Bind(p, "[fd00::5]:7000") == "5 route -> [::1]:7000");
  CHECK(Bind(p, "0.0.0.0:22") == "6 bypass");
  CHECK(Bind(p, "0.0.0.0:0") == "0 route");  // an ephemeral bind: only port-less rules match
  const BindDecision d = DecideBind(p, Ep("0.0.0.0:80"));
  CHECK(DescribeDecision(c, p, d) ==
        "incoming rule 2 of profile 'p' (r.conf:8): route any address port 80 -> host port 8080");
  CHECK(DescribeDecision(c, p, DecideBind(p, Ep("0.0.0.0:9010"))) ==
        "incoming_default of profile 'p' (r.conf:4): route");
  // A mapped bind of a v4-mapped address stays v4-mapped on the way out.
  const BindDecision m = DecideBind(p, Ep("[::ffff:0.0.0.0]:80"));
  CHECK(m.host.v4_mapped);
  CHECK(m.host.port == 8080);
}

TEST_CASE("GuestEndpoint inverts a mapped bind, and only that") {
  const Config c = Parse(R"([[profile]]
name = "p"
outgoing_default = "bypass"
incoming_default = "route"
[[profile.incoming]]
action = "bypass"
address = "192.168.0.0/16"
[[profile.incoming]]
action = "route"
port = 80
host_port = 8080
[[profile.incoming]]
action = "route"
port = "9000-9009"
host_port = 19000
[[profile.incoming]]
action = "route"
address = ["0.0.0.0/0"]
port = "7000"
host_address = "127.0.0.1"
[[profile.incoming]]
action = "route"
address = "10.9.8.7"
port = "7100"
host_address = "127.0.0.2"
)");
  const Profile& p = c.profiles[0];
  auto guest = [&](std::string_view host) {
    const std::optional<Endpoint> g = GuestEndpoint(p, Ep(host));
    return g ? EndpointToString(*g) : std::string("as is");
  };
  CHECK(guest("0.0.0.0:8080") == "0.0.0.0:80");
  CHECK(guest("[::]:8080") == "[::]:80");
  CHECK(guest("10.1.1.1:8080") == "10.1.1.1:80");  // an accepted connection's local address
  CHECK(guest("0.0.0.0:19000") == "0.0.0.0:9000");
  CHECK(guest("0.0.0.0:19009") == "0.0.0.0:9009");
  CHECK(guest("0.0.0.0:19010") == "as is");  // past the mapped range
  CHECK(guest("0.0.0.0:18999") == "as is");
  CHECK(guest("127.0.0.1:7000") == "0.0.0.0:7000");   // several guest addresses: the wildcard
  // Accepted connections: the port only.
  CHECK(EndpointToString(*GuestEndpoint(p, Ep("10.1.1.1:8080"), false)) == "10.1.1.1:80");
  CHECK(EndpointToString(*GuestEndpoint(p, Ep("127.0.0.2:7100"), false)) == "127.0.0.2:7100");
  CHECK_FALSE(GuestEndpoint(p, Ep("192.168.1.1:8080"), false).has_value());
  CHECK(guest("127.0.0.2:7100") == "10.9.8.7:7100");  // the one address the rule has
  CHECK(guest("127.0.0.2:7000") == "as is");          // no rule maps to this pair
  CHECK(guest("192.168.1.1:8080") == "as is");        // the inverse would be bypassed
  CHECK(guest("0.0.0.0:5000") == "as is");            // routed unmapped
  // A v4-mapped host address inverts to a v4-mapped guest address.
  const std::optional<Endpoint> m = GuestEndpoint(p, Ep("[::ffff:0.0.0.0]:8080"));
  REQUIRE(m.has_value());
  CHECK(m->v4_mapped);
  CHECK(m->port == 80);
  // Round trip: every mapped bind comes back as the address asked for.
  for (const char* local : {"0.0.0.0:80", "0.0.0.0:9004", "10.9.8.7:7100", "[::]:80"}) {
    const BindDecision d = DecideBind(p, Ep(local));
    REQUIRE(d.mapped);
    CHECK(guest(EndpointToString(d.host)) == local);
  }
}

TEST_CASE("a connect to a resolved address is decided by host rules in rule order") {
  const Config c = Parse(R"([[profile]]
name = "p"
outgoing_default = "bypass"
[[profile.outgoing]]
action = "bypass"
to = "10.0.0.1"
[[profile.outgoing]]
action = "route"
host = ["db-*.internal", "cache.internal"]
port = "5432-6379"
[[profile.outgoing]]
action = "route"
to = "10.0.0.0/8"
port = 80
)");
  const Profile& p = c.profiles[0];
  CHECK(HasHostRules(p));
  auto decide = [&](std::string_view dest, std::vector<std::string> names) {
    const std::string* named = nullptr;
    const Decision d = DecideConnect(p, Ep(dest), names, &named);
    std::string out = std::to_string(d.rule) + " " + std::string(ActionName(d.action));
    if (named != nullptr) out += " by " + *named;
    return out;
  };
  CHECK(decide("10.2.3.4:5432", {}) == "0 bypass");  // no name: the address alone
  CHECK(decide("10.2.3.4:5432", {"db-1.internal"}) == "2 route by db-1.internal");
  CHECK(decide("10.2.3.4:5432", {"DB-1.Internal."}) == "2 route by DB-1.Internal.");
  CHECK(decide("10.2.3.4:6379", {"other.example", "cache.internal"}) ==
        "2 route by cache.internal");
  CHECK(decide("10.2.3.4:22", {"db-1.internal"}) == "0 bypass");   // port outside the rule
  CHECK(decide("10.0.0.1:5432", {"db-1.internal"}) == "1 bypass");  // an earlier rule wins
  CHECK(decide("10.2.3.4:80", {"db-1.internal"}) == "3 route");    // address rules still apply
  CHECK(decide("10.2.3.4:5432", {"www.example"}) == "0 bypass");
  const Config plain = Parse(OneRule("to = \"10.0.0.0/8\""));
  CHECK_FALSE(HasHostRules(plain.profiles[0]));
}

TEST_CASE("incoming_default is bypass when not written") {
  const Config c = Parse(OneRule(""));
  const Profile& p = c.profiles[0];
  CHECK(Bind(p, "0.0.0.0:80") == "0 bypass");
  CHECK(DescribeDecision(c, p, DecideBind(p, Ep("0.0.0.0:80"))) ==
        "incoming_default of profile 'p' (not set): bypass");
}

TEST_CASE("profile selection: name, apps (basename, path, globs), users, order, default") {
  const Config c = Parse(R"(default_profile = "fallback"
[[profile]]
name = "named-only"
outgoing_default = "route"
[[profile]]
name = "by-user"
apps = "python3*"
users = ["alice", 2000]
outgoing_default = "route"
[[profile]]
name = "by-app"
apps = ["curl", "/opt/*/bin/*", "python3"]
outgoing_default = "route"
[[profile]]
name = "root-anything"
users = 0
outgoing_default = "route"
[[profile]]
name = "fallback"
outgoing_default = "bypass"
)");
  const auto sel = [&](std::string_view exe, uid_t uid, std::string_view user = "",
                       std::string_view name = "") {
    const ProfileChoice ch = SelectProfile(c, {exe, uid, user}, name);
    return ch.profile == nullptr ? std::string("-") : ch.profile->name;
  };
  CHECK(sel("/usr/bin/curl", 1000) == "by-app");
  CHECK(sel("curl", 1000) == "by-app");
  CHECK(sel("/usr/bin/curl-config", 1000) == "fallback");
  CHECK(sel("/opt/x/bin/tool", 1000) == "by-app");
  CHECK(sel("/opt/x/sbin/tool", 1000) == "fallback");
  CHECK(sel("/opt/x/y/bin/tool", 1000) == "by-app");  // '*' crosses '/' (no FNM_PATHNAME)
  CHECK(sel("tool", 1000) == "fallback");  // a path pattern needs the path
  CHECK(sel("/usr/bin/python3.11", 1000, "alice") == "by-user");
  CHECK(sel("/usr/bin/python3.11", 2000) == "by-user");
  CHECK(sel("/usr/bin/python3", 1000, "bob") == "by-app");  // by-user's users do not match
  CHECK(sel("/usr/bin/python3.11", 1000, "bob") == "fallback");
  CHECK(sel("/usr/bin/true", 0) == "root-anything");
  CHECK(sel("/usr/bin/curl", 0) == "by-app");  // earlier in the file wins
  CHECK(sel("/usr/bin/curl", 0, "", "named-only") == "named-only");
  CHECK(sel("/usr/bin/curl", 0, "", "nope") == "-");

  const ProfileChoice by_name = SelectProfile(c, {"/x", 1, ""}, "named-only");
  CHECK(by_name.by == SelectedBy::kName);
  const ProfileChoice unknown = SelectProfile(c, {"/x", 1, ""}, "nope");
  CHECK(unknown.by == SelectedBy::kUnknownName);
  const ProfileChoice app = SelectProfile(c, {"/usr/bin/python3.9", 2000, ""}, "");
  CHECK(app.by == SelectedBy::kApp);
  REQUIRE(app.app_pattern != nullptr);
  CHECK(*app.app_pattern == "python3*");
  REQUIRE(app.user != nullptr);
  CHECK(app.user->uid == 2000u);
  const ProfileChoice def = SelectProfile(c, {"/usr/bin/true", 5, ""}, "");
  CHECK(def.by == SelectedBy::kDefaultProfile);
  CHECK(def.profile->name == "fallback");

  const Config none = Parse("[[profile]]\nname = \"x\"\napps = \"curl\"\noutgoing_default = \"route\"\n");
  const ProfileChoice n = SelectProfile(none, {"/bin/true", 0, ""}, "");
  CHECK(n.by == SelectedBy::kNone);
  CHECK(n.profile == nullptr);
}

TEST_CASE("GlobMatch is fnmatch without flags") {
  CHECK(GlobMatch("*", ""));
  CHECK(GlobMatch("*", "/a/b"));
  CHECK(GlobMatch("a?c", "abc"));
  CHECK(!GlobMatch("a?c", "ac"));
  CHECK(GlobMatch("[!x]y", "zy"));
  CHECK(!GlobMatch("nginx", "nginx2"));
}

TEST_CASE("ParseEndpoint reads explain's destinations") {
  CHECK(EndpointToString(Ep("10.1.2.3:443")) == "10.1.2.3:443");
  CHECK(EndpointToString(Ep("[::1]:22")) == "[::1]:22");
  CHECK(EndpointToString(Ep("::1")) == "[::1]:0");
  CHECK(!ParseEndpoint("db.internal:5432", true));
  CHECK(!ParseEndpoint("10.1.2.3", true));
  CHECK(!ParseEndpoint("10.1.2.3:", true));
  CHECK(!ParseEndpoint("10.1.2.3:65536", true));
  CHECK(!ParseEndpoint("[::1]", true));
  CHECK(!ParseEndpoint("[::1]x", false));
  CHECK(!ParseEndpoint("[10.0.0.1]:1", false));
  CHECK(ParseEndpoint("[::1]:0", true)->port == 0);
}

TEST_CASE("the example's profiles decide as documented") {
  const ParseResult r = ParseConfigFile(XSOCK_EXAMPLES "/xsock.conf");
  REQUIRE(r.config);
  const Config& c = *r.config;
  const Profile& guest = *c.FindProfile("guest");
  CHECK(Connect(guest, "127.0.0.1:80") == "1 bypass");
  CHECK(Connect(guest, "[::1]:80") == "1 bypass");
  CHECK(Connect(guest, "[::ffff:127.0.0.1]:80") == "1 bypass");
  CHECK(Connect(guest, "169.254.169.254:80") == "2 bypass");
  CHECK(Connect(guest, "1.1.1.1:443") == "0 route");
  CHECK(Connect(guest, "[2001:db8::1]:443") == "0 route");
  CHECK(Host(guest, "example.com", 443) == "0 route");
  CHECK(guest.settings.resolve == Resolve::kBackend);
  const Profile& billing = *c.FindProfile("billing");
  CHECK(Connect(billing, "10.20.3.4:5432") == "1 route");
  CHECK(Connect(billing, "10.20.3.4:443") == "0 bypass");
  CHECK(Connect(billing, "[fd20::7]:5432") == "1 route");
  CHECK(Host(billing, "db-2.internal", 5433) == "2 route");
  CHECK(Host(billing, "db-2.internal", 80) == "0 bypass");
  CHECK(billing.settings.on_unreachable == OnUnreachable::kFallback);
  const Profile& web = *c.FindProfile("web");
  CHECK(Bind(web, "0.0.0.0:80") == "1 route -> 0.0.0.0:8080");
  CHECK(Bind(web, "0.0.0.0:9003") == "2 route -> 127.0.0.1:9003");
  CHECK(Bind(web, "[::]:9003") == "0 bypass");
  CHECK(Bind(web, "0.0.0.0:22") == "0 bypass");
  CHECK(Connect(web, "127.0.0.1:3000") == "1 route");
  const auto sel = [&](std::string_view exe, uid_t uid, std::string_view user = "") {
    return SelectProfile(c, {exe, uid, user}, "").profile->name;
  };
  CHECK(sel("/usr/local/bin/billingd", 5001) == "billing");
  CHECK(sel("/usr/bin/python3.11", 1000, "billing") == "billing");
  CHECK(sel("/usr/bin/python3", 1000, "alice") == "web");
  CHECK(sel("/usr/sbin/nginx", 33) == "web");
  CHECK(sel("/usr/bin/curl", 1000) == "guest");
}
