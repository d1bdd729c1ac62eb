// shared/config: the schema as parsed, and every error message, exactly (file:line:column).
#include <catch2/catch.hpp>

#include <unistd.h>

#include <string>
#include <vector>

#include "shared/config.h"

namespace {

using namespace xsock::config;

std::vector<std::string> Errors(std::string_view text) {
  ParseResult r = ParseConfig(text, "t.conf");
  std::vector<std::string> out;
  for (const ConfigError& e : r.errors) out.push_back(e.ToString());
  if (out.empty()) REQUIRE(r.config.has_value());
  return out;
}

using Lines = std::vector<std::string>;

Config Parse(std::string_view text) {
  ParseResult r = ParseConfig(text, "t.conf");
  for (const ConfigError& e : r.errors) UNSCOPED_INFO(e.ToString());
  REQUIRE(r.config.has_value());
  return std::move(*r.config);
}

}  // namespace

TEST_CASE("an empty file is a valid config with no profiles and default settings") {
  const Config c = Parse("");
  CHECK(c.profiles.empty());
  CHECK(c.default_profile.empty());
  CHECK(c.settings.on_unreachable == OnUnreachable::kFail);
  CHECK(c.settings.ring_size == kDefaultRingSize);
  CHECK(c.settings.ring_order() == 18);
  CHECK(c.settings.log_level == LogLevel::kWarn);
  CHECK(c.settings.log == "stderr");
  CHECK(c.settings.resolve == Resolve::kLocal);
  CHECK(c.settings.socket.empty());
  CHECK(c.rule_count() == 0);
}

TEST_CASE("profiles keep file order, rules keep their order and positions") {
  const Config c = Parse(R"(default_profile = "b"
[settings]
log_level = "debug"
ring_size = 4096
[[profile]]
name = "a"
apps = "curl"
outgoing_default = "route"
[[profile]]
name = "b"
users = ["alice", 1000, "1001"]
outgoing_default = "bypass"
incoming_default = "route"
ring_size = 16777216
log = "/var/log/x.log"
on_unreachable = "fallback"
resolve = "backend"
socket = "/tmp/x.sock"
  [[profile.outgoing]]
  action = "route"
  to = ["10.1.2.3/8", "fd00::1/8"]
  port = "8000-8100"
  [[profile.outgoing]]
  action = "bypass"
  host = ["DB.Internal.", "*.local"]
  [[profile.outgoing]]
  action = "route"
  [[profile.incoming]]
  action = "route"
  address = "::/0"
  port = "80-81"
  host_port = 8080
  host_address = "::1"
)");
  REQUIRE(c.profiles.size() == 2);
  CHECK(c.default_profile == "b");
  CHECK(c.profiles[0].name == "a");
  CHECK(c.profiles[0].apps == std::vector<std::string>{"curl"});
  CHECK(c.profiles[0].outgoing_default == Action::kRoute);
  CHECK(c.profiles[0].incoming_default == Action::kBypass);
  CHECK(c.profiles[0].incoming_default_pos.line == 0);
  CHECK(c.profiles[0].settings.log_level == LogLevel::kDebug);  // from [settings]
  CHECK(c.profiles[0].settings.ring_size == 4096);
  CHECK(c.profiles[0].settings.ring_order() == 12);
  const Profile& b = c.profiles[1];
  CHECK(b.pos == SourcePos{9, 1});
  CHECK(b.outgoing_default_pos == SourcePos{12, 20});
  REQUIRE(b.users.size() == 3);
  CHECK(b.users[0].name == "alice");
  CHECK(!b.users[0].uid);
  CHECK(b.users[1].uid == 1000u);
  CHECK(b.users[2].uid == 1001u);
  CHECK(b.settings.ring_size == 16777216);
  CHECK(b.settings.ring_order() == 24);
  CHECK(b.settings.log == "/var/log/x.log");
  CHECK(b.settings.log_level == LogLevel::kDebug);
  CHECK(b.settings.on_unreachable == OnUnreachable::kFallback);
  CHECK(b.settings.resolve == Resolve::kBackend);
  CHECK(b.settings.socket == "/tmp/x.sock");
  CHECK(c.settings.on_unreachable == OnUnreachable::kFail);  // [settings] itself unchanged
  REQUIRE(b.outgoing.size() == 3);
  CHECK(b.outgoing[0].pos == SourcePos{19, 3});
  CHECK(b.outgoing[0].text == "route to 10.0.0.0/8, fd00::/8 port 8000-8100");  // host bits cleared
  CHECK(b.outgoing[0].port == PortRange{8000, 8100});
  CHECK(b.outgoing[1].text == "bypass host db.internal, *.local");  // lower case, no final dot
  CHECK(b.outgoing[2].text == "route any destination");
  REQUIRE(b.incoming.size() == 1);
  CHECK(b.incoming[0].text == "route address ::/0 port 80-81 -> host ::1 port 8080-8081");
  CHECK(b.incoming[0].host_port == 8080);
  CHECK(c.rule_count() == 4);
  CHECK(c.FindProfile("b") == &b);
  CHECK(c.FindProfile("c") == nullptr);
}

