#include "shared/config.h"

#include "shared/config_strings.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/un.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"

// toml++ without exceptions (parse_result instead), compiled into this file only: the
// loader runs inside libxsock.so, where nothing may throw.
#define TOML_EXCEPTIONS 0
#define TOML_HEADER_ONLY 1
#define TOML_ENABLE_FORMATTERS 0
#include <toml++/toml.h>

namespace xsock::config {

std::string ConfigError::ToString() const {
  if (pos.line == 0) return text::Cat(file, ": ", message);
  return text::Cat(file, ":", pos.line, ":", pos.column, ": ", message);
}

std::string_view ActionName(Action a) { return a == Action::kRoute ? "route" : "bypass"; }
std::string_view OnUnreachableName(OnUnreachable o) {
  return o == OnUnreachable::kFail ? "fail" : "fallback";
}
std::string_view LogLevelName(LogLevel l) {
  switch (l) {
    case LogLevel::kError: return "error";
    case LogLevel::kWarn: return "warn";
    case LogLevel::kInfo: return "info";
    case LogLevel::kDebug: return "debug";
  }
  return "?";
}
std::string_view ResolveName(Resolve r) { return r == Resolve::kLocal ? "local" : "backend"; }

uint32_t Settings::ring_order() const {
  uint32_t order = 0;
  while ((uint32_t{1} << order) < ring_size && order < 31) ++order;
  return order;
}

const Profile* Config::FindProfile(std::string_view name) const {
  for (const Profile& p : profiles) {
    if (p.name == name) return &p;
  }
  return nullptr;
}

size_t Config::rule_count() const {
  size_t n = 0;
  for (const Profile& p : profiles) n += p.outgoing.size() + p.incoming.size();
  return n;
}

namespace {

SourcePos PosOf(const toml::source_region& r) { return {r.begin.line, r.begin.column}; }
SourcePos PosOf(const toml::node& n) { return PosOf(n.source()); }
SourcePos PosOf(const toml::key& k) { return PosOf(k.source()); }

// A value as the error message shows it: strings quoted, numbers as written.
std::string Shown(const toml::node& n) {
  if (const auto* s = n.as_string()) {
    std::string out = "\"";
    for (const char c : s->get()) {
      if (c == '"' || c == '\\') {
        out += '\\';
        out += c;
      } else if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        constexpr char kHex[] = "0123456789abcdef";
        const auto u = static_cast<unsigned char>(c);
        text::AppendAll(out, "\\x", kHex[u >> 4], kHex[u & 15]);
      } else {
        out += c;
      }
    }
    return out + "\"";
  }
  if (const auto* i = n.as_integer()) return text::Cat(i->get());
  if (const auto* f = n.as_floating_point()) return text::Cat(f->get());
  if (const auto* b = n.as_boolean()) return b->get() ? "true" : "false";
  if (n.is_array()) return "an array";
  if (n.is_table()) return "a table";
  if (n.is_date()) return "a date";
  if (n.is_time()) return "a time";
  return "a date-time";
}

std::string Quoted(std::string_view s) { return text::Cat("\"", s, "\""); }

bool AllDigits(std::string_view s) {
  if (s.empty()) return false;
  for (const char c : s) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

void ClearHostBits(Cidr& c) {
  const int bytes = c.family == AF_INET ? 4 : 16;
  for (int i = 0; i < bytes; ++i) {
    const int bit0 = i * 8;
    if (bit0 >= c.prefix) {
      c.addr[static_cast<size_t>(i)] = 0;
    } else if (bit0 + 8 > c.prefix) {
      c.addr[static_cast<size_t>(i)] &= static_cast<uint8_t>(0xFF << (8 - (c.prefix - bit0)));
    }
  }
}

std::string CidrText(const Cidr& c) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(c.family, c.addr.data(), buf, sizeof(buf));
  return text::Cat(buf, "/", c.prefix);
}

std::string PortText(const PortRange& r) {
  if (r.first == r.last) return text::Cat(r.first);
  return text::Cat(r.first, "-", r.last);
}

std::string CidrListText(const std::vector<Cidr>& v) {
  std::vector<std::string> parts;
  parts.reserve(v.size());
  for (const Cidr& c : v) parts.push_back(CidrText(c));
  return text::Join(parts, ", ");
}

std::string OutgoingText(const OutgoingRule& r) {
  std::string out(ActionName(r.action));
  if (!r.hosts.empty()) {
    text::AppendAll(out, " host ", text::Join(r.hosts, ", "));
  } else if (!r.to.empty()) {
    text::AppendAll(out, " to ", CidrListText(r.to));
  } else {
    text::AppendAll(out, " any destination");
  }
  if (!r.port.any()) text::AppendAll(out, " port ", PortText(r.port));
  return out;
}

std::string IncomingText(const IncomingRule& r) {
  std::string out(ActionName(r.action));
  if (!r.address.empty()) {
    text::AppendAll(out, " address ", CidrListText(r.address));
  } else {
    text::AppendAll(out, " any address");
  }
  if (!r.port.any()) text::AppendAll(out, " port ", PortText(r.port));
  if (r.host_address || r.host_port != 0) {
    text::AppendAll(out, " -> host");
    if (r.host_address) {
      char buf[INET6_ADDRSTRLEN] = {};
      inet_ntop(r.host_address->family, r.host_address->addr.data(), buf, sizeof(buf));
      text::AppendAll(out, " ", buf);
    }
    if (r.host_port != 0) {
      PortRange host{r.host_port, static_cast<uint16_t>(r.host_port + (r.port.last - r.port.first))};
      text::AppendAll(out, " port ", PortText(host));
    }
  }
  return out;
}

constexpr std::string_view kSettingKeys[] = {"on_unreachable", "ring_size", "log_level", "log",
                                             "resolve", "socket"};

// Walks the parsed document, filling a Config and collecting every error.
class Validator {
 public:
  Validator(std::string_view file, std::vector<ConfigError>& errors)
      : file_(file), errors_(errors) {}

