// xsock: the launcher and the configuration tools.
//
//   xsock run [--profile P] [--config F] [--socket PATH] [--] program args...
//   xsock check [--config F]
//   xsock explain [--config F] [--profile P | --app PATH] [--user U] [--bind] DEST
//
// Each subcommand's --help is the reference (docs/xsock.1 says the same in roff).
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "shared/config.h"
#include "shared/rules.h"
#include "tools/program_probe.h"

#ifndef XSOCK_LIBDIR_REL
#define XSOCK_LIBDIR_REL "lib"
#endif
#ifndef XSOCK_LIBDIR
#define XSOCK_LIBDIR "/usr/local/lib"
#endif

namespace {

using namespace xsock::config;
using xsock::tool::FindOnPath;
using xsock::tool::LaunchWarnings;

// Exit statuses.
constexpr int kOk = 0;
constexpr int kConfigError = 1;  // check, explain
constexpr int kUsage = 2;        // every subcommand; run: also a configuration error
constexpr int kRunConfigError = 2;
constexpr int kCannotExecute = 126;
constexpr int kNotFound = 127;

constexpr std::string_view kMainHelp = R"(NAME
    xsock - run programs with their sockets routed through xsockd, check and explain
    the xsock configuration

SYNOPSIS
    xsock run [--profile NAME] [--config FILE] [--socket PATH] [--] PROGRAM [ARG...]
    xsock check [--config FILE]
    xsock explain [--config FILE] [--profile NAME | --app PATH] [--user USER] [--bind] DEST
    xsock help [SUBCOMMAND]
    xsock SUBCOMMAND --help

DESCRIPTION
    xsock moves an unmodified program's TCP sockets into xsockd, the backend that owns
    the real network stack, by preloading libxsock.so. Which sockets of which programs
    are moved is said by the configuration file (/etc/xsock/xsock.conf, $XSOCK_CONFIG
    or --config; format: docs/config.md and the annotated examples/xsock.conf).

    run      validate the configuration, then execute PROGRAM with libxsock.so preloaded
    check    validate a configuration file and print every error with its position
    explain  print which profile and which rule decide a destination or a bind, and why

    Run "xsock help SUBCOMMAND" for the options, environment and exit status of each.

FILES
    /etc/xsock/xsock.conf    the default configuration file

SEE ALSO
    xsock(1), xsockd(8), docs/config.md
)";

constexpr std::string_view kRunHelp = R"(NAME
    xsock run - execute a program with its sockets routed as the configuration says

SYNOPSIS
    xsock run [--profile NAME] [--config FILE] [--socket PATH] [--] PROGRAM [ARG...]

DESCRIPTION
    Reads and validates the configuration first and refuses to start PROGRAM when it
    has an error (every error is printed, with file:line:column). Then resolves PROGRAM
    on $PATH like a shell, sets LD_PRELOAD to the absolute path of libxsock.so (ahead of
    an LD_PRELOAD already set), XSOCK_CONFIG to the absolute path of the configuration
    file, XSOCK_PROFILE when --profile is given and XSOCK_SOCKET when --socket is given,
    and executes PROGRAM with ARG... in place of xsock (same pid, same argv[0]).

    Before executing, it warns on stderr when the library cannot do its work:
      * PROGRAM is statically linked (no ELF program interpreter): LD_PRELOAD does not
        apply, nothing is routed;
      * PROGRAM does not link libc.so dynamically: calls it makes without libc are not
        seen;
      * PROGRAM is set-user-ID or set-group-ID (for the user running xsock): the dynamic
        loader ignores LD_PRELOAD (secure execution);
      * PROGRAM is a script: the library is loaded into its interpreter (which is
        checked in turn), and into whatever the script runs;
      * PROGRAM is neither an ELF file nor a script.
    The warnings do not stop xsock: the program runs, unrouted.

    Without --profile the library chooses the profile itself, by the program's
    executable and user (see xsock explain --app). When no configuration file exists at
    the default path and none was named, the program runs with the library and only
    $XSOCK_ROUTE (if set) routes anything.

