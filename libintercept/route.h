// XSOCK_ROUTE: which TCP destinations go through xsockd.
//
// A comma-separated list of `CIDR` or `CIDR:port` entries; IPv6 addresses in brackets:
//   127.0.0.0/8, 10.0.0.0/8:5432, [::1]/128, [fd00::]/8:443, 192.168.1.7, [::1]:22
// A bare address means /32 (IPv4) or /128 (IPv6). An unbracketed IPv6 address without a
// port (`::1`, `fd00::/8`) is accepted too. Host bits below the prefix are ignored.
// An IPv4-mapped IPv6 destination (::ffff:a.b.c.d) is matched as the IPv4 address.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace xsock::intercept {

// One parsed entry.
struct RouteEntry {
  sa_family_t family = AF_UNSPEC;  // AF_INET or AF_INET6
  std::array<uint8_t, 16> addr{};  // network order; IPv4 uses the first 4 bytes
  uint8_t prefix = 0;              // 0..32 or 0..128
  uint16_t port = 0;               // 0: any port
  bool operator==(const RouteEntry&) const = default;
};

// Parses one entry (no surrounding spaces); the error names what is wrong with it.
absl::StatusOr<RouteEntry> ParseRouteEntry(absl::string_view entry);

// The parsed XSOCK_ROUTE; immutable once built.
class RouteTable {
 public:
  RouteTable() = default;

  // Parses a whole XSOCK_ROUTE value. Each malformed entry is skipped and described by one
  // line appended to `errors` ("XSOCK_ROUTE entry 'x' ignored: ..."). Empty entries
  // (",,", a trailing comma) are ignored silently.
  static RouteTable Parse(absl::string_view spec, std::vector<std::string>* errors);

  // True if a connection to `sa` must be routed. False for anything that is not a
  // complete AF_INET / AF_INET6 address.
  bool Matches(const sockaddr* sa, socklen_t len) const;

  bool empty() const { return entries_.empty(); }
  const std::vector<RouteEntry>& entries() const { return entries_; }

 private:
  std::vector<RouteEntry> entries_;
};

}  // namespace xsock::intercept
