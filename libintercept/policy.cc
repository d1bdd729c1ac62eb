#include "libintercept/policy.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "absl/strings/str_cat.h"

namespace xsock::intercept {
namespace {

const char* Env(const char* name) {
  const char* v = getenv(name);
  return v != nullptr ? v : "";
}

// The user name of `uid` from /etc/passwd, read with stdio (NSS would open sockets of its
// own while the interceptor is being created); "" if not found.
std::string UserName(uid_t uid) {
  FILE* f = fopen("/etc/passwd", "re");
  if (f == nullptr) return "";
  std::string name;
  char line[1024];
  while (fgets(line, sizeof(line), f) != nullptr) {
    char* colon1 = strchr(line, ':');
    if (colon1 == nullptr) continue;
    char* colon2 = strchr(colon1 + 1, ':');
    if (colon2 == nullptr) continue;
    char* end = nullptr;
    const unsigned long u = strtoul(colon2 + 1, &end, 10);
    if (end == colon2 + 1 || *end != ':' || u != uid) continue;
    name.assign(line, colon1);
    break;
  }
  fclose(f);
  return name;
}

std::optional<config::LogLevel> ParseLogLevel(absl::string_view s) {
  if (s == "error") return config::LogLevel::kError;
  if (s == "warn") return config::LogLevel::kWarn;
  if (s == "info") return config::LogLevel::kInfo;
  if (s == "debug") return config::LogLevel::kDebug;
  return std::nullopt;
}

std::string DescribeChoice(const config::ProfileChoice& c) {
  const std::string name = c.profile != nullptr ? c.profile->name : "";
  switch (c.by) {
    case config::SelectedBy::kName:
      return absl::StrCat("profile '", name, "' (XSOCK_PROFILE)");
    case config::SelectedBy::kApp:
      return absl::StrCat("profile '", name, "' (application matches '",
                          c.app_pattern != nullptr ? *c.app_pattern : std::string("its users"),
                          "')");
    case config::SelectedBy::kDefaultProfile:
      return absl::StrCat("profile '", name, "' (default_profile)");
    default:
      return "no profile";
  }
}

}  // namespace

PolicySource PolicySource::FromProcess() {
  PolicySource s;
  if (const char* r = getenv("XSOCK_ROUTE"); r != nullptr) {
    s.route_env = r;
    s.route_env_set = true;
  }
  const char* cfg = Env("XSOCK_CONFIG");
  s.config_path_explicit = *cfg != '\0';
  s.config_path = s.config_path_explicit ? cfg : std::string(config::kDefaultConfigPath);
  s.profile = Env("XSOCK_PROFILE");
  s.log_env = Env("XSOCK_LOG");
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n > 0) s.exe_storage.assign(exe, static_cast<size_t>(n));
  const uid_t uid = geteuid();
  s.user_storage = UserName(uid);
  s.app.exe = s.exe_storage;
  s.app.uid = uid;
  s.app.user = s.user_storage;
  return s;
}

std::unique_ptr<RoutingPolicy> RoutingPolicy::Load(const PolicySource& src, const LogFn& log) {
  auto say = [&](absl::string_view line) {
    if (log) log(line);
  };
  std::unique_ptr<RoutingPolicy> p(new RoutingPolicy());
  bool log_from_env = false;
  if (!src.log_env.empty()) {
    if (auto l = ParseLogLevel(src.log_env)) {
      p->log_level_ = *l;
      log_from_env = true;
    } else {
      say(absl::StrCat("xsock: XSOCK_LOG '", src.log_env,
                       "' ignored: expected error, warn, info or debug"));
    }
  }
  // XSOCK_ROUTE, when set, replaces the file (an override for one run).
  if (src.route_env_set) {
    std::vector<std::string> errors;
    p->routes_ = RouteTable::Parse(src.route_env, &errors);
    for (const std::string& e : errors) say(absl::StrCat("xsock: ", e));
    p->mode_ = p->routes_.empty() ? Mode::kNone : Mode::kRouteEnv;
    p->origin_ = "XSOCK_ROUTE";
    return p;
  }
  auto fail_closed = [&](absl::string_view why) {
    say(absl::StrCat("xsock: ", why,
                     "; TCP connect() and bind() fail (ECONNREFUSED / EACCES), "
                     "everything else is untouched"));
    p->mode_ = Mode::kFailClosed;
    p->origin_ = "unusable configuration";
    return std::move(p);
  };
  bool not_found = false;
  config::ParseResult parsed = config::ParseConfigFile(src.config_path, &not_found);
  if (!parsed.config) {
    if (not_found && !src.config_path_explicit && src.profile.empty()) {
      p->origin_ = "no configuration file";
      return p;  // no file, nothing asked for: nothing is routed
    }
    const std::string first =
        parsed.errors.empty() ? src.config_path + ": cannot be used" : parsed.errors[0].ToString();
    const size_t more = parsed.errors.size() > 1 ? parsed.errors.size() - 1 : 0;
    return fail_closed(more > 0 ? absl::StrCat(first, " (and ", more, " more: xsock check)")
                                : first);
  }
  p->config_ = std::move(*parsed.config);
  const config::ProfileChoice choice = config::SelectProfile(*p->config_, src.app, src.profile);
  if (choice.by == config::SelectedBy::kUnknownName) {
    return fail_closed(
        absl::StrCat("XSOCK_PROFILE '", src.profile, "' names no profile of ", src.config_path));
  }
  p->settings_ = choice.profile != nullptr ? choice.profile->settings : p->config_->settings;
  p->ring_order_ = p->settings_.ring_order();
  if (!log_from_env) p->log_level_ = p->settings_.log_level;
  p->profile_ = choice.profile;
  if (p->profile_ != nullptr) {
    p->has_bind_mapping_ = std::any_of(
        p->profile_->incoming.begin(), p->profile_->incoming.end(),
        [](const config::IncomingRule& r) { return r.host_port != 0 || r.host_address; });
    if (config::HasHostRules(*p->profile_)) p->names_ = &ResolvedNames();
  }
  p->origin_ = DescribeChoice(choice);
  p->mode_ = choice.profile != nullptr ? Mode::kProfile : Mode::kNone;
  return p;
}