TEST_CASE("rules may be written as inline tables") {
  const Config c = Parse(R"([[profile]]
name = "p"
outgoing_default = "bypass"
outgoing = [{ action = "route", to = "0.0.0.0/0", port = 443 }, { action = "bypass" }]
)");
  REQUIRE(c.profiles[0].outgoing.size() == 2);
  CHECK(c.profiles[0].outgoing[0].text == "route to 0.0.0.0/0 port 443");
  CHECK(c.profiles[0].outgoing[1].pos == SourcePos{4, 65});
}

TEST_CASE("the example configuration is valid") {
  const ParseResult r = ParseConfigFile(XSOCK_EXAMPLES "/xsock.conf");
  for (const ConfigError& e : r.errors) UNSCOPED_INFO(e.ToString());
  REQUIRE(r.config.has_value());
  CHECK(r.config->profiles.size() == 3);
  CHECK(r.config->rule_count() == 7);
}

TEST_CASE("TOML syntax errors carry the position toml++ reports") {
  CHECK(Errors("a = ") == Lines{"t.conf:1:5: TOML syntax: key-value pair: encountered end-of-file"});
  CHECK(Errors("[settings]\nlog = 1\nlog = 2\n") ==
        Lines{"t.conf:3:7: TOML syntax: key-value pair: cannot redefine existing integer 'log'"});
}

TEST_CASE("a table header starting with a non-key character is a syntax error, not an abort") {
  // toml++ 3.3.0 asserts here; shared/config.cc compiles its assertions out.
  CHECK(Errors("[=]\n") == Lines{"t.conf:1:2: TOML syntax: key: expected bare key "
                                 "starting character or string delimiter, saw '='"});
  CHECK(Errors("[[.x]]\n").size() == 1);
  CHECK(Errors("[\x01]\n").size() == 1);
}

TEST_CASE("non-ASCII text is a syntax error outside strings and comments, fine inside") {
  // toml++ 3.3.0 reached an unreachable point classifying U+00A1..U+0499 as whitespace.
  CHECK(Errors("[profile\xd0\x87]\n").size() == 1);
  CHECK(Errors("a = 1 \xc3\xa9\n").size() == 1);
  CHECK(Errors("a = 1\":\xc6\x98" "fff\n").size() == 1);
  CHECK(Errors("x = \"\"\"a\\\n  \xc3\xa9\"\"\"\n").size() == 1);  // top level: unknown key 'x'
  const std::string ok =
      "\xEF\xBB\xBF# caf\xc3\xa9 \xd0\x87\n[[profile]]\nname = \"p\" # \xd0\x87\n"
      "outgoing_default = \"route\"\n[settings]\nlog = '/var/log/\xd0\x87'\n";
  CHECK(Errors(ok).empty());
}