  Config Run(const toml::table& root) {
    Config c;
    c.file = file_;
    CheckKeys(root, "top level", {"default_profile", "settings", "profile"});
    if (const toml::node* s = root.get("settings")) {
      if (const toml::table* t = s->as_table()) {
        CheckKeys(*t, "settings", kSettingKeys);
        ReadSettings(*t, "settings", c.settings);
      } else {
        Error(PosOf(*s), text::Cat("'settings' must be a table ([settings]), got ", Shown(*s)));
      }
    }
    if (const toml::node* p = root.get("profile")) {
      const toml::array* arr = p->as_array();
      if (arr == nullptr || !arr->is_array_of_tables()) {
        Error(PosOf(*p), text::Cat("'profile' must be an array of tables ([[profile]]), got ",
                                      arr == nullptr ? Shown(*p) : "an array of other values"));
      } else {
        for (size_t i = 0; i < arr->size(); ++i) {
          ReadProfile(*(*arr)[i].as_table(), i + 1, c);
        }
      }
    }
    if (const toml::node* d = root.get("default_profile")) {
      if (auto name = String(*d, "top level", "default_profile", "a profile name")) {
        if (c.FindProfile(*name) == nullptr) {
          Error(PosOf(*d), text::Cat("'default_profile' names no profile: ", Quoted(*name),
                                        KnownProfiles(c)));
        } else {
          c.default_profile = *name;
        }
      }
    }
    return c;
  }

 private:
  void Error(SourcePos pos, std::string message) {
    errors_.push_back({std::string(file_), pos, std::move(message)});
  }

