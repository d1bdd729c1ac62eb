#include "backend/options.h"

#include "backend/metrics.h"

#include "absl/strings/numbers.h"
#include "fmt/format.h"

namespace xsock::backend {
namespace {

absl::Status Bad(std::string message) { return absl::InvalidArgumentError(message); }

// Splits "--name=value" into name and value; other arguments have no inline value.
struct Arg {
  std::string name;
  std::optional<std::string> value;
};

Arg SplitArg(const std::string& a) {
  if (a.rfind("--", 0) == 0) {
    const size_t eq = a.find('=');
    if (eq != std::string::npos) return {a.substr(0, eq), a.substr(eq + 1)};
  }
  return {a, std::nullopt};
}

}  // namespace

absl::StatusOr<CommandLine> ParseCommandLine(const std::vector<std::string>& args,
                                             const char* env_socket) {
  CommandLine cl;
  if (env_socket != nullptr && env_socket[0] != '\0') cl.options.socket_path = env_socket;
  for (size_t i = 0; i < args.size(); ++i) {
    const Arg arg = SplitArg(args[i]);
    // Takes the option's value, inline or from the next argument.
    auto value = [&]() -> absl::StatusOr<std::string> {
      if (arg.value) return *arg.value;
      if (i + 1 >= args.size()) return Bad(fmt::format("option '{}' needs a value", arg.name));
      return args[++i];
    };
    const bool takes_value = arg.name == "--socket" || arg.name == "--ring-order" ||
                             arg.name == "--log-level" || arg.name == "--transport" ||
                             arg.name == "--admin-socket" || arg.name == "--metrics" ||
                             arg.name == "--log-format";
    if (!takes_value && arg.value) {
      return Bad(fmt::format("option '{}' takes no value", arg.name));
    }
    if (arg.name == "-h" || arg.name == "--help") {
      cl.action = Action::kHelp;
      return cl;
    }
    if (arg.name == "-V" || arg.name == "--version") {
      cl.action = Action::kVersion;
      return cl;
    }
    if (arg.name == "--socket") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (v->empty()) return Bad("option '--socket': the path is empty");
      cl.options.socket_path = *v;
    } else if (arg.name == "--transport") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (*v == "local") {
        cl.options.transport = Transport::kLocal;
      } else if (*v == "xen") {
        cl.options.transport = Transport::kXen;
      } else {
        return Bad(fmt::format("option '--transport': '{}' is not one of local, xen", *v));
      }
    } else if (arg.name == "--ring-order") {
      auto v = value();
      if (!v.ok()) return v.status();
      uint32_t order = 0;
      if (!absl::SimpleAtoi(*v, &order) || order < kMinRingOrder || order > kMaxRingOrder) {
        return Bad(fmt::format("option '--ring-order': '{}' is not an integer in {}..{}", *v,
                               kMinRingOrder, kMaxRingOrder));
      }
      cl.options.ring_order = order;
    } else if (arg.name == "--log-level") {
      auto v = value();
      if (!v.ok()) return v.status();
      const auto level = ParseLogLevel(*v);
      if (!level) {
        return Bad(
            fmt::format("option '--log-level': '{}' is not one of error, warn, info, debug", *v));
      }
      cl.options.log_level = *level;
    } else if (arg.name == "--log-format") {
      auto v = value();
      if (!v.ok()) return v.status();
      const auto format = ParseLogFormat(*v);
      if (!format) {
        return Bad(fmt::format("option '--log-format': '{}' is not one of logfmt, json", *v));
      }
      cl.options.log_format = *format;
    } else if (arg.name == "--admin-socket") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (v->empty()) return Bad("option '--admin-socket': the path is empty (use 'none')");
      cl.options.admin_socket = *v == "none" ? "" : *v;
    } else if (arg.name == "--metrics") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (v->empty()) return Bad("option '--metrics': the address is empty");
      cl.options.metrics = *v;
    } else if (arg.name == "--metrics-allow-remote") {
      cl.options.metrics_allow_remote = true;
    } else if (arg.name == "-q" || arg.name == "--quiet") {
      cl.options.log_level = LogLevel::kError;
    } else if (!arg.name.empty() && arg.name[0] == '-') {
      return Bad(fmt::format("unknown option '{}'", arg.name));
    } else {
      return Bad(fmt::format("unexpected argument '{}'", arg.name));
    }
  }
  if (!cl.options.metrics.empty()) {
    // Checked here so that a remote address without --metrics-allow-remote is a usage
    // error (exit 2) before anything is opened.
    auto addr = ParseMetricsAddress(cl.options.metrics, cl.options.metrics_allow_remote);
    if (!addr.ok()) return Bad(std::string(addr.status().message()));
  } else if (cl.options.metrics_allow_remote) {
    return Bad("option '--metrics-allow-remote' needs --metrics");
  }
  return cl;
}

std::string AdminSocketPath(const DaemonOptions& options) {
  if (options.admin_socket) return *options.admin_socket;
  const size_t slash = options.socket_path.rfind('/');
  const std::string dir =
      slash == std::string::npos ? "." : options.socket_path.substr(0, slash == 0 ? 1 : slash);
  return dir == "/" ? "/xsockd-admin.sock" : dir + "/xsockd-admin.sock";
}

