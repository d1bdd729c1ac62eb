#include "shared/rules.h"

#include "shared/config_strings.h"

#include <arpa/inet.h>
#include <fnmatch.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "absl/strings/numbers.h"

namespace xsock::config {
namespace {

bool PrefixEqual(const uint8_t* a, const uint8_t* b, int bits) {
  const int whole = bits / 8;
  if (std::memcmp(a, b, static_cast<size_t>(whole)) != 0) return false;
  const int rest = bits % 8;
  if (rest == 0) return true;
  const auto mask = static_cast<uint8_t>(0xFF << (8 - rest));
  return (a[whole] & mask) == (b[whole] & mask);
}

// fnmatch wants terminated strings; texts are copied to the stack (no allocation).
bool Fnmatch(const char* pattern, std::string_view text, int flags) {
  char buf[4097];
  if (text.size() >= sizeof(buf)) return false;
  std::memcpy(buf, text.data(), text.size());
  buf[text.size()] = '\0';
  return fnmatch(pattern, buf, flags) == 0;
}

std::string_view Basename(std::string_view path) {
  const size_t slash = path.rfind('/');
  return slash == std::string_view::npos ? path : path.substr(slash + 1);
}

std::string Where(const Config& c, SourcePos pos) { return text::Cat(c.file, ":", pos.line); }

}  // namespace

std::optional<Endpoint> EndpointFromSockaddr(const sockaddr* sa, socklen_t len) {
  if (sa == nullptr || len < static_cast<socklen_t>(sizeof(sa_family_t))) return std::nullopt;
  Endpoint e;
  if (sa->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    sockaddr_in in;
    std::memcpy(&in, sa, sizeof(in));
    e.family = AF_INET;
    std::memcpy(e.addr.data(), &in.sin_addr, 4);
    e.port = ntohs(in.sin_port);
    return e;
  }
  if (sa->sa_family == AF_INET6 &&
      len >= static_cast<socklen_t>(offsetof(sockaddr_in6, sin6_scope_id))) {
    sockaddr_in6 in6 = {};
    std::memcpy(&in6, sa, std::min<size_t>(len, sizeof(in6)));
    e.port = ntohs(in6.sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr)) {
      e.family = AF_INET;
      e.v4_mapped = true;
      std::memcpy(e.addr.data(), in6.sin6_addr.s6_addr + 12, 4);
    } else {
      e.family = AF_INET6;
      e.scope_id = in6.sin6_scope_id;
      std::memcpy(e.addr.data(), in6.sin6_addr.s6_addr, 16);
    }
    return e;
  }
  return std::nullopt;
}

socklen_t ToSockaddr(const Endpoint& e, sockaddr_storage* out) {
  std::memset(out, 0, sizeof(*out));
  if (e.family == AF_INET && !e.v4_mapped) {
    sockaddr_in in = {};
    in.sin_family = AF_INET;
    in.sin_port = htons(e.port);
    std::memcpy(&in.sin_addr, e.addr.data(), 4);
    std::memcpy(out, &in, sizeof(in));
    return sizeof(in);
  }
  sockaddr_in6 in6 = {};
  in6.sin6_family = AF_INET6;
  in6.sin6_port = htons(e.port);
  if (e.family == AF_INET) {
    in6.sin6_addr.s6_addr[10] = 0xFF;
    in6.sin6_addr.s6_addr[11] = 0xFF;
    std::memcpy(in6.sin6_addr.s6_addr + 12, e.addr.data(), 4);
  } else {
    std::memcpy(in6.sin6_addr.s6_addr, e.addr.data(), 16);
    in6.sin6_scope_id = e.scope_id;
  }
  std::memcpy(out, &in6, sizeof(in6));
  return sizeof(in6);
}

std::string EndpointToString(const Endpoint& e) {
  char buf[INET6_ADDRSTRLEN] = {};
  inet_ntop(e.family, e.addr.data(), buf, sizeof(buf));
  if (e.family == AF_INET) return text::Cat(buf, ":", e.port);
  return text::Cat("[", buf, "]:", e.port);
}