  template <typename Keys>
  void CheckKeys(const toml::table& t, std::string_view ctx, const Keys& allowed) {
    for (auto&& [k, v] : t) {
      const std::string_view name = k.str();
      if (std::find(std::begin(allowed), std::end(allowed), name) != std::end(allowed)) continue;
      std::vector<std::string_view> list(std::begin(allowed), std::end(allowed));
      Error(PosOf(k), text::Cat(ctx, ": unknown key '", name, "' (expected one of: ",
                                   text::Join(list, ", "), ")"));
    }
  }
  void CheckKeys(const toml::table& t, std::string_view ctx,
                 std::initializer_list<std::string_view> allowed) {
    CheckKeys<std::initializer_list<std::string_view>>(t, ctx, allowed);
  }

  std::optional<std::string> String(const toml::node& n, std::string_view ctx,
                                    std::string_view key, std::string_view expected) {
    if (const auto* s = n.as_string()) return s->get();
    Error(PosOf(n), text::Cat(ctx, ": '", key, "' must be ", expected, ", got ", Shown(n)));
    return std::nullopt;
  }

  // A string that must be one of `names` (mapped to `values`).
  template <typename E>
  std::optional<E> Enum(const toml::node& n, std::string_view ctx, std::string_view key,
                        std::initializer_list<std::pair<std::string_view, E>> names) {
    std::vector<std::string> quoted;
    for (const auto& [name, value] : names) quoted.push_back(Quoted(name));
    std::string expected;
    if (quoted.size() == 2) {
      expected = text::Cat(quoted[0], " or ", quoted[1]);
    } else {
      expected = text::Cat("one of ", text::Join(quoted, ", "));
    }
    if (const auto* s = n.as_string()) {
      for (const auto& [name, value] : names) {
        if (s->get() == name) return value;
      }
    }
    Error(PosOf(n), text::Cat(ctx, ": '", key, "' must be ", expected, ", got ", Shown(n)));
    return std::nullopt;
  }

  std::optional<Action> ActionOf(const toml::node& n, std::string_view ctx, std::string_view key) {
    return Enum<Action>(n, ctx, key, {{"route", Action::kRoute}, {"bypass", Action::kBypass}});
  }

  void ReadSettings(const toml::table& t, std::string_view ctx, Settings& s) {
    if (const toml::node* n = t.get("on_unreachable")) {
      if (auto v = Enum<OnUnreachable>(
              *n, ctx, "on_unreachable",
              {{"fail", OnUnreachable::kFail}, {"fallback", OnUnreachable::kFallback}})) {
        s.on_unreachable = *v;
      }
    }
    if (const toml::node* n = t.get("ring_size")) {
      const auto* i = n->as_integer();
      const int64_t v = i != nullptr ? i->get() : 0;
      if (i == nullptr || v < kMinRingSize || v > kMaxRingSize || (v & (v - 1)) != 0) {
        Error(PosOf(*n), text::Cat(ctx, ": 'ring_size' must be a power of two from ",
                                      kMinRingSize, " to ", kMaxRingSize, ", got ", Shown(*n)));
      } else {
        s.ring_size = static_cast<uint32_t>(v);
      }
    }
    if (const toml::node* n = t.get("log_level")) {
      if (auto v = Enum<LogLevel>(*n, ctx, "log_level",
                                  {{"error", LogLevel::kError},
                                   {"warn", LogLevel::kWarn},
                                   {"info", LogLevel::kInfo},
                                   {"debug", LogLevel::kDebug}})) {
        s.log_level = *v;
      }
    }
    if (const toml::node* n = t.get("log")) {
      const auto* str = n->as_string();
      if (str == nullptr || (str->get() != "stderr" && (str->get().empty() ||
                                                        str->get()[0] != '/'))) {
        Error(PosOf(*n), text::Cat(ctx, ": 'log' must be \"stderr\" or an absolute file path, got ",
                                      Shown(*n)));
      } else {
        s.log = str->get();
      }
    }
    if (const toml::node* n = t.get("resolve")) {
      if (auto v = Enum<Resolve>(*n, ctx, "resolve",
                                 {{"local", Resolve::kLocal}, {"backend", Resolve::kBackend}})) {
        s.resolve = *v;
      }
    }
    if (const toml::node* n = t.get("socket")) {
      const auto* str = n->as_string();
      constexpr size_t kSunPath = sizeof(sockaddr_un{}.sun_path);
      if (str == nullptr || str->get().empty() || str->get()[0] != '/' ||
          str->get().size() >= kSunPath) {
        Error(PosOf(*n), text::Cat(ctx, ": 'socket' must be an absolute path shorter than ",
                                      kSunPath, " bytes, got ", Shown(*n)));
      } else {
        s.socket = str->get();
      }
    }
  }

