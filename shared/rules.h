// The routing decision over a parsed configuration (shared/config.h): which profile a
// process uses, and for a connect(), a host name or a bind() which rule decides.
//
// Pure functions: no I/O, no allocation on the decision paths, no exceptions. Decisions
// point into the Config/Profile they were made from, which must outlive them.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shared/config.h"

namespace xsock::config {

// A destination or bind address, normalised: an IPv4-mapped IPv6 address (::ffff:a.b.c.d)
// is AF_INET, so it matches IPv4 rules.
struct Endpoint {
  sa_family_t family = AF_INET;    // AF_INET or AF_INET6
  std::array<uint8_t, 16> addr{};  // network order; IPv4 uses the first 4 bytes
  uint16_t port = 0;               // host order
  bool v4_mapped = false;          // given as ::ffff:a.b.c.d (ToSockaddr gives it back so)
  uint32_t scope_id = 0;           // IPv6 scope, kept for ToSockaddr
  bool operator==(const Endpoint&) const = default;
};

// nullopt for anything that is not a complete AF_INET / AF_INET6 address (the 24-byte
// RFC 2133 sockaddr_in6 without scope id is accepted, as the kernel does).
std::optional<Endpoint> EndpointFromSockaddr(const sockaddr* sa, socklen_t len);
// Writes `e` as sockaddr_in / sockaddr_in6 (IPv4-mapped again if it was); returns the length.
socklen_t ToSockaddr(const Endpoint& e, sockaddr_storage* out);
// "10.1.2.3:443", "[::1]:22".
std::string EndpointToString(const Endpoint& e);
// Parses "10.1.2.3:443", "[::1]:22" or (port optional when `need_port` is false) a bare
// address; nullopt if it is not an address (a host name, say).
std::optional<Endpoint> ParseEndpoint(std::string_view s, bool need_port);

bool CidrContains(const Cidr& c, const Endpoint& e);  // family must match
bool PortInRange(const PortRange& r, uint16_t port);  // any() matches every port, 0 too
// fnmatch(3) without flags: '*' also matches '/' and a leading '.'.
bool GlobMatch(std::string_view pattern, std::string_view text);

// The process a profile is chosen for.
struct AppIdentity {
  std::string_view exe;   // absolute executable path (/proc/self/exe), or as given
  uid_t uid = 0;          // effective uid
  std::string_view user;  // its user name, empty if unknown (then only uid entries match)
};

// Why a profile was chosen.
enum class SelectedBy : uint8_t {
  kNone,            // nothing applies: the process routes nothing by configuration
  kName,            // XSOCK_PROFILE / --profile
  kApp,             // the first profile (in file order) whose apps and users match
  kDefaultProfile,  // no profile matched, default_profile names one
  kUnknownName,     // a name was given but no profile has it (profile is nullptr)
};

struct ProfileChoice {
  const Profile* profile = nullptr;
  SelectedBy by = SelectedBy::kNone;
  const std::string* app_pattern = nullptr;  // kApp: the apps entry that matched (nullptr:
                                             // the profile has no apps, users matched)
  const UserMatch* user = nullptr;           // kApp: the users entry that matched, if any
};

// By name when `name` is non-empty (XSOCK_PROFILE), else by application, else
// default_profile. A profile without apps and users is never chosen by application.
ProfileChoice SelectProfile(const Config& config, const AppIdentity& app, std::string_view name);
// True if `p`'s apps and users match `app` (apps: the basename unless the pattern has a
// '/', then the whole path). Sets the matching entries when given.
bool ProfileMatchesApp(const Profile& p, const AppIdentity& app,
                       const std::string** app_pattern = nullptr, const UserMatch** user = nullptr);

// An outgoing decision: a connect() or a host name.
struct Decision {
  Action action = Action::kBypass;
  int rule = 0;                           // 1-based in profile.outgoing; 0: the default
  const OutgoingRule* matched = nullptr;  // nullptr: the profile's outgoing_default
  bool routed() const { return action == Action::kRoute; }
};

// A connect() to `dest`: the first outgoing rule with `to` (or neither `to` nor `host`)
// whose address, port range matches; name rules (`host`) never match an address.
Decision DecideConnect(const Profile& p, const Endpoint& dest);
// A connect() to `dest`, an address that the process got by resolving `names` through
// the backend: in the same single pass, a rule with `host` matches when one of its globs
// matches one of the names (and the port is in its range), a rule with `to` by address.
// DecideConnect(p, dest) is this with no names. `named` (optional) gets the name that
// matched a host rule.
Decision DecideConnect(const Profile& p, const Endpoint& dest,
                       const std::vector<std::string>& names, const std::string** named = nullptr);
// Whether any outgoing rule of `p` has `host` globs (only then do names matter).
bool HasHostRules(const Profile& p);
// Same for a sockaddr; one that is not AF_INET/AF_INET6 is always bypass (rule 0 without
// looking at the default: such sockets are never routed).
Decision DecideConnect(const Profile& p, const sockaddr* sa, socklen_t len);
// A host name about to be resolved through the backend (and connected to on `port`, 0:
// not known): the first rule with `host` globs matching it (case-insensitively, a trailing
// dot ignored), or with neither `to` nor `host`; a rule with a port range matches only a
// known port in it. Address rules never match a name.
Decision DecideHost(const Profile& p, std::string_view host, uint16_t port = 0);

// An incoming decision: a bind() (and so the listen() on that socket).
struct BindDecision {
  Action action = Action::kBypass;
  int rule = 0;                           // 1-based in profile.incoming; 0: the default
  const IncomingRule* matched = nullptr;  // nullptr: the profile's incoming_default
  Endpoint host;  // route: where xsockd binds on the host (the address asked for, mapped)
  bool routed() const { return action == Action::kRoute; }
  bool mapped = false;  // host differs from the address asked for
};

BindDecision DecideBind(const Profile& p, const Endpoint& local);
// The inverse of a mapped bind: `host` is a local address xsockd reports for a routed
// socket (getsockname of a listener, or of a connection it accepted); the address the
// application would see had its own stack bound it. The first routed incoming rule with
// a host_port / host_address whose host side contains `host` is inverted (host_port by
// offset; host_address back to the rule's one full-length `address`, else the wildcard
// address of the family), and kept only if DecideBind of the result is that same rule
// mapping back to `host`'s port. nullopt: not the host side of any mapping (report as is).
// `invert_address` false (a connection accepted on such a listener, whose local address is
// a concrete one the guest has no equivalent of): only the port is inverted.
std::optional<Endpoint> GuestEndpoint(const Profile& p, const Endpoint& host,
                                      bool invert_address = true);
// Not AF_INET/AF_INET6: always bypass.
BindDecision DecideBind(const Profile& p, const sockaddr* sa, socklen_t len);

// One-line explanations for logs and `xsock explain`, e.g.
// "outgoing rule 2 of profile 'web' (xsock.conf:31): route to 10.0.0.0/8 port 5432" or
// "outgoing_default of profile 'web' (xsock.conf:12): bypass".
std::string DescribeDecision(const Config& c, const Profile& p, const Decision& d);
std::string DescribeDecision(const Config& c, const Profile& p, const BindDecision& d);

}  // namespace xsock::config