OPTIONS
    --profile NAME   use the profile NAME (it must exist in the configuration)
    --config FILE    the configuration file (default: $XSOCK_CONFIG, else
                     /etc/xsock/xsock.conf)
    --socket PATH    xsockd's control socket (sets XSOCK_SOCKET; default: the
                     configuration's `socket`, else /run/xsock/xsockd.sock)
    --               end of options: what follows is PROGRAM and its arguments
    -h, --help       print this help

ENVIRONMENT
    XSOCK_CONFIG     configuration file when --config is not given
    XSOCK_LIBRARY    libxsock.so to preload, instead of looking next to xsock: in the
                     build tree (../libintercept/libxsock.so) or the installed libdir
    PATH             where PROGRAM is looked up when it has no '/'
    The program gets LD_PRELOAD, XSOCK_CONFIG, and XSOCK_PROFILE / XSOCK_SOCKET as
    described above; the rest of the environment is passed unchanged.

EXIT STATUS
    The program's own status once it runs (xsock is replaced by it).
    2    usage error, configuration error, unknown profile, libxsock.so not found
    126  PROGRAM was found but could not be executed
    127  PROGRAM was not found

EXAMPLES
    xsock run --profile guest -- curl https://example.com/
    xsock run --config ./xsock.conf --socket /tmp/xsockd.sock -- python3 -m http.server 80
    XSOCK_CONFIG=$HOME/xsock.conf xsock run nginx -g 'daemon off;'
)";

constexpr std::string_view kCheckHelp = R"(NAME
    xsock check - validate an xsock configuration file

SYNOPSIS
    xsock check [--config FILE]

DESCRIPTION
    Parses FILE (TOML) and checks it against the xsock schema: every key known, every
    value of the right type and range, every address, prefix, port range and profile
    name well formed, required keys present. Prints each error on its own line, on
    stderr, as
        FILE:LINE:COLUMN: CONTEXT: what is wrong and what was expected
    e.g.
        xsock.conf:12:9: outgoing rule 3 of profile 'web': 'port' must be 1-65535 or
        'A-B', got "70000"
    A TOML syntax error is reported alone (the parser stops there); validation errors
    are all reported. A rule that can never decide anything, because an earlier rule of
    the same list matches everything it matches, is a warning (same format, "warning: "
    before the message; it does not change the exit status). On success prints one line
    on stdout:
        ok: 3 profiles, 7 rules

OPTIONS
    --config FILE    the file to check (default: $XSOCK_CONFIG, else
                     /etc/xsock/xsock.conf)
    -h, --help       print this help

ENVIRONMENT
    XSOCK_CONFIG     the file to check when --config is not given

EXIT STATUS
    0    the configuration is valid
    1    it has errors, or it cannot be read
    2    usage error

EXAMPLES
    xsock check
    xsock check --config examples/xsock.conf
)";

constexpr std::string_view kExplainHelp = R"(NAME
    xsock explain - show which profile and rule decide a destination or a bind

SYNOPSIS
    xsock explain [--config FILE] [--profile NAME | --app PATH] [--user USER] DEST
    xsock explain [--config FILE] [--profile NAME | --app PATH] [--user USER] --bind ADDR

DESCRIPTION
    Chooses the profile as libxsock.so would in a process (by --profile; else by the
    executable --app and the user; else by $XSOCK_PROFILE; else default_profile) and
    prints why it was chosen, then the rule that decides DEST — its number in the
    profile, its file:line, its text — and the action, route or bypass. For a routed
    destination it also says what happens when xsockd is unreachable (on_unreachable).

    DEST is an outgoing connection: 10.1.2.3:443, [::1]:22 (IPv6 in brackets),
    [::ffff:10.1.2.3]:443 (decided as IPv4), or a host name such as db.internal:5432,
    which is decided by the host rules (names resolved through xsockd); the port may be
    left out (then rules with a port do not match a name).

    With --bind, ADDR is the local address of a bind(): 0.0.0.0:80, [::]:8080; the
    incoming rules decide it, and the host-side address (port mapping) is printed.