TEST_CASE("unknown keys are errors at the key, naming the keys allowed") {
  CHECK(Errors("colour = 1\n") ==
        Lines{"t.conf:1:1: top level: unknown key 'colour' (expected one of: default_profile, "
              "settings, profile)"});
  CHECK(Errors("[settings]\n  ringsize = 4096\n") ==
        Lines{"t.conf:2:3: settings: unknown key 'ringsize' (expected one of: on_unreachable, "
              "ring_size, log_level, log, resolve, socket)"});
  CHECK(Errors("[[profile]]\nname = \"p\"\noutgoing_default = \"route\"\napp = \"x\"\n") ==
        Lines{"t.conf:4:1: profile 'p': unknown key 'app' (expected one of: name, apps, users, "
              "outgoing_default, incoming_default, outgoing, incoming, on_unreachable, ring_size, "
              "log_level, log, resolve, socket)"});
  CHECK(Errors("[[profile]]\nname = \"p\"\noutgoing_default = \"route\"\n[[profile.outgoing]]\n"
               "action = \"route\"\nports = 1\n") ==
        Lines{"t.conf:6:1: outgoing rule 1 of profile 'p': unknown key 'ports' (expected one of: "
              "action, to, host, port, protocol)"});
  CHECK(Errors("[[profile]]\nname = \"p\"\noutgoing_default = \"route\"\n[[profile.incoming]]\n"
               "action = \"route\"\nhostport = 1\n") ==
        Lines{"t.conf:6:1: incoming rule 1 of profile 'p': unknown key 'hostport' (expected one "
              "of: action, address, port, protocol, host_address, host_port)"});
}

TEST_CASE("top-level structure errors") {
  CHECK(Errors("settings = 1\n") ==
        Lines{"t.conf:1:12: 'settings' must be a table ([settings]), got 1"});
  CHECK(Errors("[profile]\nname = \"x\"\n") ==
        Lines{"t.conf:1:1: 'profile' must be an array of tables ([[profile]]), got a table"});
  CHECK(Errors("profile = [1]\n") ==
        Lines{"t.conf:1:11: 'profile' must be an array of tables ([[profile]]), got an array of "
              "other values"});
  CHECK(Errors("default_profile = 3\n") ==
        Lines{"t.conf:1:19: top level: 'default_profile' must be a profile name, got 3"});
  CHECK(Errors("default_profile = \"x\"\n") ==
        Lines{"t.conf:1:19: 'default_profile' names no profile: \"x\" (there are no profiles)"});
  CHECK(Errors("default_profile = \"x\"\n[[profile]]\nname = \"a\"\noutgoing_default = "
               "\"route\"\n[[profile]]\nname = \"b\"\noutgoing_default = \"route\"\n") ==
        Lines{"t.conf:1:19: 'default_profile' names no profile: \"x\" (profiles: a, b)"});
}

TEST_CASE("settings errors say what is expected") {
  CHECK(Errors("[settings]\non_unreachable = \"retry\"\n") ==
        Lines{"t.conf:2:18: settings: 'on_unreachable' must be \"fail\" or \"fallback\", got "
              "\"retry\""});
  CHECK(Errors("[settings]\nring_size = 1000\n") ==
        Lines{"t.conf:2:13: settings: 'ring_size' must be a power of two from 4096 to 16777216, "
              "got 1000"});
  CHECK(Errors("[settings]\nring_size = 2048\n") ==
        Lines{"t.conf:2:13: settings: 'ring_size' must be a power of two from 4096 to 16777216, "
              "got 2048"});
  CHECK(Errors("[settings]\nring_size = 33554432\n") ==
        Lines{"t.conf:2:13: settings: 'ring_size' must be a power of two from 4096 to 16777216, "
              "got 33554432"});
  CHECK(Errors("[settings]\nring_size = \"64K\"\n") ==
        Lines{"t.conf:2:13: settings: 'ring_size' must be a power of two from 4096 to 16777216, "
              "got \"64K\""});
  CHECK(Errors("[settings]\nlog_level = \"trace\"\n") ==
        Lines{"t.conf:2:13: settings: 'log_level' must be one of \"error\", \"warn\", \"info\", "
              "\"debug\", got \"trace\""});
  CHECK(Errors("[settings]\nlog = \"xsock.log\"\n") ==
        Lines{"t.conf:2:7: settings: 'log' must be \"stderr\" or an absolute file path, got "
              "\"xsock.log\""});
  CHECK(Errors("[settings]\nresolve = true\n") ==
        Lines{"t.conf:2:11: settings: 'resolve' must be \"local\" or \"backend\", got true"});
  CHECK(Errors("[settings]\nsocket = \"run/x.sock\"\n") ==
        Lines{"t.conf:2:10: settings: 'socket' must be an absolute path shorter than 108 bytes, "
              "got \"run/x.sock\""});
  CHECK(Errors("[settings]\nlog = \"a\\tb\"\n") ==
        Lines{"t.conf:2:7: settings: 'log' must be \"stderr\" or an absolute file path, got "
              "\"a\\x09b\""});
}