  // A string or an array of strings; calls `each(value, node)` for every string.
  template <typename F>
  void StringOrArray(const toml::node& n, std::string_view ctx, std::string_view key,
                     std::string_view expected, F each) {
    if (n.is_string()) {
      each(n.as_string()->get(), n);
      return;
    }
    const toml::array* arr = n.as_array();
    if (arr == nullptr || arr->empty()) {
      Error(PosOf(n), text::Cat(ctx, ": '", key, "' must be ", expected,
                                   " or a non-empty array of them, got ",
                                   arr == nullptr ? Shown(n) : "an empty array"));
      return;
    }
    for (const toml::node& e : *arr) {
      if (!e.is_string()) {
        Error(PosOf(e), text::Cat(ctx, ": '", key, "' entries must be ", expected, ", got ",
                                     Shown(e)));
        continue;
      }
      each(e.as_string()->get(), e);
    }
  }

  std::optional<Cidr> ParseCidr(const std::string& text, const toml::node& n,
                                std::string_view ctx, std::string_view key, bool prefix_allowed) {
    Cidr c;
    std::string addr = text;
    int prefix = -1;
    if (const size_t slash = text.find('/'); slash != std::string::npos) {
      addr = text.substr(0, slash);
      const std::string p = text.substr(slash + 1);
      if (!prefix_allowed || !AllDigits(p) || p.size() > 3 || !absl::SimpleAtoi(p, &prefix)) {
        prefix = -2;
      }
    }
    if (!prefix_allowed && prefix != -1) {
      addr.clear();  // "a.b.c.d/n" where only an address will do: not an address
    }
    if (inet_pton(AF_INET, addr.c_str(), c.addr.data()) == 1) {
      c.family = AF_INET;
    } else if (inet_pton(AF_INET6, addr.c_str(), c.addr.data()) == 1) {
      c.family = AF_INET6;
    } else {
      Error(PosOf(n),
            text::Cat(ctx, ": '", key, "' must be ",
                         prefix_allowed ? "an IPv4 or IPv6 address or prefix (like \"10.0.0.0/8\" or "
                                          "\"fd00::/8\")"
                                        : "an IPv4 or IPv6 address (like \"127.0.0.1\" or \"::1\")",
                         ", got ", Shown(n)));
      return std::nullopt;
    }
    const int max = c.family == AF_INET ? 32 : 128;
    if (prefix == -2 || prefix > max) {
      Error(PosOf(n), text::Cat(ctx, ": '", key, "' prefix length must be 0-", max, " for ",
                                   c.family == AF_INET ? "IPv4" : "IPv6", ", got ", Shown(n)));
      return std::nullopt;
    }
    c.prefix = static_cast<uint8_t>(prefix < 0 ? max : prefix);
    ClearHostBits(c);
    return c;
  }

  std::vector<Cidr> Cidrs(const toml::node& n, std::string_view ctx, std::string_view key) {
    std::vector<Cidr> out;
    StringOrArray(n, ctx, key, "an address or prefix string",
                  [&](const std::string& s, const toml::node& e) {
                    if (auto c = ParseCidr(s, e, ctx, key, true)) out.push_back(*c);
                  });
    return out;
  }