ConnectVerdict RoutingPolicy::ForConnect(const sockaddr* sa, socklen_t len) const {
  switch (mode_) {
    case Mode::kNone:
      return {};
    case Mode::kRouteEnv:
      return {.route = routes_.Matches(sa, len)};
    case Mode::kFailClosed:
      return {.fail = config::EndpointFromSockaddr(sa, len).has_value()};
    case Mode::kProfile:
      return {.route = DecideByProfile(sa, len, nullptr).routed()};
  }
  return {};
}

config::Decision RoutingPolicy::DecideByProfile(const sockaddr* sa, socklen_t len,
                                                std::string* named) const {
  const auto dest = config::EndpointFromSockaddr(sa, len);
  if (!dest) return {};
  // Names matter only to a profile with host rules, and only for addresses this process
  // resolved through xsockd; otherwise no lock is taken.
  if (names_ == nullptr || names_->empty()) {
    return config::DecideConnect(*profile_, *dest);
  }
  const std::vector<std::string> names = names_->NamesOf(*dest);
  const std::string* hit = nullptr;
  const config::Decision d = config::DecideConnect(*profile_, *dest, names, &hit);
  if (named != nullptr && hit != nullptr) *named = *hit;
  return d;
}

BindVerdict RoutingPolicy::ForBind(const sockaddr* sa, socklen_t len) const {
  BindVerdict v;
  const auto local = config::EndpointFromSockaddr(sa, len);
  if (!local) return v;
  switch (mode_) {
    case Mode::kNone:
      return v;
    case Mode::kFailClosed:
      v.fail = true;
      return v;
    case Mode::kRouteEnv:
      v.route = routes_.Matches(sa, len);
      break;
    case Mode::kProfile: {
      const config::BindDecision d = config::DecideBind(*profile_, *local);
      v.route = d.routed();
      v.mapped = d.mapped;
      if (v.route) v.host_len = config::ToSockaddr(d.host, &v.host);
      return v;
    }
  }
  if (v.route) v.host_len = config::ToSockaddr(*local, &v.host);
  return v;
}

std::optional<config::Endpoint> RoutingPolicy::GuestLocal(const sockaddr* sa, socklen_t len,
                                                          bool accepted) const {
  if (mode_ != Mode::kProfile || !has_bind_mapping_) return std::nullopt;
  const auto host = config::EndpointFromSockaddr(sa, len);
  if (!host) return std::nullopt;
  return config::GuestEndpoint(*profile_, *host, /*invert_address=*/!accepted);
}

std::string RoutingPolicy::Explain(absl::string_view call, const sockaddr* sa, socklen_t len,
                                   const std::function<std::string()>& by_profile) const {
  const auto ep = config::EndpointFromSockaddr(sa, len);
  const std::string what =
      absl::StrCat(call, " ", ep ? config::EndpointToString(*ep) : std::string("(not IP)"));
  switch (mode_) {
    case Mode::kNone:
      return absl::StrCat(what, ": bypass (", origin_, ")");
    case Mode::kFailClosed:
      return absl::StrCat(what, ": fail (", origin_, ")");
    case Mode::kRouteEnv:
      return absl::StrCat(what, routes_.Matches(sa, len) ? ": route" : ": bypass",
                          " (XSOCK_ROUTE)");
    case Mode::kProfile:
      return absl::StrCat(what, ": ", ep ? by_profile() : std::string("bypass"));
  }
  return what;
}

std::string RoutingPolicy::ExplainConnect(const sockaddr* sa, socklen_t len) const {
  return Explain("connect", sa, len, [&] {
    std::string named;
    const config::Decision d = DecideByProfile(sa, len, &named);
    std::string line = config::DescribeDecision(*config_, *profile_, d);
    if (!named.empty()) absl::StrAppend(&line, " (resolved from ", named, ")");
    return line;
  });
}

std::string RoutingPolicy::ExplainBind(const sockaddr* sa, socklen_t len) const {
  return Explain("bind", sa, len, [&] {
    return config::DescribeDecision(*config_, *profile_, config::DecideBind(*profile_, sa, len));
  });
}

}  // namespace xsock::intercept