namespace {
// A profile header for rule tests: rules start on line 4.
constexpr std::string_view kHead = "[[profile]]\nname = \"web\"\noutgoing_default = \"bypass\"\n";
std::vector<std::string> RuleErrors(std::string_view rules) {
  return Errors(std::string(kHead) + std::string(rules));
}
}  // namespace

TEST_CASE("profile errors") {
  CHECK(Errors("[[profile]]\noutgoing_default = \"route\"\n") ==
        Lines{"t.conf:1:1: profile 1: missing 'name'"});
  CHECK(Errors("[[profile]]\nname = \"a b\"\noutgoing_default = \"route\"\n") ==
        Lines{"t.conf:2:8: profile 1: 'name' must be 1-64 letters, digits, '-', '_' or '.', got "
              "\"a b\""});
  CHECK(Errors("[[profile]]\nname = \"a\"\noutgoing_default = \"route\"\n"
               "[[profile]]\nname = \"a\"\noutgoing_default = \"route\"\n") ==
        Lines{"t.conf:5:8: profile 2: profile name \"a\" is already used by the profile at line 1"});
  CHECK(Errors("[[profile]]\nname = \"a\"\n") ==
        Lines{"t.conf:1:1: profile 'a': missing 'outgoing_default' (\"route\" or \"bypass\": what "
              "happens to destinations no outgoing rule matches)"});
  CHECK(Errors("[[profile]]\nname = \"a\"\noutgoing_default = \"allow\"\nincoming_default = 1\n") ==
        Lines{"t.conf:3:20: profile 'a': 'outgoing_default' must be \"route\" or \"bypass\", got "
              "\"allow\"",
              "t.conf:4:20: profile 'a': 'incoming_default' must be \"route\" or \"bypass\", got 1"});
  CHECK(RuleErrors("apps = []\n") ==
        Lines{"t.conf:4:8: profile 'web': 'apps' must be an executable name, path or glob or a "
              "non-empty array of them, got an empty array"});
  CHECK(RuleErrors("apps = 5\n") ==
        Lines{"t.conf:4:8: profile 'web': 'apps' must be an executable name, path or glob or a "
              "non-empty array of them, got 5"});
  CHECK(RuleErrors("apps = [\"nginx\", 5, \"\"]\n") ==
        Lines{"t.conf:4:18: profile 'web': 'apps' entries must be an executable name, path or "
              "glob, got 5",
              "t.conf:4:21: profile 'web': 'apps' entries must not be empty"});
  CHECK(RuleErrors("users = [\"www\", -1, 1.5]\n") ==
        Lines{"t.conf:4:17: profile 'web': 'users' entries must be user names or uids, got -1",
              "t.conf:4:21: profile 'web': 'users' entries must be user names or uids, got 1.5"});
  CHECK(RuleErrors("users = []\n") ==
        Lines{"t.conf:4:9: profile 'web': 'users' must be a user name, a uid or a non-empty array "
              "of them, got an empty array"});
  CHECK(RuleErrors("ring_size = 3\n") ==
        Lines{"t.conf:4:13: profile 'web': 'ring_size' must be a power of two from 4096 to "
              "16777216, got 3"});
  CHECK(RuleErrors("outgoing = 1\n") ==
        Lines{"t.conf:4:12: profile 'web': 'outgoing' must be an array of tables "
              "([[profile.outgoing]]), got 1"});
  CHECK(RuleErrors("incoming = [\"x\"]\n") ==
        Lines{"t.conf:4:12: profile 'web': 'incoming' must be an array of tables "
              "([[profile.incoming]]), got an array of other values"});
}