std::optional<Endpoint> ParseEndpoint(std::string_view s, bool need_port) {
  std::string addr;
  std::string_view port;
  bool bracketed = false;
  if (!s.empty() && s.front() == '[') {
    const size_t close = s.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    addr = std::string(s.substr(1, close - 1));
    std::string_view rest = s.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return std::nullopt;
      port = rest.substr(1);
      if (port.empty()) return std::nullopt;
    }
    bracketed = true;
  } else if (std::count(s.begin(), s.end(), ':') == 1) {
    const size_t colon = s.find(':');
    addr = std::string(s.substr(0, colon));
    port = s.substr(colon + 1);
    if (port.empty()) return std::nullopt;
  } else {
    addr = std::string(s);  // IPv4 without port, or unbracketed IPv6 without port
  }
  Endpoint e;
  in6_addr a6;
  if (!bracketed && inet_pton(AF_INET, addr.c_str(), e.addr.data()) == 1) {
    e.family = AF_INET;
  } else if (inet_pton(AF_INET6, addr.c_str(), &a6) == 1) {
    e.family = AF_INET6;
    if (IN6_IS_ADDR_V4MAPPED(&a6)) {
      e.family = AF_INET;
      e.v4_mapped = true;
      std::memcpy(e.addr.data(), a6.s6_addr + 12, 4);
    } else {
      std::memcpy(e.addr.data(), a6.s6_addr, 16);
    }
  } else {
    return std::nullopt;
  }
  if (port.empty()) {
    if (need_port) return std::nullopt;
    return e;
  }
  uint32_t p = 0;
  if (port.size() > 5 ||
      !std::all_of(port.begin(), port.end(), [](char c) { return c >= '0' && c <= '9'; }) ||
      !absl::SimpleAtoi(std::string(port), &p) || p > 65535) {
    return std::nullopt;
  }
  e.port = static_cast<uint16_t>(p);
  return e;
}

bool CidrContains(const Cidr& c, const Endpoint& e) {
  return c.family == e.family && PrefixEqual(c.addr.data(), e.addr.data(), c.prefix);
}

bool PortInRange(const PortRange& r, uint16_t port) {
  return r.any() || (port >= r.first && port <= r.last);
}

bool GlobMatch(std::string_view pattern, std::string_view text) {
  char pat[4097];
  if (pattern.size() >= sizeof(pat)) return false;
  std::memcpy(pat, pattern.data(), pattern.size());
  pat[pattern.size()] = '\0';
  return Fnmatch(pat, text, 0);
}

bool ProfileMatchesApp(const Profile& p, const AppIdentity& app, const std::string** app_pattern,
                       const UserMatch** user) {
  if (p.apps.empty() && p.users.empty()) return false;
  const std::string* matched_app = nullptr;
  if (!p.apps.empty()) {
    const std::string_view base = Basename(app.exe);
    for (const std::string& pattern : p.apps) {
      const bool path = pattern.find('/') != std::string::npos;
      if (Fnmatch(pattern.c_str(), path ? app.exe : base, 0)) {
        matched_app = &pattern;
        break;
      }
    }
    if (matched_app == nullptr) return false;
  }
  const UserMatch* matched_user = nullptr;
  if (!p.users.empty()) {
    for (const UserMatch& u : p.users) {
      if ((u.uid && *u.uid == app.uid) || (!u.name.empty() && u.name == app.user)) {
        matched_user = &u;
        break;
      }
    }
    if (matched_user == nullptr) return false;
  }
  if (app_pattern != nullptr) *app_pattern = matched_app;
  if (user != nullptr) *user = matched_user;
  return true;
}

ProfileChoice SelectProfile(const Config& config, const AppIdentity& app, std::string_view name) {
  ProfileChoice c;
  if (!name.empty()) {
    c.profile = config.FindProfile(name);
    c.by = c.profile != nullptr ? SelectedBy::kName : SelectedBy::kUnknownName;
    return c;
  }
  for (const Profile& p : config.profiles) {
    if (ProfileMatchesApp(p, app, &c.app_pattern, &c.user)) {
      c.profile = &p;
      c.by = SelectedBy::kApp;
      return c;
    }
  }
  if (!config.default_profile.empty()) {
    c.profile = config.FindProfile(config.default_profile);
    if (c.profile != nullptr) c.by = SelectedBy::kDefaultProfile;
  }
  return c;
}

namespace {

bool AddressMatches(const OutgoingRule& r, const Endpoint& dest) {
  return r.to.empty() || std::any_of(r.to.begin(), r.to.end(),
                                     [&](const Cidr& c) { return CidrContains(c, dest); });
}

// One of a host rule's globs matches `name` (case-insensitively, a final dot ignored).
bool NameMatches(const OutgoingRule& r, std::string_view name) {
  if (name.size() > 1 && name.back() == '.') name.remove_suffix(1);
  return std::any_of(r.hosts.begin(), r.hosts.end(),
                     [&](const std::string& g) { return Fnmatch(g.c_str(), name, FNM_CASEFOLD); });
}

}  // namespace

Decision DecideConnect(const Profile& p, const Endpoint& dest) {
  static const std::vector<std::string> kNoNames;
  return DecideConnect(p, dest, kNoNames);
}

Decision DecideConnect(const Profile& p, const Endpoint& dest,
                       const std::vector<std::string>& names, const std::string** named) {
  for (size_t i = 0; i < p.outgoing.size(); ++i) {
    const OutgoingRule& r = p.outgoing[i];
    if (!PortInRange(r.port, dest.port)) continue;
    if (r.hosts.empty()) {
      if (!AddressMatches(r, dest)) continue;
    } else {
      const auto hit = std::find_if(names.begin(), names.end(),
                                    [&](const std::string& n) { return NameMatches(r, n); });
      if (hit == names.end()) continue;
      if (named != nullptr) *named = &*hit;
    }
    return {r.action, static_cast<int>(i + 1), &r};
  }
  return {p.outgoing_default, 0, nullptr};
}

