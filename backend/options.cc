#include "backend/options.h"

#include "backend/metrics.h"
#include "shared/pvcalls.h"

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

namespace {

// The limit a --max-*/--memory-budget option sets, or nullptr for any other name.
uint64_t* LimitField(LimitOptions& l, std::string_view name) {
  if (name == "--max-sockets-per-client") return &l.max_sockets_per_client;
  if (name == "--max-ring-memory-per-client") return &l.max_ring_memory_per_client;
  if (name == "--max-pending-connects") return &l.max_pending_connects;
  if (name == "--max-request-rate") return &l.max_request_rate;
  if (name == "--memory-budget") return &l.memory_budget;
  return nullptr;
}

// A decimal count; with `bytes`, an optional K, M or G suffix (powers of 1024).
std::optional<uint64_t> ParseLimit(std::string_view text, bool bytes) {
  uint64_t scale = 1;
  if (bytes && !text.empty()) {
    const char last = text.back();
    if (last == 'K' || last == 'k') scale = uint64_t{1} << 10;
    if (last == 'M' || last == 'm') scale = uint64_t{1} << 20;
    if (last == 'G' || last == 'g') scale = uint64_t{1} << 30;
    if (scale != 1) text.remove_suffix(1);
  }
  uint64_t n = 0;
  if (text.empty() || text[0] == '-' || text[0] == '+' ||
      !absl::SimpleAtoi(absl::string_view(text.data(), text.size()), &n)) {
    return std::nullopt;
  }
  if (n > UINT64_MAX / scale) return std::nullopt;
  return n * scale;
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
    const bool takes_value =
        arg.name == "--socket" || arg.name == "--ring-order" || arg.name == "--log-level" ||
        arg.name == "--xen-ring-order" || arg.name == "--transport" || arg.name == "--front" ||
        arg.name == "--admin-socket" || arg.name == "--metrics" || arg.name == "--log-format" ||
        arg.name == "--config" || LimitField(cl.options.limits, arg.name) != nullptr;
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
    } else if (arg.name == "--front") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (*v == "xen") {
        cl.options.front = Front::kXen;
      } else {
        return Bad(fmt::format("option '--front': '{}' is not xen", *v));
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
    } else if (arg.name == "--config") {
      auto v = value();
      if (!v.ok()) return v.status();
      if (v->empty()) return Bad("option '--config': the path is empty");
      cl.options.config_path = *v;
      cl.options.config_given = true;
    } else if (uint64_t* field = LimitField(cl.options.limits, arg.name); field != nullptr) {
      auto v = value();
      if (!v.ok()) return v.status();
      const bool bytes =
          arg.name == "--max-ring-memory-per-client" || arg.name == "--memory-budget";
      const auto n = ParseLimit(*v, bytes);
      if (!n) {
        return Bad(fmt::format(
            "option '{}': '{}' is not {}", arg.name, *v,
            bytes ? "a byte count (suffix K, M or G allowed)" : "a non-negative integer"));
      }
      *field = *n;
    } else if (arg.name == "--check-config") {
      cl.action = Action::kCheckConfig;
    } else if (arg.name == "--xen-ring-order") {
      auto v = value();
      if (!v.ok()) return v.status();
      uint32_t order = 0;
      if (!absl::SimpleAtoi(*v, &order) || order < 1 || order > pvcalls::kMaxRingOrder) {
        return Bad(fmt::format("option '--xen-ring-order': '{}' is not an integer in 1..{}", *v,
                               pvcalls::kMaxRingOrder));
      }
      cl.options.xen_ring_order = order;
    } else if (arg.name == "--no-xen-ext") {
      cl.options.xen_extension = false;
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
  if (cl.options.front == Front::kXen && cl.options.transport == Transport::kXen) {
    return Bad("options '--front xen' (a domU) and '--transport xen' (dom0) exclude each other");
  }
  const bool xen_role = cl.options.front == Front::kXen || cl.options.transport == Transport::kXen;
  if (!cl.options.xen_extension && !xen_role) {
    return Bad("option '--no-xen-ext' needs --transport xen or --front xen");
  }
  if (cl.options.xen_ring_order != 0 && !xen_role) {
    return Bad("option '--xen-ring-order' needs --transport xen or --front xen");
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
    xsockd [--transport local|xen] [--front xen] [--no-xen-ext] [--xen-ring-order N]
           [--socket PATH] [--ring-order N]
           [--log-level LEVEL] [-q] [--log-format logfmt|json] [--admin-socket PATH|none]
           [--metrics [ADDR:]PORT [--metrics-allow-remote]] [--config FILE]
           [--max-sockets-per-client N] [--max-ring-memory-per-client BYTES]
           [--max-pending-connects N] [--max-request-rate N] [--memory-budget BYTES]
    xsockd --check-config [--config FILE]
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
    --front xen
        In a Xen domU: serve local libxsock.so applications as usual, but carry every
        routed socket's host side to dom0's xsockd --transport xen over PVCalls
        (docs/xen.md). Needs the toolstack's pvcalls device (xl.cfg pvcalls =
        [ "backend=0" ]); fails at start when not running on Xen.
    --no-xen-ext
        With --transport xen or --front xen: speak standard PVCalls version 1 only. By
        default dom0 offers, and the front asks for, the xsock extension (XenStore nodes
        feature-xsock-ext and xsock-ext; docs/xen.md): shutdown() reaching the remote
        peer, socket options applied on dom0's socket, real getsockname/getpeername,
        IPv6. It is used only when both sides announce it, so either side alone talks to
        any standard PVCalls peer.
    --xen-ring-order N
        With --transport xen: the largest PVCalls data ring offered (max-page-order), and
        with --front xen: the one asked for, 2^N grant pages per socket, half each way, N in
        1..9 (default 4: 32 KiB each way, the limit of Linux's pvcalls-back). A front gets
        the smaller of what it asks and what dom0 offers. Larger rings take fewer
        wake-ups per byte (bench/README.md, "xen/").
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
    --config FILE
        The access policy (default /etc/xsock/xsockd.conf): TOML, described in
        docs/xsockd-policy.md and examples/xsockd.conf. Per client (matched by uid, gid,
        executable, cgroup and network namespace, from the kernel), ordered allow/deny
        rules for connect destinations and bind addresses/ports, and rewrites of
        connect destinations. A denied connect gets ECONNREFUSED and a denied bind
        EACCES unless the file says otherwise; each denial is counted and logged
        (event=deny). Without the default file every call is allowed (a debug line);
        a FILE named here must exist. A file with any error (reported as
        FILE:LINE:COLUMN: message) stops the start with exit status 1.
    --check-config
        Parse the policy file (--config FILE, else the default) and exit without
        starting: 0 after printing FILE: ok (N client blocks, M rules) on standard
        output, 1 after printing every error as FILE:LINE:COLUMN: message on standard
        error. A missing default file is an error here too.

  Limits (0 means no limit; a refused call gets the errno the kernel would give for
  the same shortage, is counted in limit_refusals and logged as event=limit, at most
  once a second per client and kind; other clients are never affected):
    --max-sockets-per-client N
        Routed sockets one client (control connection) may hold, default 4096; the next
        socket() fails with EMFILE, as at RLIMIT_NOFILE. Sockets accepted by a client's
        listener count for that client.
    --max-ring-memory-per-client BYTES
        Ring memory (both rings and the state page of each socket) one client may hold,
        default 256M (suffix K, M or G); a socket that would go over fails with ENOBUFS.
    --max-pending-connects N
        Connects in progress per client, default 128; the next connect() fails with
        EAGAIN, as a connect that finds no free local resources.
    --max-request-rate N
        Control requests per second per client (a token bucket holding N), default 0
        (off); a request over the rate is answered with EAGAIN and the connection kept.
        Hello and release are never refused.
    --memory-budget BYTES
        Ring memory of all clients together, default 1G; a socket that would go over
        fails with ENOBUFS whichever client asks.

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
    /etc/xsock/xsockd.conf
        Default access policy (--config); re-read on SIGHUP.

LOGGING
    One line per notable event on standard error: ts=<UTC time> level=<level>
    event=<name> key=value... (or the same as JSON, --log-format json). Lines about a
    client or its sockets carry its identity: client, pid, uid, exe (client_connect also
    gid, netns, cgroup). Events: listening, client_connect, client_disconnect,
    protocol_error, socket_create, attach, connect_ok, connect_failed, eof, reset,
    send_failed, ring_corrupt, release, socket_closed, shutdown, deny (op, dest, rule),
    rewrite, policy_loaded, policy_none, policy_reload (debug adds more).

SIGNALS
    SIGTERM, SIGINT
        Close every client and socket, remove the socket file, exit 0.
    SIGHUP
        Re-read the policy file. A good file replaces the policy for every call from
        then on (established connections are untouched; log event=policy_reload ok=1);
        a bad or missing one is rejected and the old policy kept (warn
        event=policy_reload ok=0 error="..."). Counted as policy_reloads and
        policy_reload_errors in xsockctl stats.
    SIGPIPE
        Ignored (every send uses MSG_NOSIGNAL).

EXIT STATUS
    0   Stopped by SIGTERM or SIGINT, or --help / --version, or --check-config found
        the policy file good.
    1   Could not start: socket path unusable, another xsockd is listening, the
        policy file is bad (or missing when named with --config), or a system call
        failed (the message names it and the errno); --check-config: the file has
        errors or cannot be read.
    2   Invalid command line.

EXAMPLES
    Run with the defaults (as root, so that /run/xsock can be created):
        xsockd
    Run unprivileged on a private path with 64 KiB rings, quietly:
        XSOCK_SOCKET=$XDG_RUNTIME_DIR/xsock/xsockd.sock xsockd --ring-order 16 -q
    Check a policy file, then make the running xsockd use it:
        xsockd --check-config --config /etc/xsock/xsockd.conf && kill -HUP $(pidof xsockd)
    Stop it:
        kill -TERM $(pidof xsockd)
)",
                     kDefaultSocketPath, kMinRingOrder, kMaxRingOrder, kDefaultRingOrder,
                     (size_t{1} << kDefaultRingOrder) / 1024, "/run/xsock/xsockd-admin.sock",
                     kDefaultSocketPath, "/run/xsock/xsockd-admin.sock");
}

}  // namespace xsock::backend