TEST_CASE("outgoing rule errors") {
  CHECK(RuleErrors("[[profile.outgoing]]\nto = \"10.0.0.0/8\"\n") ==
        Lines{"t.conf:4:1: outgoing rule 1 of profile 'web': missing 'action' (\"route\" or "
              "\"bypass\")"});
  CHECK(RuleErrors("[[profile.outgoing]]\naction = \"allow\"\n") ==
        Lines{"t.conf:5:10: outgoing rule 1 of profile 'web': 'action' must be \"route\" or "
              "\"bypass\", got \"allow\""});
  // The example of the brief: rule 3, a port out of range.
  CHECK(RuleErrors("[[profile.outgoing]]\naction = \"route\"\n[[profile.outgoing]]\naction = "
                   "\"route\"\n[[profile.outgoing]]\naction = \"route\"\n  port =  \"70000\"\n") ==
        Lines{"t.conf:10:11: outgoing rule 3 of profile 'web': 'port' must be 1-65535 or 'A-B', "
              "got \"70000\""});
  for (const char* bad : {"0", "70000", "-1", "\"\"", "\"80-\"", "\"-80\"", "\"a\"", "\"1-2-3\"",
                          "\" 80\"", "\"080000\"", "\"0-10\"", "true"}) {
    INFO(bad);
    CHECK(RuleErrors(std::string("[[profile.outgoing]]\naction = \"route\"\nport = ") + bad +
                     "\n") ==
          Lines{std::string("t.conf:6:8: outgoing rule 1 of profile 'web': 'port' must be 1-65535 "
                            "or 'A-B', got ") +
                bad});
  }
  CHECK(RuleErrors("[[profile.outgoing]]\naction = \"route\"\nport = \"9-3\"\n") ==
        Lines{"t.conf:6:8: outgoing rule 1 of profile 'web': 'port' range must not be empty (A <= "
              "B), got \"9-3\""});
  CHECK(RuleErrors("[[profile.outgoing]]\naction = \"route\"\nto = \"10.0.0.0/33\"\n") ==
        Lines{"t.conf:6:6: outgoing rule 1 of profile 'web': 'to' prefix length must be 0-32 for "
              "IPv4, got \"10.0.0.0/33\""});
  CHECK(RuleErrors("[[profile.outgoing]]\naction = \"route\"\nto = [\"::/129\", \"::/x\", "
                   "\"::/\"]\n") ==
        Lines{"t.conf:6:7: outgoing rule 1 of profile 'web': 'to' prefix length must be 0-128 for "
              "IPv6, got \"::/129\"",
              "t.conf:6:17: outgoing rule 1 of profile 'web': 'to' prefix length must be 0-128 for "
              "IPv6, got \"::/x\"",
              "t.conf:6:25: outgoing rule 1 of profile 'web': 'to' prefix length must be 0-128 for "
              "IPv6, got \"::/\""});
  CHECK(RuleErrors("[[profile.outgoing]]\naction = \"route\"\nto = \"db.internal\"\n") ==
        Lines{"t.conf:6:6: outgoing rule 1 of profile 'web': 'to' must be an IPv4 or IPv6 address "
              "or prefix (like \"10.0.0.0/8\" or \"fd00::/8\"), got \"db.internal\""});
  CHECK(RuleErrors("[[profile.outgoing]]\naction = \"route\"\nto = \"[::1]\"\n") ==
        Lines{"t.conf:6:6: outgoing rule 1 of profile 'web': 'to' must be an IPv4 or IPv6 address "
              "or prefix (like \"10.0.0.0/8\" or \"fd00::/8\"), got \"[::1]\""});
  CHECK(RuleErrors("[[profile.outgoing]]\naction = \"route\"\nto = [1]\n") ==
        Lines{"t.conf:6:7: outgoing rule 1 of profile 'web': 'to' entries must be an address or "
              "prefix string, got 1"});
  CHECK(RuleErrors("[[profile.outgoing]]\naction = \"route\"\nto = []\n") ==
        Lines{"t.conf:6:6: outgoing rule 1 of profile 'web': 'to' must be an address or prefix "
              "string or a non-empty array of them, got an empty array"});
  CHECK(RuleErrors("[[profile.outgoing]]\naction = \"route\"\nto = \"::1\"\nhost = \"x\"\n") ==
        Lines{"t.conf:7:8: outgoing rule 1 of profile 'web': 'to' and 'host' cannot be in one rule "
              "(addresses and names are matched separately; write two rules)"});
  CHECK(RuleErrors("[[profile.outgoing]]\naction = \"route\"\nhost = [\"a b\", \"\"]\n") ==
        Lines{"t.conf:6:9: outgoing rule 1 of profile 'web': 'host' must be a host name or glob "
              "(letters, digits, '.', '-', '_', '*', '?', '[...]'), got \"a b\"",
              "t.conf:6:16: outgoing rule 1 of profile 'web': 'host' must be a host name or glob "
              "(letters, digits, '.', '-', '_', '*', '?', '[...]'), got \"\""});
  CHECK(RuleErrors("[[profile.outgoing]]\naction = \"route\"\nprotocol = \"udp\"\n") ==
        Lines{"t.conf:6:12: outgoing rule 1 of profile 'web': 'protocol' must be one of \"tcp\", "
              "got \"udp\""});
}

