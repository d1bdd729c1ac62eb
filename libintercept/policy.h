// Which connect()s and bind()s go to xsockd, and the settings that go with them: the
// process's profile from the configuration file (shared/config.h, shared/rules.h), or
// XSOCK_ROUTE when it is set (an override that replaces the file).
//
// Built once, when the interceptor is created; immutable after, so decisions need no
// lock. A configuration that cannot be used (unreadable, malformed, an unknown
// XSOCK_PROFILE) fails closed: every TCP connect()/bind() on AF_INET/AF_INET6 fails
// (ECONNREFUSED / EACCES) rather than leaving the process's traffic on its own stack,
// and everything else is untouched. `xsock run` and `xsock check` catch such files
// before a program starts.
#pragma once

#include <sys/socket.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "absl/strings/string_view.h"
#include "libintercept/name_memory.h"
#include "libintercept/route.h"
#include "shared/config.h"
#include "shared/rules.h"

namespace xsock::intercept {

// Where a policy comes from: the environment and the process, injected so tests can
// build any situation.
struct PolicySource {
  std::string route_env;  // XSOCK_ROUTE ("" when unset)
  bool route_env_set = false;
  std::string config_path;            // XSOCK_CONFIG or /etc/xsock/xsock.conf
  bool config_path_explicit = false;  // XSOCK_CONFIG was set: a missing file is an error
  std::string profile;                // XSOCK_PROFILE
  std::string log_env;                // XSOCK_LOG (error|warn|info|debug), "" unset
  config::AppIdentity app;            // exe, uid, user (strings owned below)
  std::string exe_storage, user_storage;

  static PolicySource FromProcess();
};

struct ConnectVerdict {
  bool route = false;
  bool fail = false;  // fail-closed (unusable configuration): the call fails
};

struct BindVerdict {
  bool route = false;
  bool fail = false;
  // Where xsockd binds when routed: the address asked for, or the profile's mapping.
  sockaddr_storage host{};
  socklen_t host_len = 0;
  bool mapped = false;
};

class RoutingPolicy {
 public:
  using LogFn = std::function<void(absl::string_view)>;

  // `log` gets the one-line diagnostics (a bad config, a bad XSOCK_ROUTE entry).
  static std::unique_ptr<RoutingPolicy> Load(const PolicySource& src, const LogFn& log);

  ConnectVerdict ForConnect(const sockaddr* sa, socklen_t len) const;
  BindVerdict ForBind(const sockaddr* sa, socklen_t len) const;
  // One line saying which rule decided, for debug logs: "connect 10.0.0.5:5432: route by
  // outgoing rule 2 of profile 'db' (xsock.conf:31): route to 10.0.0.0/8 port 5432".
  std::string ExplainConnect(const sockaddr* sa, socklen_t len) const;
  std::string ExplainBind(const sockaddr* sa, socklen_t len) const;

  // False only if no connect() and no bind() can ever be routed (nothing to watch for).
  bool may_route() const { return mode_ != Mode::kNone; }
  bool fallback_when_unreachable() const {
    return settings_.on_unreachable == config::OnUnreachable::kFallback;
  }
  uint32_t ring_order() const { return ring_order_; }  // 0: xsockd's default
  config::LogLevel log_level() const { return log_level_; }
  const std::string& log_destination() const { return settings_.log; }
  const std::string& socket_path() const { return settings_.socket; }  // "": not set
  bool resolve_through_backend() const { return settings_.resolve == config::Resolve::kBackend; }
  // "profile 'web' (chosen by app pattern 'nginx')", "XSOCK_ROUTE", ...
  const std::string& origin() const { return origin_; }
  // Where the names of resolved addresses come from, for host rules (Load sets the
  // process's ResolvedNames() for a profile with host rules, else nullptr: names are
  // never looked up; tests give their own).
  void set_names(const NameMemory* names) { names_ = names; }
  // The address the application sees for a local address xsockd reports on a routed
  // listener or accepted connection: the inverse of the profile's bind mapping
  // (config::GuestEndpoint); nullopt when nothing is mapped (report it as is).
  // `accepted`: of a connection accepted on a mapped listener (only the port changes).
  std::optional<config::Endpoint> GuestLocal(const sockaddr* sa, socklen_t len,
                                             bool accepted = false) const;

 private:
  enum class Mode { kNone, kRouteEnv, kProfile, kFailClosed };
  RoutingPolicy() = default;
  // The profile's decision for a connect(), by address and by the names it was resolved
  // from; `named` (optional) gets the name that matched a host rule.
  config::Decision DecideByProfile(const sockaddr* sa, socklen_t len, std::string* named) const;
  std::string Explain(absl::string_view call, const sockaddr* sa, socklen_t len,
                      const std::function<std::string()>& by_profile) const;

  Mode mode_ = Mode::kNone;
  RouteTable routes_;
  std::optional<config::Config> config_;
  const config::Profile* profile_ = nullptr;
  bool has_bind_mapping_ = false;
  const NameMemory* names_ = nullptr;
  config::Settings settings_;
  uint32_t ring_order_ = 0;
  config::LogLevel log_level_ = config::LogLevel::kWarn;
  std::string origin_;
};

}  // namespace xsock::intercept