bool HasHostRules(const Profile& p) {
  return std::any_of(p.outgoing.begin(), p.outgoing.end(),
                     [](const OutgoingRule& r) { return !r.hosts.empty(); });
}

Decision DecideConnect(const Profile& p, const sockaddr* sa, socklen_t len) {
  const std::optional<Endpoint> e = EndpointFromSockaddr(sa, len);
  if (!e) return {Action::kBypass, 0, nullptr};
  return DecideConnect(p, *e);
}

Decision DecideHost(const Profile& p, std::string_view host, uint16_t port) {
  for (size_t i = 0; i < p.outgoing.size(); ++i) {
    const OutgoingRule& r = p.outgoing[i];
    if (!r.to.empty()) continue;
    if (!r.port.any() && (port == 0 || !PortInRange(r.port, port))) continue;
    if (!r.hosts.empty() && !NameMatches(r, host)) continue;
    return {r.action, static_cast<int>(i + 1), &r};
  }
  return {p.outgoing_default, 0, nullptr};
}

BindDecision DecideBind(const Profile& p, const Endpoint& local) {
  BindDecision d;
  d.host = local;
  for (size_t i = 0; i < p.incoming.size(); ++i) {
    const IncomingRule& r = p.incoming[i];
    if (!PortInRange(r.port, local.port)) continue;
    if (!r.address.empty() && std::none_of(r.address.begin(), r.address.end(),
                                           [&](const Cidr& c) { return CidrContains(c, local); })) {
      continue;
    }
    d.action = r.action;
    d.rule = static_cast<int>(i + 1);
    d.matched = &r;
    if (r.action == Action::kRoute) {
      if (r.host_port != 0) {
        d.host.port = static_cast<uint16_t>(r.host_port + (local.port - r.port.first));
      }
      if (r.host_address) {
        d.host.addr = r.host_address->addr;
        d.host.scope_id = 0;
      }
      d.mapped = !(d.host == local);
    }
    return d;
  }
  d.action = p.incoming_default;
  return d;
}

std::optional<Endpoint> GuestEndpoint(const Profile& p, const Endpoint& host, bool invert_address) {
  for (const IncomingRule& r : p.incoming) {
    if (r.action != Action::kRoute || (r.host_port == 0 && !r.host_address)) continue;
    Endpoint guest = host;
    if (r.host_port != 0) {
      // The rule's host ports: host_port .. host_port + (last - first).
      const uint32_t span = r.port.last - r.port.first;
      if (host.port < r.host_port || host.port > r.host_port + span) continue;
      guest.port = static_cast<uint16_t>(r.port.first + (host.port - r.host_port));
    }
    if (r.host_address) {
      if (host.family != r.host_address->family || host.addr != r.host_address->addr) continue;
      const bool one = r.address.size() == 1 &&
                       r.address[0].prefix == (r.address[0].family == AF_INET ? 32 : 128);
      guest.addr = one ? r.address[0].addr : std::array<uint8_t, 16>{};
      guest.scope_id = 0;
    }
    const BindDecision back = DecideBind(p, guest);
    if (back.matched != &r || back.host.port != host.port) continue;
    if (!invert_address) {
      guest.addr = host.addr;
      guest.scope_id = host.scope_id;
    }
    return guest;
  }
  return std::nullopt;
}

BindDecision DecideBind(const Profile& p, const sockaddr* sa, socklen_t len) {
  const std::optional<Endpoint> e = EndpointFromSockaddr(sa, len);
  if (!e) return {};
  return DecideBind(p, *e);
}

std::string DescribeDecision(const Config& c, const Profile& p, const Decision& d) {
  if (d.matched == nullptr) {
    if (p.outgoing_default_pos.line == 0) {
      return text::Cat("outgoing_default of profile '", p.name, "': ", ActionName(d.action));
    }
    return text::Cat("outgoing_default of profile '", p.name, "' (",
                     Where(c, p.outgoing_default_pos), "): ", ActionName(d.action));
  }
  return text::Cat("outgoing rule ", d.rule, " of profile '", p.name, "' (",
                   Where(c, d.matched->pos), "): ", d.matched->text);
}

std::string DescribeDecision(const Config& c, const Profile& p, const BindDecision& d) {
  if (d.matched == nullptr) {
    if (p.incoming_default_pos.line == 0) {
      return text::Cat("incoming_default of profile '", p.name,
                       "' (not set): ", ActionName(d.action));
    }
    return text::Cat("incoming_default of profile '", p.name, "' (",
                     Where(c, p.incoming_default_pos), "): ", ActionName(d.action));
  }
  return text::Cat("incoming rule ", d.rule, " of profile '", p.name, "' (",
                   Where(c, d.matched->pos), "): ", d.matched->text);
}

}  // namespace xsock::config