TEST_CASE("incoming rule errors") {
  CHECK(RuleErrors("[[profile.incoming]]\naction = \"bypass\"\nport = 80\nhost_port = 8080\n") ==
        Lines{"t.conf:7:13: incoming rule 1 of profile 'web': 'host_port' applies only to action "
              "= \"route\""});
  CHECK(RuleErrors("[[profile.incoming]]\naction = \"bypass\"\naddress = \"0.0.0.0/0\"\n"
                   "host_address = \"127.0.0.1\"\n") ==
        Lines{"t.conf:7:16: incoming rule 1 of profile 'web': 'host_address' applies only to "
              "action = \"route\""});
  CHECK(RuleErrors("[[profile.incoming]]\naction = \"route\"\nhost_port = 8080\n") ==
        Lines{"t.conf:6:13: incoming rule 1 of profile 'web': 'host_port' needs 'port' (the "
              "application's port it maps)"});
  CHECK(RuleErrors("[[profile.incoming]]\naction = \"route\"\nport = 80\nhost_port = 0\n") ==
        Lines{"t.conf:7:13: incoming rule 1 of profile 'web': 'host_port' must be 1-65535, got 0"});
  CHECK(RuleErrors("[[profile.incoming]]\naction = \"route\"\nport = \"8000-9000\"\n"
                   "host_port = 65000\n") ==
        Lines{"t.conf:7:13: incoming rule 1 of profile 'web': 'host_port' 65000 maps 'port' "
              "8000-9000 beyond 65535"});
  CHECK(RuleErrors("[[profile.incoming]]\naction = \"route\"\nhost_address = \"127.0.0.1\"\n") ==
        Lines{"t.conf:6:16: incoming rule 1 of profile 'web': 'host_address' needs 'address' with "
              "only IPv4 entries (the binds whose address it replaces)"});
  CHECK(RuleErrors("[[profile.incoming]]\naction = \"route\"\naddress = [\"0.0.0.0/0\", \"::/0\"]\n"
                   "host_address = \"::1\"\n") ==
        Lines{"t.conf:7:16: incoming rule 1 of profile 'web': 'host_address' needs 'address' with "
              "only IPv6 entries (the binds whose address it replaces)"});
  CHECK(RuleErrors("[[profile.incoming]]\naction = \"route\"\naddress = \"0.0.0.0/0\"\n"
                   "host_address = \"127.0.0.0/8\"\n") ==
        Lines{"t.conf:7:16: incoming rule 1 of profile 'web': 'host_address' must be an IPv4 or "
              "IPv6 address (like \"127.0.0.1\" or \"::1\"), got \"127.0.0.0/8\""});
  CHECK(RuleErrors("[[profile.incoming]]\naction = \"route\"\naddress = \"0.0.0.0/0\"\n"
                   "host_address = 1\n") ==
        Lines{"t.conf:7:16: incoming rule 1 of profile 'web': 'host_address' must be an IPv4 or "
              "IPv6 address, got 1"});
  CHECK(RuleErrors("[[profile.incoming]]\naction = \"route\"\naddress = \"300.0.0.0/0\"\n") ==
        Lines{"t.conf:6:11: incoming rule 1 of profile 'web': 'address' must be an IPv4 or IPv6 "
              "address or prefix (like \"10.0.0.0/8\" or \"fd00::/8\"), got \"300.0.0.0/0\""});
}