  std::optional<PortRange> Port(const toml::node& n, std::string_view ctx, std::string_view key) {
    const auto bad = [&] {
      Error(PosOf(n), text::Cat(ctx, ": '", key, "' must be 1-65535 or 'A-B', got ", Shown(n)));
      return std::nullopt;
    };
    if (const auto* i = n.as_integer()) {
      if (i->get() < 1 || i->get() > 65535) return bad();
      const auto p = static_cast<uint16_t>(i->get());
      return PortRange{p, p};
    }
    const auto* s = n.as_string();
    if (s == nullptr) return bad();
    const std::string& text = s->get();
    const size_t dash = text.find('-');
    const std::string a = text.substr(0, dash);
    const std::string b = dash == std::string::npos ? a : text.substr(dash + 1);
    uint32_t first = 0, last = 0;
    if (!AllDigits(a) || !AllDigits(b) || a.size() > 5 || b.size() > 5 ||
        !absl::SimpleAtoi(a, &first) || !absl::SimpleAtoi(b, &last) || first < 1 ||
        first > 65535 || last < 1 || last > 65535) {
      return bad();
    }
    if (first > last) {
      Error(PosOf(n), text::Cat(ctx, ": '", key, "' range must not be empty (A <= B), got ",
                                   Shown(n)));
      return std::nullopt;
    }
    return PortRange{static_cast<uint16_t>(first), static_cast<uint16_t>(last)};
  }

  void Protocol(const toml::table& t, std::string_view ctx) {
    if (const toml::node* n = t.get("protocol")) {
      Enum<config::Protocol>(*n, ctx, "protocol", {{"tcp", config::Protocol::kTcp}});
    }
  }