OPTIONS
    --config FILE    the configuration file (default: $XSOCK_CONFIG, else
                     /etc/xsock/xsock.conf)
    --profile NAME   explain for this profile
    --app PATH       explain for this executable (a name without '/' is looked up on
                     $PATH); the profiles' `apps` patterns are matched against it
    --user USER      a user name or uid for the profiles' `users` (default: you)
    --bind           DEST is a bind address, not a destination
    -h, --help       print this help

ENVIRONMENT
    XSOCK_CONFIG     the configuration file when --config is not given
    XSOCK_PROFILE    the profile when neither --profile nor --app is given

EXIT STATUS
    0    explained (whatever the action)
    1    the configuration has errors or cannot be read, or the profile does not exist
    2    usage error (including a DEST that is neither an address nor a host name)

EXAMPLES
    xsock explain --config examples/xsock.conf --profile guest 1.1.1.1:443
    xsock explain --app /usr/local/bin/billingd --user billing db-1.internal:5432
    xsock explain --profile web --bind 0.0.0.0:80
)";

void Print(std::FILE* f, std::string_view s) { std::fwrite(s.data(), 1, s.size(), f); }

int Usage(std::string_view sub, const std::string& why) {
  std::fprintf(stderr, "xsock%s%.*s: %s\n", sub.empty() ? "" : " ", static_cast<int>(sub.size()),
               sub.data(), why.c_str());
  std::fprintf(stderr, "Try 'xsock %.*s%s--help'.\n", static_cast<int>(sub.size()), sub.data(),
               sub.empty() ? "" : " ");
  return kUsage;
}

// A minimal option reader: --name VALUE, --name=VALUE, flags; stops at "--" or the first
// non-option (`positional` collects the rest when `stop_at_positional`).
struct Args {
  std::vector<std::string> positional;
  std::optional<std::string> config, profile, socket, app, user;
  bool bind = false;
  bool help = false;
};

bool ParseArgs(int argc, char** argv, int first, std::string_view sub,
               std::initializer_list<std::string_view> allowed, bool stop_at_positional,
               Args& out, int& status) {
  const auto allowed_opt = [&](std::string_view name) {
    for (std::string_view a : allowed) {
      if (a == name) return true;
    }
    return false;
  };
  for (int i = first; i < argc; ++i) {
    std::string_view a = argv[i];
    if (a == "--") {
      for (++i; i < argc; ++i) out.positional.emplace_back(argv[i]);
      break;
    }
    if (a == "-h" || a == "--help") {
      out.help = true;
      continue;
    }
    if (a.size() < 2 || a.substr(0, 2) != "--") {
      if (a.size() > 1 && a[0] == '-') {
        status = Usage(sub, "unknown option '" + std::string(a) + "'");
        return false;
      }
      out.positional.emplace_back(a);
      if (stop_at_positional) {
        for (++i; i < argc; ++i) out.positional.emplace_back(argv[i]);
        break;
      }
      continue;
    }
    std::string name(a.substr(2));
    std::optional<std::string> value;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name.resize(eq);
    }
    if (!allowed_opt(name)) {
      status = Usage(sub, "unknown option '--" + name + "'");
      return false;
    }
    if (name == "bind") {
      if (value) {
        status = Usage(sub, "--bind takes no value");
        return false;
      }
      out.bind = true;
      continue;
    }
    if (!value) {
      if (i + 1 >= argc) {
        status = Usage(sub, "--" + name + " needs a value");
        return false;
      }
      value = argv[++i];
    }
    if (value->empty()) {
      status = Usage(sub, "--" + name + " needs a non-empty value");
      return false;
    }
    std::optional<std::string>* slot = name == "config"    ? &out.config
                                       : name == "profile" ? &out.profile
                                       : name == "socket"  ? &out.socket
                                       : name == "app"     ? &out.app
                                                           : &out.user;
    *slot = *value;
  }
  return true;
}

std::string ConfigPath(const Args& a, bool* explicit_path) {
  if (a.config) {
    if (explicit_path != nullptr) *explicit_path = true;
    return *a.config;
  }
  const char* env = std::getenv("XSOCK_CONFIG");
  if (explicit_path != nullptr) *explicit_path = env != nullptr && env[0] != '\0';
  return ConfigPathFromEnv();
}