TEST_CASE("every validation error is reported, not only the first") {
  const auto errors = Errors(R"(colour = 1
[settings]
ring_size = 1
[[profile]]
name = "a"
[[profile.outgoing]]
action = "x"
port = 0
)");
  CHECK(errors == Lines{
      "t.conf:1:1: top level: unknown key 'colour' (expected one of: default_profile, settings, "
      "profile)",
      "t.conf:3:13: settings: 'ring_size' must be a power of two from 4096 to 16777216, got 1",
      "t.conf:4:1: profile 'a': missing 'outgoing_default' (\"route\" or \"bypass\": what happens "
      "to destinations no outgoing rule matches)",
      "t.conf:7:10: outgoing rule 1 of profile 'a': 'action' must be \"route\" or \"bypass\", got "
      "\"x\"",
      "t.conf:8:8: outgoing rule 1 of profile 'a': 'port' must be 1-65535 or 'A-B', got 0"});
}

TEST_CASE("unreadable files are one error without a position") {
  bool not_found = false;
  const ParseResult r = ParseConfigFile("/nonexistent/xsock.conf", &not_found);
  CHECK(not_found);
  REQUIRE(r.errors.size() == 1);
  CHECK(r.errors[0].ToString() ==
        "/nonexistent/xsock.conf: cannot read: ENOENT (No such file or directory)");
  const absl::StatusOr<Config> s = LoadConfig("/nonexistent/xsock.conf");
  CHECK(absl::IsNotFound(s.status()));
  const ParseResult dir = ParseConfigFile("/", &not_found);
  CHECK(!not_found);
  REQUIRE(dir.errors.size() == 1);
  CHECK(dir.errors[0].ToString() == "/: cannot read: EISDIR (Is a directory)");
}

TEST_CASE("LoadConfig joins every error, one per line") {
  const absl::StatusOr<Config> s = LoadConfig(XSOCK_EXAMPLES "/bad/unknown-key.conf");
  REQUIRE(absl::IsInvalidArgument(s.status()));
  CHECK(std::string(s.status().message()).find(":") != std::string::npos);
  CHECK(LoadConfig(XSOCK_EXAMPLES "/xsock.conf").ok());
}

TEST_CASE("ConfigPathFromEnv prefers XSOCK_CONFIG") {
  unsetenv("XSOCK_CONFIG");
  CHECK(ConfigPathFromEnv() == "/etc/xsock/xsock.conf");
  setenv("XSOCK_CONFIG", "", 1);
  CHECK(ConfigPathFromEnv() == "/etc/xsock/xsock.conf");
  setenv("XSOCK_CONFIG", "/tmp/a.conf", 1);
  CHECK(ConfigPathFromEnv() == "/tmp/a.conf");
  unsetenv("XSOCK_CONFIG");
}