  static bool ValidHostGlob(std::string_view s) {
    if (s.empty() || s.size() > 253) return false;
    for (const char c : s) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '-' &&
          c != '_' && c != '*' && c != '?' && c != '[' && c != ']' && c != '!') {
        return false;
      }
    }
    return true;
  }

  void ReadOutgoing(const toml::table& t, std::string_view ctx, Profile& p) {
    CheckKeys(t, ctx, {"action", "to", "host", "port", "protocol"});
    OutgoingRule r;
    r.pos = PosOf(t);
    bool ok = true;
    if (const toml::node* n = t.get("action")) {
      if (auto a = ActionOf(*n, ctx, "action")) {
        r.action = *a;
      } else {
        ok = false;
      }
    } else {
      Error(r.pos, text::Cat(ctx, ": missing 'action' (\"route\" or \"bypass\")"));
      ok = false;
    }
    const toml::node* to = t.get("to");
    const toml::node* host = t.get("host");
    if (to != nullptr && host != nullptr) {
      Error(PosOf(*host), text::Cat(ctx, ": 'to' and 'host' cannot be in one rule (addresses "
                                            "and names are matched separately; write two rules)"));
      ok = false;
    }
    if (to != nullptr) {
      const size_t before = errors_.size();
      r.to = Cidrs(*to, ctx, "to");
      ok = ok && errors_.size() == before;
    }
    if (host != nullptr) {
      StringOrArray(*host, ctx, "host", "a host name or glob",
                    [&](const std::string& s, const toml::node& e) {
                      std::string trimmed = s;
                      if (trimmed.size() > 1 && trimmed.back() == '.') trimmed.pop_back();
                      if (!ValidHostGlob(trimmed)) {
                        Error(PosOf(e), text::Cat(ctx, ": 'host' must be a host name or glob "
                                                          "(letters, digits, '.', '-', '_', "
                                                          "'*', '?', '[...]'), got ",
                                                     Shown(e)));
                        ok = false;
                        return;
                      }
                      r.hosts.push_back(absl::AsciiStrToLower(trimmed));
                    });
      ok = ok && !r.hosts.empty();
    }
    if (const toml::node* n = t.get("port")) {
      if (auto pr = Port(*n, ctx, "port")) {
        r.port = *pr;
      } else {
        ok = false;
      }
    }
    Protocol(t, ctx);
    if (!ok) return;
    r.text = OutgoingText(r);
    p.outgoing.push_back(std::move(r));
  }

  void ReadIncoming(const toml::table& t, std::string_view ctx, Profile& p) {
    CheckKeys(t, ctx, {"action", "address", "port", "protocol", "host_address", "host_port"});
    IncomingRule r;
    r.pos = PosOf(t);
    bool ok = true;
    if (const toml::node* n = t.get("action")) {
      if (auto a = ActionOf(*n, ctx, "action")) {
        r.action = *a;
      } else {
        ok = false;
      }
    } else {
      Error(r.pos, text::Cat(ctx, ": missing 'action' (\"route\" or \"bypass\")"));
      ok = false;
    }
    if (const toml::node* n = t.get("address")) {
      const size_t before = errors_.size();
      r.address = Cidrs(*n, ctx, "address");
      ok = ok && errors_.size() == before;
    }
    const toml::node* port = t.get("port");
    if (port != nullptr) {
      if (auto pr = Port(*port, ctx, "port")) {
        r.port = *pr;
      } else {
        ok = false;
      }
    }
    Protocol(t, ctx);
    const toml::node* host_port = t.get("host_port");
    const toml::node* host_address = t.get("host_address");
    for (const toml::node* n : {host_port, host_address}) {
      if (n != nullptr && ok && r.action == Action::kBypass) {
        Error(PosOf(*n), text::Cat(ctx, ": '", n == host_port ? "host_port" : "host_address",
                                      "' applies only to action = \"route\""));
        ok = false;
      }
    }
    if (host_port != nullptr) {
      const auto* i = host_port->as_integer();
      if (i == nullptr || i->get() < 1 || i->get() > 65535) {
        Error(PosOf(*host_port),
              text::Cat(ctx, ": 'host_port' must be 1-65535, got ", Shown(*host_port)));
        ok = false;
      } else if (port == nullptr) {
        Error(PosOf(*host_port),
              text::Cat(ctx, ": 'host_port' needs 'port' (the application's port it maps)"));
        ok = false;
      } else if (ok && i->get() + (r.port.last - r.port.first) > 65535) {
        Error(PosOf(*host_port),
              text::Cat(ctx, ": 'host_port' ", i->get(), " maps 'port' ", PortText(r.port),
                           " beyond 65535"));
        ok = false;
      } else {
        r.host_port = static_cast<uint16_t>(i->get());
      }
    }
    if (host_address != nullptr) {
      if (auto s = String(*host_address, ctx, "host_address", "an IPv4 or IPv6 address")) {
        if (auto c = ParseCidr(*s, *host_address, ctx, "host_address", false)) {
          const bool same_family =
              !r.address.empty() &&
              std::all_of(r.address.begin(), r.address.end(),
                          [&](const Cidr& a) { return a.family == c->family; });
          if (!same_family) {
            Error(PosOf(*host_address),
                  text::Cat(ctx, ": 'host_address' needs 'address' with only ",
                               c->family == AF_INET ? "IPv4" : "IPv6",
                               " entries (the binds whose address it replaces)"));
            ok = false;
          } else {
            r.host_address = *c;
          }
        } else {
          ok = false;
        }
      } else {
        ok = false;
      }
    }
    if (!ok) return;
    r.text = IncomingText(r);
    p.incoming.push_back(std::move(r));
  }

  template <typename F>
  void Rules(const toml::table& t, std::string_view key, std::string_view profile_ctx,
             std::string_view kind, F read) {
    const toml::node* n = t.get(key);
    if (n == nullptr) return;
    const toml::array* arr = n->as_array();
    if (arr == nullptr || !arr->is_array_of_tables()) {
      Error(PosOf(*n), text::Cat(profile_ctx, ": '", key, "' must be an array of tables ([[profile.",
                                    key, "]]), got ",
                                    arr == nullptr ? Shown(*n) : "an array of other values"));
      return;
    }
    for (size_t i = 0; i < arr->size(); ++i) {
      read(*(*arr)[i].as_table(), text::Cat(kind, " rule ", i + 1, " of ", profile_ctx));
    }
  }

  static bool ValidProfileName(std::string_view s) {
    if (s.empty() || s.size() > 64) return false;
    for (const char c : s) {
      if (!absl::ascii_isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' &&
          c != '.') {
        return false;
      }
    }
    return true;
  }

  static std::string KnownProfiles(const Config& c) {
    if (c.profiles.empty()) return " (there are no profiles)";
    std::vector<std::string_view> names;
    for (const Profile& p : c.profiles) names.push_back(p.name);
    return text::Cat(" (profiles: ", text::Join(names, ", "), ")");
  }

  void ReadProfile(const toml::table& t, size_t index, Config& c) {
    Profile p;
    p.pos = PosOf(t);
    std::string ctx = text::Cat("profile ", index);
    bool ok = true;
    if (const toml::node* n = t.get("name")) {
      const auto* s = n->as_string();
      if (s == nullptr || !ValidProfileName(s->get())) {
        Error(PosOf(*n), text::Cat(ctx, ": 'name' must be 1-64 letters, digits, '-', '_' or "
                                           "'.', got ",
                                      Shown(*n)));
        ok = false;
      } else if (const Profile* dup = c.FindProfile(s->get())) {
        Error(PosOf(*n), text::Cat(ctx, ": profile name ", Quoted(s->get()),
                                      " is already used by the profile at line ", dup->pos.line));
        ok = false;
      } else {
        p.name = s->get();
        ctx = text::Cat("profile '", p.name, "'");
      }
    } else {
      Error(p.pos, text::Cat(ctx, ": missing 'name'"));
      ok = false;
    }
    std::vector<std::string_view> keys = {"name", "apps", "users", "outgoing_default",
                                          "incoming_default", "outgoing", "incoming"};
    keys.insert(keys.end(), std::begin(kSettingKeys), std::end(kSettingKeys));
    CheckKeys(t, ctx, keys);

    if (const toml::node* n = t.get("apps")) {
      StringOrArray(*n, ctx, "apps", "an executable name, path or glob",
                    [&](const std::string& s, const toml::node& e) {
                      if (s.empty()) {
                        Error(PosOf(e), text::Cat(ctx, ": 'apps' entries must not be empty"));
                        return;
                      }
                      p.apps.push_back(s);
                    });
    }
    if (const toml::node* n = t.get("users")) {
      const auto user = [&](const toml::node& e) {
        UserMatch m;
        if (const auto* i = e.as_integer(); i != nullptr && i->get() >= 0 &&
                                            i->get() < static_cast<int64_t>(UINT32_MAX)) {
          m.uid = static_cast<uid_t>(i->get());
        } else if (const auto* s = e.as_string(); s != nullptr && !s->get().empty()) {
          uint32_t uid = 0;
          if (AllDigits(s->get()) && absl::SimpleAtoi(s->get(), &uid) && uid != UINT32_MAX) {
            m.uid = uid;
          } else {
            m.name = s->get();
          }
        } else {
          Error(PosOf(e), text::Cat(ctx, ": 'users' entries must be user names or uids, got ",
                                       Shown(e)));
          return;
        }
        p.users.push_back(std::move(m));
      };
      if (const toml::array* arr = n->as_array(); arr != nullptr && !arr->empty()) {
        for (const toml::node& e : *arr) user(e);
      } else if (arr != nullptr) {
        Error(PosOf(*n), text::Cat(ctx, ": 'users' must be a user name, a uid or a non-empty "
                                           "array of them, got an empty array"));
      } else {
        user(*n);
      }
    }
    if (const toml::node* n = t.get("outgoing_default")) {
      p.outgoing_default_pos = PosOf(*n);
      if (auto a = ActionOf(*n, ctx, "outgoing_default")) p.outgoing_default = *a;
    } else {
      Error(p.pos, text::Cat(ctx, ": missing 'outgoing_default' (\"route\" or \"bypass\": "
                                     "what happens to destinations no outgoing rule matches)"));
    }
    if (const toml::node* n = t.get("incoming_default")) {
      p.incoming_default_pos = PosOf(*n);
      if (auto a = ActionOf(*n, ctx, "incoming_default")) p.incoming_default = *a;
    }
    p.settings = c.settings;
    ReadSettings(t, ctx, p.settings);
    Rules(t, "outgoing", ctx, "outgoing",
          [&](const toml::table& r, const std::string& rctx) { ReadOutgoing(r, rctx, p); });
    Rules(t, "incoming", ctx, "incoming",
          [&](const toml::table& r, const std::string& rctx) { ReadIncoming(r, rctx, p); });
    if (ok) c.profiles.push_back(std::move(p));
  }

  std::string_view file_;
  std::vector<ConfigError>& errors_;
};

}  // namespace