void PrintErrors(const ParseResult& r) {
  for (const ConfigError& e : r.errors) std::fprintf(stderr, "%s\n", e.ToString().c_str());
}

std::string Plural(size_t n, std::string_view word) {
  return std::to_string(n) + " " + std::string(word) + (n == 1 ? "" : "s");
}

std::string ProfileList(const Config& c) {
  std::string out;
  for (const Profile& p : c.profiles) out += (out.empty() ? "" : ", ") + p.name;
  return out.empty() ? "there are no profiles" : "profiles: " + out;
}

// ---- check ----

int Check(int argc, char** argv) {
  Args a;
  int status = 0;
  if (!ParseArgs(argc, argv, 2, "check", {"config"}, false, a, status)) return status;
  if (a.help) {
    Print(stdout, kCheckHelp);
    return kOk;
  }
  if (!a.positional.empty()) return Usage("check", "unexpected argument '" + a.positional[0] + "'");
  const ParseResult r = ParseConfigFile(ConfigPath(a, nullptr));
  if (!r.config) {
    PrintErrors(r);
    return kConfigError;
  }
  for (const ConfigError& w : r.warnings) {
    std::fprintf(stderr, "%s\n", ConfigError{w.file, w.pos, "warning: " + w.message}.ToString().c_str());
  }
  std::printf("ok: %s, %s%s\n", Plural(r.config->profiles.size(), "profile").c_str(),
              Plural(r.config->rule_count(), "rule").c_str(),
              r.warnings.empty() ? "" : (", " + Plural(r.warnings.size(), "warning")).c_str());
  return kOk;
}

// ---- explain ----

std::string UserName(uid_t uid) {
  char buf[4096];
  passwd pw;
  passwd* result = nullptr;
  if (getpwuid_r(uid, &pw, buf, sizeof(buf), &result) == 0 && result != nullptr) {
    return pw.pw_name;
  }
  return "";
}

std::optional<uid_t> UserUid(const std::string& user, std::string& name) {
  if (!user.empty() && user.find_first_not_of("0123456789") == std::string::npos) {
    char* end = nullptr;
    errno = 0;
    const unsigned long v = std::strtoul(user.c_str(), &end, 10);
    if (errno != 0 || v >= UINT32_MAX) return std::nullopt;
    name = UserName(static_cast<uid_t>(v));
    return static_cast<uid_t>(v);
  }
  char buf[4096];
  passwd pw;
  passwd* result = nullptr;
  name = user;
  if (getpwnam_r(user.c_str(), &pw, buf, sizeof(buf), &result) == 0 && result != nullptr) {
    return pw.pw_uid;
  }
  return UINT32_MAX;  // an unknown name: matches `users` entries by name only
}

bool ValidHostName(std::string_view h) {
  if (h.empty() || h.size() > 254) return false;
  for (const char c : h) {
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          c == '.' || c == '-' || c == '_')) {
      return false;
    }
  }
  return true;
}

std::string Unreachable(const Settings& s) {
  return s.on_unreachable == OnUnreachable::kFail
             ? "fail (connect gives ECONNREFUSED)"
             : "fallback (the kernel's own socket call)";
}