TEST_CASE("log level names both ways, for XSOCK_LOG") {
  for (const LogLevel l : {LogLevel::kError, LogLevel::kWarn, LogLevel::kInfo, LogLevel::kDebug}) {
    CHECK(LogLevelFromName(LogLevelName(l)) == l);
  }
  CHECK(!LogLevelFromName("DEBUG"));
  CHECK(!LogLevelFromName(""));
}

TEST_CASE("CurrentProcess: this test's executable and uid; the user name only on request") {
  const ProcessIdentity id = CurrentProcess(false);
  CHECK(id.exe.find("config_test") != std::string::npos);
  CHECK(id.exe.front() == '/');
  CHECK(id.uid == geteuid());
  CHECK(id.user.empty());
  if (geteuid() == 0) CHECK(CurrentProcess(true).user == "root");
  CHECK(!Parse("[[profile]]\nname = \"a\"\nusers = [0, \"1\"]\noutgoing_default = \"route\"\n")
             .uses_user_names());
  CHECK(Parse("[[profile]]\nname = \"a\"\nusers = [0, \"bob\"]\noutgoing_default = \"route\"\n")
            .uses_user_names());
}

namespace {
std::vector<std::string> Warnings(std::string_view text) {
  ParseResult r = ParseConfig(text, "t.conf");
  REQUIRE(r.config.has_value());
  std::vector<std::string> out;
  for (const ConfigError& e : r.warnings) out.push_back(e.ToString());
  return out;
}
}  // namespace

TEST_CASE("rules an earlier rule always wins over are warned about, not rejected") {
  CHECK(Warnings(R"([[profile]]
name = "p"
outgoing_default = "bypass"
[[profile.outgoing]]
action = "route"
to = "10.0.0.0/8"
[[profile.outgoing]]
action = "bypass"
to = ["10.1.0.0/16", "10.2.3.4"]
port = "1-80"
[[profile.outgoing]]
action = "bypass"
to = ["10.1.0.0/16", "192.168.0.0/16"]
[[profile.outgoing]]
action = "route"
host = ["a.example", "*.b"]
[[profile.outgoing]]
action = "bypass"
host = "*.b"
port = 443
[[profile.outgoing]]
action = "bypass"
host = "x.b"
[[profile.outgoing]]
action = "route"
port = "400-500"
[[profile.outgoing]]
action = "route"
to = "::/0"
port = 443
[[profile.incoming]]
action = "route"
port = "80-90"
[[profile.incoming]]
action = "bypass"
address = "0.0.0.0/0"
port = 80
[[profile.incoming]]
action = "bypass"
address = "0.0.0.0/0"
)") == Lines{"t.conf:7:1: outgoing rule 2 of profile 'p' is never used: rule 1 (line 4, route to "
               "10.0.0.0/8) matches everything it does",
               "t.conf:17:1: outgoing rule 5 of profile 'p' is never used: rule 4 (line 14, route "
               "host a.example, *.b) matches everything it does",
               "t.conf:27:1: outgoing rule 8 of profile 'p' is never used: rule 7 (line 24, route "
               "any destination port 400-500) matches everything it does",
               "t.conf:34:1: incoming rule 2 of profile 'p' is never used: rule 1 (line 31, route "
               "any address port 80-90) matches everything it does"});
  // /0 of one family does not cover the other; a host glob is compared only as written.
  CHECK(Warnings("[[profile]]\nname = \"p\"\noutgoing_default = \"bypass\"\n"
                 "outgoing = [{ action = \"route\", to = \"0.0.0.0/0\" },"
                 " { action = \"route\", to = \"::1\" }, { action = \"route\", host = \"*.a\" },"
                 " { action = \"route\", host = \"x.a\" }]\n")
            .empty());
}