std::string VersionText() {
  return fmt::format("xsockd {} (control protocol {}, socket page {})\n", XSOCK_VERSION, 1,
                     kSocketPageVersion);
}

std::string HelpText() {
  return fmt::format(R"(NAME
    xsockd - xsock backend daemon: performs routed applications' socket calls on the
    host network stack (local transport)

SYNOPSIS
    xsockd [--transport local|xen] [--socket PATH] [--ring-order N] [--log-level LEVEL] [-q]
           [--log-format logfmt|json] [--admin-socket PATH|none]
           [--metrics [ADDR:]PORT [--metrics-allow-remote]]
    xsockd --help | --version

DESCRIPTION
    Applications run with LD_PRELOAD=libxsock.so hand their routed TCP sockets to
    xsockd. Each process opens one control connection to xsockd's AF_UNIX
    SOCK_SEQPACKET socket; for every routed socket xsockd creates a host TCP socket,
    a channel (an AF_UNIX stream pair whose other end becomes the application's
    descriptor) and a sealed memfd holding two byte rings, and moves bytes between the
    rings and the host socket with a single copy. Connects are asynchronous: one slow
    peer never stalls other clients.

    xsockd trusts no client: a malformed control message, or one with the wrong number
    of descriptors, disconnects that client only; an impossible ring index resets that
    socket only. Socket ids are usable only by the connection that created or attached
    them (EBADF otherwise). Only a whitelist of socket options reaches host sockets.

    The socket file is created mode 0666 (any local user may connect); its directory is
    created mode 0755 if missing and must not be a symbolic link, must be owned by the
    daemon's user or root, and must not be writable by others unless sticky. A socket
    file nothing answers on is replaced; if another xsockd answers, xsockd exits 1.

OPTIONS
    --transport local|xen
        local (default): serve libxsock.so applications on this host. xen: serve Xen
        guests' PVCalls frontends from dom0 (docs/xen.md); fails at start when not
        running on Xen or built without libxen-dev.
    --socket PATH
        Listen on PATH (default {}). Overrides XSOCK_SOCKET.
    --ring-order N
        Each ring of a socket whose request leaves the size to xsockd holds 2^N
        bytes, N in {}..{} (default {}: {} KiB).
    --log-level LEVEL
        error, warn, info (default) or debug.
    -q, --quiet
        Same as --log-level error.
    --log-format logfmt|json
        logfmt (default): key=value pairs; json: one JSON object per line with the same
        keys (numbers unquoted).
    --admin-socket PATH|none
        The admin socket xsockctl(1) talks to (docs/xsockctl.md): AF_UNIX stream, mode
        0600, answered only for root and xsockd's own user. Default: xsockd-admin.sock
        in the control socket's directory ({}).
        none: no admin socket.
    --metrics [ADDR:]PORT
        Serve Prometheus metrics (text format, HTTP/1.0 GET /metrics) on ADDR:PORT; ADDR
        is a numeric IPv4 address or [IPv6], 127.0.0.1 when only a port is given. A
        non-loopback ADDR is refused unless --metrics-allow-remote is given too (the
        metrics name clients' executables and have no authentication). Off by default.
    --metrics-allow-remote
        Allow --metrics on an address that is not loopback.
    -h, --help
        Show this text and exit.
    -V, --version
        Show the version and exit.

ENVIRONMENT
    XSOCK_SOCKET
        Socket path used when --socket is not given.

FILES
    {}
        Default control socket.
    {}
        Default admin socket.

LOGGING
    One line per notable event on standard error: ts=<UTC time> level=<level>
    event=<name> key=value... (or the same as JSON, --log-format json). Lines about a
    client or its sockets carry its identity: client, pid, uid, exe (client_connect also
    gid, netns, cgroup). Events: listening, client_connect, client_disconnect,
    protocol_error, socket_create, attach, connect_ok, connect_failed, eof, reset,
    send_failed, ring_corrupt, release, socket_closed, shutdown (debug adds more).

SIGNALS
    SIGTERM, SIGINT
        Close every client and socket, remove the socket file, exit 0.
    SIGPIPE
        Ignored (every send uses MSG_NOSIGNAL).

EXIT STATUS
    0   Stopped by SIGTERM or SIGINT, or --help / --version.
    1   Could not start: socket path unusable, another xsockd is listening, or a
        system call failed (the message names it and the errno).
    2   Invalid command line.

EXAMPLES
    Run with the defaults (as root, so that /run/xsock can be created):
        xsockd
    Run unprivileged on a private path with 64 KiB rings, quietly:
        XSOCK_SOCKET=$XDG_RUNTIME_DIR/xsock/xsockd.sock xsockd --ring-order 16 -q
    Stop it:
        kill -TERM $(pidof xsockd)
)",
                     kDefaultSocketPath, kMinRingOrder, kMaxRingOrder, kDefaultRingOrder,
                     (size_t{1} << kDefaultRingOrder) / 1024, "/run/xsock/xsockd-admin.sock",
                     kDefaultSocketPath, "/run/xsock/xsockd-admin.sock");
}

}  // namespace xsock::backend
