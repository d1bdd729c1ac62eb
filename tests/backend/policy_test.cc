// xsockd's access policy (backend/policy.h): the parser's errors (with line numbers) and
// every match key, rule order, the defaults, the errno choices, rewrites and v4-mapped
// IPv6 destinations, decided over parsed text.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <string>

#include "backend/policy.h"
#include "backend/stats.h"

namespace xsock::backend {
namespace {

PolicyParseOptions FakeNames() {
  PolicyParseOptions o;
  o.user_id = [](const std::string& n) -> std::optional<uint32_t> {
    if (n == "alice") return 1001;
    return std::nullopt;
  };
  o.group_id = [](const std::string& n) -> std::optional<uint32_t> {
    if (n == "staff") return 50;
    return std::nullopt;
  };
  return o;
}

Policy Parse(const std::string& text) {
  PolicyParseResult r = ParsePolicy(text, "t.conf", FakeNames());
  INFO(PolicyErrorsText(r.errors));
  REQUIRE(r.errors.empty());
  REQUIRE(r.policy.has_value());
  return std::move(*r.policy);
}

// The errors as "t.conf:L:C: message" lines.
std::vector<std::string> Errors(const std::string& text) {
  PolicyParseResult r = ParsePolicy(text, "t.conf", FakeNames());
  CHECK(!r.policy.has_value());
  std::vector<std::string> out;
  for (const auto& e : r.errors) out.push_back(e.ToString());
  return out;
}

bool AnyStartsWith(const std::vector<std::string>& v, const std::string& prefix,
                   const std::string& fragment) {
  for (const std::string& s : v) {
    if (s.rfind(prefix, 0) == 0 && s.find(fragment) != std::string::npos) return true;
  }
  return false;
}

config::Endpoint Ep(const std::string& text) {
  auto e = config::ParseEndpoint(text, true);
  REQUIRE(e.has_value());
  return *e;
}

ClientIdentity Who(uid_t uid = 1000, gid_t gid = 1000, std::string exe = "/usr/bin/curl",
                   std::string cgroup = "/user.slice/user-1000.slice/session-1.scope",
                   uint64_t netns = 4026531840) {
  ClientIdentity w;
  w.pid = 4242;
  w.uid = uid;
  w.gid = gid;
  w.exe = std::move(exe);
  w.cgroup = std::move(cgroup);
  w.netns = netns;
  w.proc_read = true;
  return w;
}

TEST_CASE(
    "an empty policy allows everything; [settings] defaults and errnos apply to clients "
    "no block matches",
    "[backend][policy]") {
  const Policy empty = Parse("");
  CHECK(empty.clients.empty());
  PolicyDecision d = DecidePolicyConnect(empty, Who(), Ep("10.1.2.3:80"));
  CHECK(d.allowed);
  CHECK(d.RuleName() == "default");
  CHECK(DecidePolicyBind(empty, Who(), Ep("0.0.0.0:80")).allowed);

  const Policy deny = Parse(R"(
[settings]
connect_default = "deny"
bind_default = "deny"
connect_deny_errno = "ENETUNREACH"
bind_deny_errno = "EADDRNOTAVAIL"
)");
  d = DecidePolicyConnect(deny, Who(), Ep("10.1.2.3:80"));
  CHECK(!d.allowed);
  CHECK(d.err == ENETUNREACH);
  CHECK(d.client == nullptr);
  CHECK(d.RuleName() == "default");
  d = DecidePolicyBind(deny, Who(), Ep("0.0.0.0:8080"));
  CHECK(!d.allowed);
  CHECK(d.err == EADDRNOTAVAIL);

  // Without errno settings: ECONNREFUSED and EACCES.
  const Policy plain = Parse("[settings]\nconnect_default = \"deny\"\nbind_default = \"deny\"\n");
  CHECK(DecidePolicyConnect(plain, Who(), Ep("10.1.2.3:80")).err == ECONNREFUSED);
  CHECK(DecidePolicyBind(plain, Who(), Ep("0.0.0.0:80")).err == EACCES);
}

TEST_CASE("connect rules: first match decides, the block's default otherwise, per-rule errno",
          "[backend][policy]") {
  const Policy p = Parse(R"(
[settings]
connect_deny_errno = "EHOSTUNREACH"

[[client]]
name = "guests"
connect_default = "deny"
bind_default = "allow"

  [[client.connect]]
  action = "allow"
  to = "10.0.0.7"
  port = 5432

  [[client.connect]]
  action = "deny"
  to = ["10.0.0.0/8", "fd00::/8"]
  errno = "EACCES"

  [[client.connect]]
  action = "allow"
  port = ["80", "443", "8000-8100"]
)");
  REQUIRE(p.clients.size() == 1);
  CHECK(p.rule_count() == 3);
  PolicyDecision d = DecidePolicyConnect(p, Who(), Ep("10.0.0.7:5432"));
  CHECK(d.allowed);
  CHECK(d.RuleName() == "guests#1");
  d = DecidePolicyConnect(p, Who(), Ep("10.0.0.7:5433"));  // rule 1's port differs: rule 2
  CHECK(!d.allowed);
  CHECK(d.err == EACCES);
  CHECK(d.RuleName() == "guests#2");
  d = DecidePolicyConnect(p, Who(), Ep("[fd00::1]:80"));  // rule 2 before rule 3
  CHECK(!d.allowed);
  CHECK(d.rule == 2);
  d = DecidePolicyConnect(p, Who(), Ep("192.0.2.1:8050"));
  CHECK(d.allowed);
  CHECK(d.rule == 3);
  d = DecidePolicyConnect(p, Who(), Ep("192.0.2.1:22"));  // nothing matches: block default
  CHECK(!d.allowed);
  CHECK(d.err == EHOSTUNREACH);  // the [settings] errno
  CHECK(d.RuleName() == "guests#default");
}

TEST_CASE("bind rules: unprivileged ports only, EACCES by default", "[backend][policy]") {
  const Policy p = Parse(R"(
[[client]]
name = "guests"
connect_default = "allow"
bind_default = "allow"
  [[client.bind]]
  action = "allow"
  addr = "127.0.0.1"
  port = 631
  [[client.bind]]
  action = "deny"
  port = "1-1023"
  [[client.bind]]
  action = "deny"
  addr = "::/0"
  errno = "EPERM"
)");
  CHECK(DecidePolicyBind(p, Who(), Ep("127.0.0.1:631")).allowed);
  PolicyDecision d = DecidePolicyBind(p, Who(), Ep("0.0.0.0:80"));
  CHECK(!d.allowed);
  CHECK(d.err == EACCES);
  CHECK(d.RuleName() == "guests#2");
  CHECK(DecidePolicyBind(p, Who(), Ep("0.0.0.0:8080")).allowed);
  CHECK(DecidePolicyBind(p, Who(), Ep("0.0.0.0:0")).allowed);  // ephemeral: no port rule
  d = DecidePolicyBind(p, Who(), Ep("[::]:8080"));
  CHECK(!d.allowed);
  CHECK(d.err == EPERM);
}

TEST_CASE("client blocks: every match key, all keys must match, file order", "[backend][policy]") {
  const Policy p = Parse(R"(
[[client]]
name = "by-uid"
uids = [0, "alice", "2000"]
connect_default = "deny"
bind_default = "allow"
[[client]]
name = "by-gid"
gids = "staff"
connect_default = "deny"
bind_default = "allow"
[[client]]
name = "by-app-path"
apps = "/opt/*/bin/tool"
connect_default = "deny"
bind_default = "allow"
[[client]]
name = "by-app-name"
apps = ["python3*", "nc"]
connect_default = "deny"
bind_default = "allow"
[[client]]
name = "by-cgroup"
cgroups = ["/system.slice/guest-*.scope"]
connect_default = "deny"
bind_default = "allow"
[[client]]
name = "by-netns"
netns = ["net:[4026532000]", "4026532001"]
connect_default = "deny"
bind_default = "allow"
[[client]]
name = "both"
uids = 3000
apps = "curl"
connect_default = "deny"
bind_default = "allow"
[[client]]
name = "everyone-else"
connect_default = "allow"
bind_default = "allow"
)");
  const auto block = [&](const ClientIdentity& w) {
    const ClientBlock* b = MatchClient(p, w);
    return b == nullptr ? std::string("none") : b->name;
  };
  CHECK(block(Who(0)) == "by-uid");
  CHECK(block(Who(1001)) == "by-uid");  // "alice"
  CHECK(block(Who(2000)) == "by-uid");  // a number in a string
  CHECK(block(Who(1000, 50)) == "by-gid");
  CHECK(block(Who(1000, 1000, "/opt/x/bin/tool")) == "by-app-path");
  CHECK(block(Who(1000, 1000, "/usr/bin/tool")) == "everyone-else");  // path pattern: whole path
  CHECK(block(Who(1000, 1000, "/usr/bin/python3.11")) == "by-app-name");  // basename
  CHECK(block(Who(1000, 1000, "/bin/nc")) == "by-app-name");
  CHECK(block(Who(1000, 1000, "/bin/ncat")) == "everyone-else");
  CHECK(block(Who(1000, 1000, "/bin/x", "/system.slice/guest-7.scope")) == "by-cgroup");
  CHECK(block(Who(1000, 1000, "/bin/x", "/system.slice/other.scope")) == "everyone-else");
  CHECK(block(Who(1000, 1000, "/bin/x", "/", 4026532000)) == "by-netns");
  CHECK(block(Who(1000, 1000, "/bin/x", "/", 4026532001)) == "by-netns");
  CHECK(block(Who(3000, 1000, "/usr/bin/curl")) == "both");
  CHECK(block(Who(3000, 1000, "/usr/bin/wget")) == "everyone-else");  // uid alone is not enough
  CHECK(block(Who(3001, 1000, "/usr/bin/curl")) == "everyone-else");
  // Unknown /proc fields never match a key that needs them.
  CHECK(block(Who(1000, 1000, "", "", 0)) == "everyone-else");
  const Policy apps_only = Parse(R"(
[[client]]
name = "a"
apps = "*"
connect_default = "deny"
bind_default = "deny"
)");
  CHECK(MatchClient(apps_only, Who(1000, 1000, "")) == nullptr);
  CHECK(MatchClient(apps_only, Who(1000, 1000, "/bin/true")) != nullptr);
}

TEST_CASE("rewrite: after the connect rules allowed the original destination",
          "[backend][policy]") {
  const Policy p = Parse(R"(
[[client]]
name = "db"
connect_default = "allow"
bind_default = "allow"
  [[client.connect]]
  action = "deny"
  to = "10.0.0.6"
  [[client.rewrite]]
  from = "10.0.0.5"
  port = 5432
  to = "127.0.0.1"
  to_port = 15432
  [[client.rewrite]]
  from = ["10.0.0.0/29"]
  to = "127.0.0.2"
  [[client.rewrite]]
  from = "fd00::/64"
  to = "::1"
)");
  PolicyDecision d = DecidePolicyConnect(p, Who(), Ep("10.0.0.5:5432"));
  REQUIRE(d.allowed);
  REQUIRE(d.rewritten.has_value());
  CHECK(config::EndpointToString(*d.rewritten) == "127.0.0.1:15432");
  CHECK(d.rewrite_rule == 1);
  d = DecidePolicyConnect(p, Who(), Ep("10.0.0.5:80"));  // port differs: rule 2, port kept
  REQUIRE(d.rewritten.has_value());
  CHECK(config::EndpointToString(*d.rewritten) == "127.0.0.2:80");
  CHECK(d.rewrite_rule == 2);
  d = DecidePolicyConnect(p, Who(), Ep("10.0.0.6:80"));  // denied first: no rewrite
  CHECK(!d.allowed);
  CHECK(!d.rewritten.has_value());
  d = DecidePolicyConnect(p, Who(), Ep("10.0.0.9:80"));
  CHECK(d.allowed);
  CHECK(!d.rewritten.has_value());
  d = DecidePolicyConnect(p, Who(), Ep("[fd00::5]:443"));
  REQUIRE(d.rewritten.has_value());
  CHECK(config::EndpointToString(*d.rewritten) == "[::1]:443");
}

TEST_CASE("v4-mapped IPv6 destinations match IPv4 rules and are rewritten v4-mapped",
          "[backend][policy]") {
  const Policy p = Parse(R"(
[[client]]
name = "m"
connect_default = "allow"
bind_default = "allow"
  [[client.connect]]
  action = "deny"
  to = "::ffff:192.0.2.0/120"   # written mapped: the IPv4 prefix 192.0.2.0/24
  [[client.rewrite]]
  from = "10.0.0.5"
  to = "127.0.0.1"
  to_port = 7
)");
  proto::SockAddr mapped;
  mapped.family = AF_INET6;
  mapped.port = 5432;
  REQUIRE(inet_pton(AF_INET6, "::ffff:10.0.0.5", mapped.addr.data()) == 1);
  mapped.flowinfo = 9;
  const auto e = PolicyEndpoint(mapped);
  REQUIRE(e.has_value());
  CHECK(e->family == AF_INET);
  CHECK(e->v4_mapped);
  PolicyDecision d = DecidePolicyConnect(p, Who(), *e);
  REQUIRE(d.rewritten.has_value());
  const proto::SockAddr host = PolicySockAddr(*d.rewritten, mapped);
  CHECK(host.family == AF_INET6);
  CHECK(proto::ToString(host) == "[::ffff:127.0.0.1]:7");
  CHECK(host.flowinfo == 9);

  proto::SockAddr denied = mapped;
  REQUIRE(inet_pton(AF_INET6, "::ffff:192.0.2.77", denied.addr.data()) == 1);
  d = DecidePolicyConnect(p, Who(), *PolicyEndpoint(denied));
  CHECK(!d.allowed);
  CHECK(d.err == ECONNREFUSED);
  // And a plain IPv4 address in the same prefix.
  CHECK(!DecidePolicyConnect(p, Who(), Ep("192.0.2.1:1")).allowed);
}

TEST_CASE("parser errors carry file:line:column and say what was expected", "[backend][policy]") {
  SECTION("unknown keys at every level") {
    const auto e = Errors(R"(verbose = true
[settings]
colour = "red"
[[client]]
name = "a"
connect_default = "allow"
bind_default = "allow"
user = 5
  [[client.connect]]
  action = "deny"
  dest = "1.2.3.4"
  [[client.rewrite]]
  from = "10.0.0.5"
  to = "127.0.0.1"
  via = "x"
)");
    CHECK(AnyStartsWith(e, "t.conf:1:1: ", "unknown key 'verbose'"));
    CHECK(AnyStartsWith(e, "t.conf:3:1: ", "settings: unknown key 'colour'"));
    CHECK(AnyStartsWith(e, "t.conf:8:1: ", "client 'a': unknown key 'user'"));
    CHECK(AnyStartsWith(e, "t.conf:11:3: ", "connect rule 1 of client 'a': unknown key 'dest'"));
    CHECK(AnyStartsWith(e, "t.conf:15:3: ", "rewrite rule 1 of client 'a': unknown key 'via'"));
    CHECK(e.size() == 5);
  }
  SECTION("TOML syntax") {
    const auto e = Errors("[settings]\nconnect_default = \n");
    REQUIRE(e.size() == 1);
    CHECK(AnyStartsWith(e, "t.conf:2:", "TOML syntax"));
  }
  SECTION("bad values") {
    const auto e = Errors(R"([settings]
connect_deny_errno = "ETIMEDOUT"
bind_deny_errno = "ECONNREFUSED"
connect_default = "maybe"
[[client]]
name = "a b"
connect_default = "allow"
bind_default = "allow"
[[client]]
name = "ok"
uids = ["nobody-here", -1]
gids = ["staff", "nogroup-here"]
apps = []
netns = "net:[abc]"
connect_default = "allow"
  [[client.connect]]
  action = "allow"
  errno = "EACCES"
  [[client.connect]]
  to = "10.0.0.0/33"
  port = "9-1"
  [[client.bind]]
  action = "deny"
  errno = "ENETUNREACH"
  port = 0
  [[client.rewrite]]
  from = "10.0.0.5"
  to = "::1"
  to_port = 70000
  [[client.rewrite]]
  to = "10.0.0.0/8"
)");
    CHECK(
        AnyStartsWith(e, "t.conf:2:22: ", "'connect_deny_errno' must be one of \"ECONNREFUSED\""));
    CHECK(AnyStartsWith(e, "t.conf:3:19: ", "'bind_deny_errno' must be one of \"EACCES\""));
    CHECK(AnyStartsWith(e, "t.conf:4:19: ", "must be \"allow\" or \"deny\""));
    CHECK(AnyStartsWith(e, "t.conf:6:8: ", "'name' must be 1-64 letters"));
    CHECK(AnyStartsWith(e, "t.conf:11:9: ", "no such user \"nobody-here\""));
    CHECK(AnyStartsWith(e, "t.conf:11:24: ", "'uids' entries must be user names or uids"));
    CHECK(AnyStartsWith(e, "t.conf:12:18: ", "no such group \"nogroup-here\""));
    CHECK(AnyStartsWith(e, "t.conf:13:8: ", "'apps' must be a glob string or a non-empty array"));
    CHECK(AnyStartsWith(e, "t.conf:14:9: ", "'netns' entries must be like"));
    CHECK(AnyStartsWith(e, "t.conf:9:1: ", "client 'ok': missing 'bind_default'"));
    CHECK(AnyStartsWith(e, "t.conf:18:11: ", "'errno' applies only to action = \"deny\""));
    CHECK(AnyStartsWith(e, "t.conf:19:3: ", "connect rule 2 of client 'ok': missing 'action'"));
    CHECK(AnyStartsWith(e, "t.conf:20:8: ", "prefix length must be 0-32"));
    CHECK(AnyStartsWith(e, "t.conf:21:10: ", "range must not be empty"));
    CHECK(AnyStartsWith(e, "t.conf:24:11: ",
                        "'errno' must be one of \"EACCES\", \"EPERM\", "
                        "\"EADDRNOTAVAIL\""));
    CHECK(AnyStartsWith(e, "t.conf:25:10: ", "'port' must be 1-65535"));
    CHECK(AnyStartsWith(e, "t.conf:28:8: ", "'to' is IPv6 but 'from' has IPv4 entries"));
    CHECK(AnyStartsWith(e, "t.conf:29:13: ", "'to_port' must be 1-65535"));
    CHECK(AnyStartsWith(e, "t.conf:30:3: ", "rewrite rule 2 of client 'ok': missing 'from'"));
    CHECK(AnyStartsWith(e, "t.conf:31:8: ", "'to' must be an IPv4 or IPv6 address"));
  }
  SECTION("structure") {
    const auto e = Errors(R"(settings = 1
client = "x"
)");
    CHECK(AnyStartsWith(e, "t.conf:1:12: ", "'settings' must be a table"));
    CHECK(AnyStartsWith(e, "t.conf:2:10: ", "'client' must be an array of tables"));
    const auto dup = Errors(R"([[client]]
name = "a"
connect_default = "allow"
bind_default = "allow"
[[client]]
name = "a"
connect_default = "allow"
bind_default = "allow"
connect = 3
)");
    CHECK(AnyStartsWith(dup, "t.conf:6:8: ", "already used by the block at line 1"));
    CHECK(AnyStartsWith(dup, "t.conf:9:11: ", "'connect' must be an array of tables"));
  }
}

TEST_CASE("system user and group names resolve through NSS", "[backend][policy]") {
  const PolicyParseResult r = ParsePolicy(R"([[client]]
name = "root"
uids = "root"
gids = "root"
connect_default = "deny"
bind_default = "deny"
)",
                                          "t.conf");
  REQUIRE(r.policy.has_value());
  REQUIRE(r.policy->clients[0].uids.size() == 1);
  CHECK(r.policy->clients[0].uids[0] == 0);
  CHECK(r.policy->clients[0].gids[0] == 0);
}

TEST_CASE(
    "PolicyHolder: missing default file allows all, a required one is an error, reload "
    "keeps the old policy on errors",
    "[backend][policy]") {
  char dir_template[] = "/tmp/xsock-policy-XXXXXX";
  REQUIRE(mkdtemp(dir_template) != nullptr);
  const std::string dir = dir_template;
  const std::string file = dir + "/xsockd.conf";

  PolicyHolder optional(file, false);
  CHECK(optional.Load().ok());
  CHECK(optional.current() == nullptr);
  PolicyHolder required(file, true);
  CHECK(absl::IsNotFound(required.Load()));

  { std::ofstream(file) << "[settings]\nconnect_default = \"deny\"\n"; }
  PolicyHolder h(file, true);
  REQUIRE(h.Load().ok());
  const std::shared_ptr<const Policy> first = h.current();
  REQUIRE(first != nullptr);
  CHECK(first->connect_default == Verdict::kDeny);

  Stats stats;
  { std::ofstream(file) << "[settings]\nconnect_default = \"allow\"\n"; }
  CHECK(h.Reload(&stats));
  CHECK(stats.policy_reloads == 1);
  CHECK(h.current()->connect_default == Verdict::kAllow);
  CHECK(first->connect_default == Verdict::kDeny);  // a holder of the old one keeps it

  { std::ofstream(file) << "[settings]\nconnect_default = \"nope\"\n"; }
  CHECK(!h.Reload(&stats));
  CHECK(stats.policy_reload_errors == 1);
  CHECK(h.current()->connect_default == Verdict::kAllow);
  std::remove(file.c_str());
  CHECK(!h.Reload(&stats));  // a vanished file is an error too: the policy stays
  CHECK(stats.policy_reload_errors == 2);
  CHECK(h.current() != nullptr);

  { std::ofstream(file) << "[[client]]\nname = 1\n"; }
  const absl::Status bad = PolicyHolder(file, false).Load();
  CHECK(absl::IsInvalidArgument(bad));
  CHECK(std::string(bad.message()).find(file + ":2:8: ") != std::string::npos);
  std::remove(file.c_str());
  rmdir(dir.c_str());
}

}  // namespace
}  // namespace xsock::backend
