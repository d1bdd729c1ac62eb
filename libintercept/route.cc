#include "libintercept/route.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cstddef>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace xsock::intercept {
namespace {

absl::Status Bad(absl::string_view why) { return absl::InvalidArgumentError(why); }

bool AllDigits(absl::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// "443" -> 443; ports are 1..65535 (0 would mean "any", which is spelled by omitting it).
absl::StatusOr<uint16_t> ParsePort(absl::string_view s) {
  uint32_t v = 0;
  if (!AllDigits(s) || s.size() > 5 || !absl::SimpleAtoi(s, &v) || v == 0 || v > 65535) {
    return Bad(absl::StrCat("port '", s, "' is not a number in 1..65535"));
  }
  return static_cast<uint16_t>(v);
}

absl::StatusOr<uint8_t> ParsePrefix(absl::string_view s, int max) {
  int v = 0;
  if (!AllDigits(s) || s.size() > 3 || !absl::SimpleAtoi(s, &v) || v > max) {
    return Bad(absl::StrCat("prefix '/", s, "' is not a number in 0..", max));
  }
  return static_cast<uint8_t>(v);
}

// Parses "addr" or "addr/prefix" of one family into `out`.
absl::Status ParseCidr(absl::string_view cidr, sa_family_t family, RouteEntry& out) {
  const int max = family == AF_INET ? 32 : 128;
  absl::string_view addr = cidr;
  out.prefix = static_cast<uint8_t>(max);
  if (const size_t slash = cidr.find('/'); slash != absl::string_view::npos) {
    addr = cidr.substr(0, slash);
    auto prefix = ParsePrefix(cidr.substr(slash + 1), max);
    if (!prefix.ok()) return prefix.status();
    out.prefix = *prefix;
  }
  const std::string text(addr);  // inet_pton wants a terminated string
  if (inet_pton(family, text.c_str(), out.addr.data()) != 1) {
    return Bad(
        absl::StrCat("'", addr, "' is not an ", family == AF_INET ? "IPv4" : "IPv6", " address"));
  }
  out.family = family;
  return absl::OkStatus();
}

bool PrefixEqual(const uint8_t* a, const uint8_t* b, int bits) {
  const int whole = bits / 8;
  if (std::memcmp(a, b, static_cast<size_t>(whole)) != 0) return false;
  const int rest = bits % 8;
  if (rest == 0) return true;
  const uint8_t mask = static_cast<uint8_t>(0xFF << (8 - rest));
  return (a[whole] & mask) == (b[whole] & mask);
}

}  // namespace

absl::StatusOr<RouteEntry> ParseRouteEntry(absl::string_view entry) {
  RouteEntry out;
  if (entry.empty()) return Bad("empty entry");
  if (entry.front() == '[') {
    // [v6] or [v6]/prefix, optionally followed by :port.
    const size_t close = entry.find(']');
    if (close == absl::string_view::npos) return Bad("'[' without a matching ']'");
    std::string cidr(entry.substr(1, close - 1));
    absl::string_view rest = entry.substr(close + 1);
    if (!rest.empty() && rest.front() == '/') {
      const size_t colon = rest.find(':');
      absl::StrAppend(&cidr, rest.substr(0, colon));
      rest = colon == absl::string_view::npos ? absl::string_view() : rest.substr(colon);
    }
    if (auto s = ParseCidr(cidr, AF_INET6, out); !s.ok()) return s;
    if (!rest.empty()) {
      if (rest.front() != ':') return Bad(absl::StrCat("unexpected '", rest, "' after ']'"));
      auto port = ParsePort(rest.substr(1));
      if (!port.ok()) return port.status();
      out.port = *port;
    }
    return out;
  }
  const size_t colons = static_cast<size_t>(std::count(entry.begin(), entry.end(), ':'));
  if (colons > 1) {
    // Unbracketed IPv6: the whole entry is the address (a port needs brackets).
    if (auto s = ParseCidr(entry, AF_INET6, out); !s.ok()) {
      return Bad(absl::StrCat(s.message(), " (write IPv6 with a port as [addr]/prefix:port)"));
    }
    return out;
  }
  absl::string_view cidr = entry;
  if (colons == 1) {
    const size_t colon = entry.find(':');
    cidr = entry.substr(0, colon);
    auto port = ParsePort(entry.substr(colon + 1));
    if (!port.ok()) return port.status();
    out.port = *port;
  }
  if (auto s = ParseCidr(cidr, AF_INET, out); !s.ok()) return s;
  return out;
}

RouteTable RouteTable::Parse(absl::string_view spec, std::vector<std::string>* errors) {
  RouteTable table;
  for (absl::string_view raw : absl::StrSplit(spec, ',')) {
    const absl::string_view entry = absl::StripAsciiWhitespace(raw);
    if (entry.empty()) continue;
    auto parsed = ParseRouteEntry(entry);
    if (!parsed.ok()) {
      if (errors != nullptr) {
        errors->push_back(
            absl::StrCat("XSOCK_ROUTE entry '", entry, "' ignored: ", parsed.status().message()));
      }
      continue;
    }
    table.entries_.push_back(*parsed);
  }
  return table;
}

bool RouteTable::Matches(const sockaddr* sa, socklen_t len) const {
  if (entries_.empty() || sa == nullptr || len < static_cast<socklen_t>(sizeof(sa_family_t))) {
    return false;
  }
  sa_family_t family;
  uint8_t addr[16];
  uint16_t port;
  if (sa->sa_family == AF_INET && len >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    sockaddr_in in;
    std::memcpy(&in, sa, sizeof(in));
    family = AF_INET;
    std::memcpy(addr, &in.sin_addr, 4);
    port = ntohs(in.sin_port);
  } else if (sa->sa_family == AF_INET6 &&
             len >= static_cast<socklen_t>(offsetof(sockaddr_in6, sin6_scope_id))) {
    // The kernel accepts the 24-byte RFC 2133 form (no scope id) too.
    sockaddr_in6 in6 = {};
    std::memcpy(&in6, sa, std::min<size_t>(len, sizeof(in6)));
    port = ntohs(in6.sin6_port);
    if (IN6_IS_ADDR_V4MAPPED(&in6.sin6_addr)) {
      family = AF_INET;
      std::memcpy(addr, in6.sin6_addr.s6_addr + 12, 4);
    } else {
      family = AF_INET6;
      std::memcpy(addr, in6.sin6_addr.s6_addr, 16);
    }
  } else {
    return false;
  }
  for (const RouteEntry& e : entries_) {
    if (e.family != family) continue;
    if (e.port != 0 && e.port != port) continue;
    if (PrefixEqual(e.addr.data(), addr, e.prefix)) return true;
  }
  return false;
}

}  // namespace xsock::intercept