ParseResult ParseConfig(std::string_view text, std::string_view file) {
  ParseResult out;
  toml::parse_result parsed = toml::parse(text, file);
  if (!parsed) {
    const toml::parse_error& e = parsed.error();
    std::string what(e.description());
    // toml++ says "Error while parsing X: why"; the file:line:column prefix says "error".
    if (what.starts_with("Error while parsing ")) what.erase(0, 20);
    out.errors.push_back({std::string(file), PosOf(e.source()), "TOML syntax: " + what});
    return out;
  }
  Validator v(file, out.errors);
  Config c = v.Run(parsed.table());
  // [settings] is read before the profiles wherever it stands in the file, so each
  // profile's settings start from it.
  if (out.errors.empty()) out.config = std::move(c);
  return out;
}

ParseResult ParseConfigFile(const std::string& path, bool* not_found) {
  if (not_found != nullptr) *not_found = false;
  std::FILE* f = std::fopen(path.c_str(), "re");
  std::string text;
  int err = 0;
  if (f == nullptr) {
    err = errno;
  } else {
    char buf[4096];
    size_t n;
    while ((n = std::fread(buf, 1, sizeof(buf), f)) > 0) {
      text.append(buf, n);
      if (text.size() > (size_t{4} << 20)) {
        err = EFBIG;
        break;
      }
    }
    if (err == 0 && std::ferror(f)) err = errno != 0 ? errno : EIO;
    std::fclose(f);
  }
  if (err != 0) {
    if (not_found != nullptr) *not_found = err == ENOENT;
    ParseResult out;
    const char* name = strerrorname_np(err);
    out.errors.push_back({path, {}, text::Cat("cannot read: ", name != nullptr ? name : "?",
                                                 " (", std::strerror(err), ")")});
    return out;
  }
  return ParseConfig(text, path);
}

absl::StatusOr<Config> LoadConfig(const std::string& path) {
  bool not_found = false;
  ParseResult r = ParseConfigFile(path, &not_found);
  if (r.config) return std::move(*r.config);
  std::vector<std::string> lines;
  for (const ConfigError& e : r.errors) lines.push_back(e.ToString());
  const std::string message = text::Join(lines, "\n");
  if (not_found) return absl::NotFoundError(message);
  return absl::InvalidArgumentError(message);
}

std::string ConfigPathFromEnv() {
  const char* env = std::getenv("XSOCK_CONFIG");
  if (env != nullptr && env[0] != '\0') return env;
  return std::string(kDefaultConfigPath);
}

}  // namespace xsock::config