int Explain(int argc, char** argv) {
  Args a;
  int status = 0;
  if (!ParseArgs(argc, argv, 2, "explain", {"config", "profile", "app", "user", "bind"}, false, a,
                 status)) {
    return status;
  }
  if (a.help) {
    Print(stdout, kExplainHelp);
    return kOk;
  }
  if (a.positional.size() != 1) {
    return Usage("explain", a.positional.empty() ? "missing DEST"
                                                 : "one DEST only, got '" + a.positional[1] + "'");
  }
  if (a.profile && a.app) return Usage("explain", "--profile and --app exclude each other");
  const std::string dest = a.positional[0];

  // What DEST is, before reading the configuration: a usage error is reported as such.
  std::optional<Endpoint> ep = ParseEndpoint(dest, a.bind);
  std::string host;
  uint16_t host_port = 0;
  if (!ep) {
    if (a.bind) {
      return Usage("explain", "--bind needs an address with a port, like 0.0.0.0:80 or [::]:80, "
                              "got '" + dest + "'");
    }
    std::string_view h = dest;
    if (const size_t colon = h.rfind(':'); colon != std::string_view::npos) {
      const std::string port(h.substr(colon + 1));
      char* end = nullptr;
      const long v = std::strtol(port.c_str(), &end, 10);
      if (port.empty() || *end != '\0' || v < 0 || v > 65535 ||
          port.find_first_not_of("0123456789") != std::string::npos) {
        return Usage("explain", "DEST port must be 0-65535, got '" + dest + "'");
      }
      host_port = static_cast<uint16_t>(v);
      h = h.substr(0, colon);
    }
    if (!ValidHostName(h) || h.find(':') != std::string_view::npos) {
      return Usage("explain", "DEST must be ADDRESS:PORT ([IPv6]:PORT) or HOST[:PORT], got '" +
                                  dest + "'");
    }
    host = std::string(h);
  } else if (!a.bind && dest.find(':') == std::string::npos) {
    return Usage("explain", "DEST needs a port: '" + dest + ":PORT'");
  }

  const std::string path = ConfigPath(a, nullptr);
  const ParseResult r = ParseConfigFile(path);
  if (!r.config) {
    PrintErrors(r);
    return kConfigError;
  }
  const Config& c = *r.config;

  // The profile.
  ProfileChoice choice;
  std::string why;
  std::string exe;
  std::string user_name;
  uid_t uid = geteuid();
  if (a.user) {
    const std::optional<uid_t> u = UserUid(*a.user, user_name);
    if (!u) return Usage("explain", "--user must be a user name or uid, got '" + *a.user + "'");
    uid = *u;
  } else {
    user_name = UserName(uid);
  }
  const char* env_profile = std::getenv("XSOCK_PROFILE");
  std::string by_name = a.profile ? *a.profile
                        : (!a.app && env_profile != nullptr) ? env_profile
                                                             : "";
  if (!by_name.empty()) {
    choice = SelectProfile(c, {}, by_name);
    if (choice.profile == nullptr) {
      std::fprintf(stderr, "xsock explain: no profile '%s' in %s (%s)\n", by_name.c_str(),
                   path.c_str(), ProfileList(c).c_str());
      return kConfigError;
    }
    why = a.profile ? "selected by --profile" : "selected by XSOCK_PROFILE";
  } else if (a.app) {
    exe = FindOnPath(*a.app);
    if (exe.empty()) exe = *a.app;
    choice = SelectProfile(c, {exe, uid, user_name}, "");
    const std::string who = user_name.empty() ? "uid " + std::to_string(uid)
                                              : "user " + user_name;
    if (choice.by == SelectedBy::kApp) {
      why = "the first profile whose apps and users match " + exe + " run by " + who;
      if (choice.app_pattern != nullptr) why += "; apps entry \"" + *choice.app_pattern + "\"";
      if (choice.user != nullptr) {
        why += "; users entry " + (choice.user->uid ? std::to_string(*choice.user->uid)
                                                    : "\"" + choice.user->name + "\"");
      }
    } else if (choice.by == SelectedBy::kDefaultProfile) {
      why = "no profile matches " + exe + " run by " + who + "; default_profile";
    } else {
      why = "no profile matches " + exe + " run by " + who + " and there is no default_profile";
    }
  } else {
    choice.profile = c.default_profile.empty() ? nullptr : c.FindProfile(c.default_profile);
    choice.by = choice.profile != nullptr ? SelectedBy::kDefaultProfile : SelectedBy::kNone;
    why = choice.profile != nullptr ? "no --profile or --app given; default_profile"
                                    : "no --profile or --app given and there is no default_profile";
  }
  std::printf("config: %s\n", path.c_str());
  if (choice.profile == nullptr) {
    std::printf("profile: none (%s)\n", why.c_str());
    std::printf("action: bypass (no profile: the configuration routes nothing for this "
                "program; XSOCK_ROUTE still applies)\n");
    return kOk;
  }
  const Profile& p = *choice.profile;
  std::printf("profile: %s (%s:%u; %s)\n", p.name.c_str(), c.file.c_str(), p.pos.line,
              why.c_str());

  if (a.bind) {
    const BindDecision d = DecideBind(p, *ep);
    std::printf("bind: %s\n", EndpointToString(*ep).c_str());
    std::printf("rule: %s\n", DescribeDecision(c, p, d).c_str());
    std::printf("action: %s\n", std::string(ActionName(d.action)).c_str());
    if (d.routed()) {
      std::printf("host side: %s%s\n", EndpointToString(d.host).c_str(),
                  d.mapped ? " (mapped)" : " (the same address)");
    }
    return kOk;
  }
  Decision d;
  if (ep) {
    d = DecideConnect(p, *ep);
    std::printf("destination: %s%s\n", EndpointToString(*ep).c_str(),
                ep->v4_mapped ? " (IPv4-mapped: decided as IPv4)" : "");
  } else {
    d = DecideHost(p, host, host_port);
    std::printf("destination: host name %s%s%s\n", host.c_str(), host_port != 0 ? " port " : "",
                host_port != 0 ? std::to_string(host_port).c_str() : "");
  }
  std::printf("rule: %s\n", DescribeDecision(c, p, d).c_str());
  std::printf("action: %s\n", std::string(ActionName(d.action)).c_str());
  if (d.routed()) std::printf("if xsockd is unreachable: %s\n", Unreachable(p.settings).c_str());
  if (!ep && p.settings.resolve == Resolve::kLocal) {
    std::printf("note: profile '%s' resolves names locally (resolve = \"local\"): host rules "
                "apply only to names resolved through xsockd; the addresses the local resolver "
                "returns are decided by the address rules\n",
                p.name.c_str());
  }
  return kOk;
}

