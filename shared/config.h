// The xsock configuration file (/etc/xsock/xsock.conf): schema, loading, validation.
//
// TOML, read with toml++ built without exceptions, so the loader can run inside
// libxsock.so where nothing may throw. The format is described in docs/config.md; in
// short:
//
//   default_profile = "guest"            # optional: used when no profile's apps/users match
//   [settings]                           # optional: defaults for every profile
//   on_unreachable = "fail"              # fail | fallback
//   ring_size = 262144                   # bytes per direction, power of two, 4 KiB..16 MiB
//   log_level = "warn"                   # error | warn | info | debug
//   log = "stderr"                       # stderr | an absolute file path
//   resolve = "local"                    # local | backend
//   socket = "/run/xsock/xsockd.sock"    # xsockd's socket
//
//   [[profile]]
//   name = "web"
//   apps = ["nginx", "/usr/sbin/*"]      # fnmatch globs; with a '/': the executable path
//   users = ["www-data", 33]             # optional: names or uids
//   outgoing_default = "bypass"          # required
//   incoming_default = "bypass"          # optional, bypass
//   [[profile.outgoing]]                 # ordered, first match wins
//   action = "route"
//   to = "10.0.0.0/8"                    # or an array; or host = "*.internal"
//   port = "5432"                        # 5432, "5432" or "8000-8100"
//   [[profile.incoming]]
//   action = "route"
//   port = 80
//   host_port = 8080                     # guest port 80 is the host's port 8080
//
// Every error carries file:line:column and says what was expected; unknown keys are
// errors. The matcher over these types is shared/rules.h.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace xsock::config {

inline constexpr std::string_view kDefaultConfigPath = "/etc/xsock/xsock.conf";
inline constexpr uint32_t kMinRingSize = 4096;              // shared/socket_page.h kMinRingOrder
inline constexpr uint32_t kMaxRingSize = 16 * 1024 * 1024;  // kMaxRingOrder
inline constexpr uint32_t kDefaultRingSize = 256 * 1024;    // kDefaultRingOrder

// A place in the configuration file; line and column count from 1 (0: unknown).
struct SourcePos {
  uint32_t line = 0;
  uint32_t column = 0;
  bool operator==(const SourcePos&) const = default;
};

// One validation or syntax error.
struct ConfigError {
  std::string file;  // as given to the loader
  SourcePos pos;
  std::string message;  // what is wrong and what was expected, with context
  // "file:line:column: message" ("file: message" without a position).
  std::string ToString() const;
};

enum class Action : uint8_t { kBypass, kRoute };
enum class OnUnreachable : uint8_t { kFail, kFallback };
enum class LogLevel : uint8_t { kError, kWarn, kInfo, kDebug };
enum class Resolve : uint8_t { kLocal, kBackend };
enum class Protocol : uint8_t { kTcp };  // the only protocol xsock carries

std::string_view ActionName(Action a);  // "route" / "bypass"
std::string_view OnUnreachableName(OnUnreachable o);
std::string_view LogLevelName(LogLevel l);
std::string_view ResolveName(Resolve r);
// The inverse of LogLevelName ("error", "warn", "info", "debug"), for XSOCK_LOG.
std::optional<LogLevel> LogLevelFromName(std::string_view name);

// An IPv4 or IPv6 prefix. Host bits below the prefix are cleared at parse time.
struct Cidr {
  sa_family_t family = AF_INET;    // AF_INET or AF_INET6
  std::array<uint8_t, 16> addr{};  // network order; IPv4 uses the first 4 bytes
  uint8_t prefix = 0;              // 0..32 or 0..128
  bool operator==(const Cidr&) const = default;
};

// Inclusive port range; {0, 0} means "any port" (no `port` key).
struct PortRange {
  uint16_t first = 0;
  uint16_t last = 0;
  bool any() const { return first == 0 && last == 0; }
  bool operator==(const PortRange&) const = default;
};

// [[profile.outgoing]]: a connect() or a name resolved through the backend.
struct OutgoingRule {
  Action action = Action::kBypass;
  std::vector<Cidr> to;            // empty: any address
  std::vector<std::string> hosts;  // fnmatch globs on host names; non-empty: a name rule
  PortRange port;
  Protocol protocol = Protocol::kTcp;
  SourcePos pos;     // the rule's table
  std::string text;  // canonical one-line form, e.g. "route to 10.0.0.0/8 port 5432"
};

// [[profile.incoming]]: a bind()/listen().
struct IncomingRule {
  Action action = Action::kBypass;
  std::vector<Cidr> address;  // the bind address the application asks for; empty: any
  PortRange port;             // the application's port; any: every port (0 included)
  Protocol protocol = Protocol::kTcp;
  // Host-side mapping (route only): the host port for `port.first` (a range maps by
  // offset), and the host address that replaces the application's.
  uint16_t host_port = 0;                 // 0: same port
  std::optional<Cidr> host_address;       // a full-length prefix
  SourcePos pos;
  std::string text;
};

// Settings: [settings] gives the defaults, a profile may override each key.
struct Settings {
  OnUnreachable on_unreachable = OnUnreachable::kFail;
  uint32_t ring_size = kDefaultRingSize;  // bytes per direction, power of two
  LogLevel log_level = LogLevel::kWarn;
  std::string log = "stderr";             // "stderr" or an absolute path
  Resolve resolve = Resolve::kLocal;
  std::string socket;                     // empty: $XSOCK_SOCKET, else xsockd's default
  // log2(ring_size), what the control protocol's socket request carries.
  uint32_t ring_order() const;
};

// A user entry of `users`: a name or a uid.
struct UserMatch {
  std::optional<uid_t> uid;
  std::string name;
};

struct Profile {
  std::string name;
  std::vector<std::string> apps;  // fnmatch globs; with '/': whole executable path
  std::vector<UserMatch> users;   // empty: any user
  Action outgoing_default = Action::kBypass;
  Action incoming_default = Action::kBypass;
  std::vector<OutgoingRule> outgoing;
  std::vector<IncomingRule> incoming;
  Settings settings;  // [settings] with this profile's overrides applied
  SourcePos pos;      // its [[profile]] header
  SourcePos outgoing_default_pos;
  SourcePos incoming_default_pos;  // 0:0 when not written (bypass)
};

struct Config {
  std::string file;  // as given to the loader; used in explanations
  std::vector<Profile> profiles;  // in file order (selection tries them in this order)
  std::string default_profile;    // empty: none
  Settings settings;              // [settings] alone (for processes without a profile)

  const Profile* FindProfile(std::string_view name) const;
  size_t rule_count() const;  // outgoing + incoming rules of every profile
  // True if some profile's `users` has a name (not a uid): only then does selection need
  // the process's user name (CurrentProcess(true)).
  bool uses_user_names() const;
};

// The running process as profile selection sees it (shared/rules.h AppIdentity takes
// views of these): the executable from readlink("/proc/self/exe") (empty if unreadable),
// the effective uid, and, only when `need_user_name`, the user name from getpwuid_r —
// which may consult NSS (a file, or sssd/LDAP over a socket), so the library should ask
// for it only when Config::uses_user_names().
struct ProcessIdentity {
  std::string exe;
  uid_t uid = 0;
  std::string user;
};
ProcessIdentity CurrentProcess(bool need_user_name);

// Result of parsing: a config when there is no error, else every error found (a TOML
// syntax error stops at the first; validation errors are all collected).
struct ParseResult {
  std::optional<Config> config;
  std::vector<ConfigError> errors;
  // With a config: rules that can never decide anything because an earlier rule of the
  // same list matches everything they match ("... is never used: rule 1 ... matches
  // everything it does"). Not errors: the file means what it says.
  std::vector<ConfigError> warnings;
};

// Parses and validates `text`; `file` is the name used in errors. Never throws.
ParseResult ParseConfig(std::string_view text, std::string_view file);

// Reads `path` (with stdio, which calls no hooked function) and parses it. An unreadable
// file is one error without a position ("path: cannot read: ENOENT (No such file or
// directory)"); `*not_found` (when given) tells ENOENT apart.
ParseResult ParseConfigFile(const std::string& path, bool* not_found = nullptr);

// ParseConfigFile as a status: NotFound for a missing file, InvalidArgument with every
// error on its own line ("file:line:column: message") otherwise.
absl::StatusOr<Config> LoadConfig(const std::string& path);

// The file to read: $XSOCK_CONFIG when set and non-empty, else kDefaultConfigPath.
std::string ConfigPathFromEnv();

}  // namespace xsock::config