// ---- run ----

std::string SelfDir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  std::string path(buf, static_cast<size_t>(n));
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "" : path.substr(0, slash);
}

bool IsFile(const std::string& p) {
  struct stat st;
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The canonical absolute path (no "..", no symlinks), or `p` if it has none.
std::string Absolute(const std::string& p) {
  char* real = realpath(p.c_str(), nullptr);
  if (real == nullptr) return p;
  std::string out = real;
  std::free(real);
  return out;
}

// libxsock.so: $XSOCK_LIBRARY, else next to this binary (build tree, then installed
// layouts), else the configured libdir. `tried` lists what was looked at.
std::string FindLibrary(std::string& tried, std::string& error) {
  if (const char* env = std::getenv("XSOCK_LIBRARY"); env != nullptr && env[0] != '\0') {
    if (!IsFile(env)) {
      error = std::string("XSOCK_LIBRARY names no file: ") + env;
      return "";
    }
    return Absolute(env);
  }
  const std::string dir = SelfDir();
  std::vector<std::string> candidates;
  if (!dir.empty()) {
    candidates.push_back(dir + "/../libintercept/libxsock.so");  // build/tools/xsock
    candidates.push_back(dir + "/../" XSOCK_LIBDIR_REL "/libxsock.so");
    candidates.push_back(dir + "/../lib/libxsock.so");
  }
  candidates.push_back(XSOCK_LIBDIR "/libxsock.so");
  for (const std::string& c : candidates) {
    if (!tried.empty()) tried += ", ";
    tried += c;
    if (IsFile(c)) return Absolute(c);
  }
  error = "cannot find libxsock.so (looked at " + tried + "); set XSOCK_LIBRARY";
  return "";
}

int Run(int argc, char** argv) {
  Args a;
  int status = 0;
  if (!ParseArgs(argc, argv, 2, "run", {"config", "profile", "socket"}, true, a, status)) {
    return status;
  }
  if (a.help) {
    Print(stdout, kRunHelp);
    return kOk;
  }
  if (a.positional.empty()) return Usage("run", "missing PROGRAM");
  const std::string& program = a.positional[0];

  bool explicit_path = false;
  const std::string path = ConfigPath(a, &explicit_path);
  bool not_found = false;
  const ParseResult r = ParseConfigFile(path, &not_found);
  const bool have_config = r.config.has_value();
  if (!have_config && !(not_found && !explicit_path)) {
    PrintErrors(r);
    std::fprintf(stderr, "xsock run: not starting %s: the configuration has errors\n",
                 program.c_str());
    return kRunConfigError;
  }
  if (a.profile) {
    if (!have_config) {
      std::fprintf(stderr, "xsock run: --profile needs a configuration file, and %s does not "
                           "exist\n", path.c_str());
      return kRunConfigError;
    }
    if (r.config->FindProfile(*a.profile) == nullptr) {
      std::fprintf(stderr, "xsock run: no profile '%s' in %s (%s)\n", a.profile->c_str(),
                   path.c_str(), ProfileList(*r.config).c_str());
      return kRunConfigError;
    }
  }
  if (!have_config) {
    std::fprintf(stderr, "xsock run: note: no %s: only XSOCK_ROUTE (%s) decides what is "
                         "routed\n",
                 path.c_str(), std::getenv("XSOCK_ROUTE") != nullptr ? "set" : "not set");
  }

  const std::string resolved = FindOnPath(program);
  if (resolved.empty() || !IsFile(resolved)) {
    std::fprintf(stderr, "xsock run: %s: %s\n", program.c_str(),
                 program.find('/') == std::string::npos ? "not found in PATH"
                                                        : "no such file");
    return kNotFound;
  }
  std::string tried, error;
  const std::string lib = FindLibrary(tried, error);
  if (lib.empty()) {
    std::fprintf(stderr, "xsock run: %s\n", error.c_str());
    return kRunConfigError;
  }
  for (const std::string& w : LaunchWarnings(resolved)) {
    std::fprintf(stderr, "xsock run: warning: %s\n", w.c_str());
  }

  std::string preload = lib;
  if (const char* old = std::getenv("LD_PRELOAD"); old != nullptr && old[0] != '\0') {
    if (std::string_view(old).find(lib) == std::string_view::npos) {
      preload += " ";
      preload += old;
    } else {
      preload = old;
    }
  }
  setenv("LD_PRELOAD", preload.c_str(), 1);
  if (have_config) setenv("XSOCK_CONFIG", Absolute(path).c_str(), 1);
  if (a.profile) setenv("XSOCK_PROFILE", a.profile->c_str(), 1);
  if (a.socket) setenv("XSOCK_SOCKET", a.socket->c_str(), 1);

  std::vector<char*> args;
  for (std::string& s : a.positional) args.push_back(s.data());
  args.push_back(nullptr);
  execv(resolved.c_str(), args.data());
  const int err = errno;
  const char* name = strerrorname_np(err);
  std::fprintf(stderr, "xsock run: cannot execute %s: %s (%s)\n", resolved.c_str(),
               name != nullptr ? name : "?", std::strerror(err));
  return err == ENOENT ? kNotFound : kCannotExecute;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    Print(stderr, "usage: xsock run|check|explain [OPTIONS] ...\nTry 'xsock --help'.\n");
    return kUsage;
  }
  const std::string_view sub = argv[1];
  if (sub == "run") return Run(argc, argv);
  if (sub == "check") return Check(argc, argv);
  if (sub == "explain") return Explain(argc, argv);
  if (sub == "-h" || sub == "--help" || sub == "help") {
    const std::string_view topic = argc > 2 ? argv[2] : "";
    if (topic.empty()) {
      Print(stdout, kMainHelp);
    } else if (topic == "run") {
      Print(stdout, kRunHelp);
    } else if (topic == "check") {
      Print(stdout, kCheckHelp);
    } else if (topic == "explain") {
      Print(stdout, kExplainHelp);
    } else {
      return Usage("", "no help on '" + std::string(topic) + "'");
    }
    return kOk;
  }
  return Usage("", "unknown subcommand '" + std::string(sub) + "'");
}
