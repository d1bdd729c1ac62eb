// xsockctl: asks a running xsockd, over its admin socket, what it carries — clients with
// their kernel identity, routed sockets, counters — and prints it as aligned columns or as
// JSON. The protocol is one request line, one reply (docs/xsockctl.md).
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "fmt/core.h"

namespace {

constexpr const char* kDefaultAdminSocket = "/run/xsock/xsockd-admin.sock";

// Exit statuses (also in --help and docs/xsockctl.md).
constexpr int kExitOk = 0;
constexpr int kExitUnreachable = 1;
constexpr int kExitUsage = 2;
constexpr int kExitRefused = 3;
constexpr int kExitPermission = 4;

struct Failure {
  int status;
  std::string message;
};

std::string HelpText() {
  return fmt::format(R"(NAME
    xsockctl - show what a running xsockd carries: clients, sockets, counters

SYNOPSIS
    xsockctl [--admin-socket PATH] [--json] [--timeout S] clients
    xsockctl [--admin-socket PATH] [--json] [--timeout S] sockets [--client ID]
    xsockctl [--admin-socket PATH] [--json] [--timeout S] stats
    xsockctl --help

DESCRIPTION
    xsockctl talks to xsockd's admin socket (an AF_UNIX stream socket, mode 0600:
    root and xsockd's own user only) and prints one listing, like ss(8): aligned
    columns with a header line, or with --json the daemon's JSON for scripts.
    Nothing is changed in xsockd; every listing is a snapshot taken by its event loop.

COMMANDS
    clients
        One line per control connection (one per application process): CLIENT id,
        PID, UID, GID, EXE, NETNS (inode of its network namespace), CGROUP — all read
        by xsockd from the kernel (SO_PEERCRED, /proc) when it connected, never from
        what the client says — then SOCKETS (routed sockets now), SOCKETS_CLOSED,
        TO_HOST and FROM_HOST (bytes, closed sockets included), DENIALS (calls refused
        by policy), SINCE (UTC) and AGE_S (seconds).
    sockets [--client ID]
        One line per routed socket: CLIENT, SOCKET id, KIND (stream, accepted,
        listener), STATE (idle, connecting, connected, failed, closed, listening),
        LOCAL and REMOTE address of the host socket (REMOTE of a connecting socket is
        its destination; - when none), TO_HOST, FROM_HOST (bytes), IN_FILL (bytes
        waiting for the application), OUT_FILL (bytes waiting for the host), RING_SIZE
        and AGE_S. --client ID keeps only that client's sockets.
    stats
        xsockd's counters, one per line: clients and sockets (now, total), connects
        (ok, failed), bytes each way, name lookups (requested, refused, timed out) and
        denials.

OPTIONS
    --admin-socket PATH
        The admin socket. Default: $XSOCK_ADMIN_SOCKET; else xsockd-admin.sock in the
        directory of $XSOCK_SOCKET; else {}.
    --json
        Print JSON: an array of objects (clients, sockets; keys are the column names
        in lower case) or one object (stats). Numbers are JSON numbers.
    --client ID
        sockets only: the sockets of client ID.
    --timeout S
        Give up when xsockd has not answered within S seconds (1..3600, default 5).
    -h, --help
        Show this text and exit.

EXIT STATUS
    0   The listing was printed.
    1   xsockd could not be reached: no admin socket at the path (xsockd not running,
        or started with --admin-socket none), nothing listening, or no answer in time.
    2   Invalid command line.
    3   xsockd answered with an error (the message is printed).
    4   Permission denied: the admin socket is root-only by default.

EXAMPLES
    xsockctl clients
    xsockctl sockets --client 3
    xsockctl --json stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["sockets_now"])'
)",
                     kDefaultAdminSocket);
}

std::string DefaultPath() {
  if (const char* p = std::getenv("XSOCK_ADMIN_SOCKET"); p != nullptr && *p != '\0') return p;
  if (const char* p = std::getenv("XSOCK_SOCKET"); p != nullptr && *p != '\0') {
    // The daemon's own default: xsockd-admin.sock beside the control socket.
    const std::string s = p;
    const size_t slash = s.rfind('/');
    if (slash == std::string::npos) return "xsockd-admin.sock";
    return s.substr(0, slash + 1) + "xsockd-admin.sock";
  }
  return kDefaultAdminSocket;
}

std::string ErrnoText(int err) {
  const char* name = strerrorname_np(err);
  return fmt::format("{} ({})", name != nullptr ? name : std::to_string(err), std::strerror(err));
}

// Sends the request line and returns everything xsockd answers (it closes when done).
std::string Ask(const std::string& path, const std::string& request, int timeout_s) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) {
    throw Failure{kExitUsage, fmt::format("admin socket path '{}' is too long", path)};
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Failure{kExitUnreachable, fmt::format("socket: {}", ErrnoText(errno))};
  struct Closer {
    int fd;
    ~Closer() { close(fd); }
  } closer{fd};
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    if (err == EACCES || err == EPERM) {
      throw Failure{kExitPermission,
                    fmt::format("permission denied on {}: the admin socket serves root and "
                                "xsockd's own user only",
                                path)};
    }
    if (err == ENOENT || err == ECONNREFUSED) {
      throw Failure{kExitUnreachable,
                    fmt::format("xsockd is not running (no admin socket answers at {}: {})", path,
                                ErrnoText(err))};
    }
    throw Failure{kExitUnreachable, fmt::format("cannot connect to {}: {}", path, ErrnoText(err))};
  }
  const std::string line = request + "\n";
  if (send(fd, line.data(), line.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(line.size())) {
    throw Failure{kExitUnreachable, fmt::format("sending to {}: {}", path, ErrnoText(errno))};
  }
  std::string reply;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    if (left <= 0) {
      throw Failure{kExitUnreachable,
                    fmt::format("xsockd did not answer within {} s on {}", timeout_s, path)};
    }
    pollfd p{fd, POLLIN, 0};
    const int r = poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno != EINTR) throw Failure{kExitUnreachable, ErrnoText(errno)};
    if (r <= 0) continue;
    char buf[65536];
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw Failure{kExitUnreachable, fmt::format("reading from {}: {}", path, ErrnoText(errno))};
    }
    if (n == 0) break;
    reply.append(buf, static_cast<size_t>(n));
  }
  if (reply.rfind("ok\n", 0) == 0) return reply.substr(3);
  if (reply.rfind("error ", 0) == 0) {
    std::string msg = reply.substr(6);
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    throw Failure{msg.rfind("permission denied", 0) == 0 ? kExitPermission : kExitRefused,
                  fmt::format("xsockd: {}", msg)};
  }
  throw Failure{kExitUnreachable, reply.empty()
                                      ? "xsockd closed the admin connection without answering"
                                      : "xsockd's answer is not an admin reply"};
}

std::vector<std::string> Split(const std::string& s, char sep) {
  std::vector<std::string> out;
  size_t pos = 0;
  for (;;) {
    const size_t e = s.find(sep, pos);
    out.push_back(s.substr(pos, e == std::string::npos ? e : e - pos));
    if (e == std::string::npos) return out;
    pos = e + 1;
  }
}

bool Numeric(const std::string& s) {
  if (s.empty()) return false;
  for (char c : s) {
    if ((c < '0' || c > '9') && c != '.') return false;
  }
  return true;
}

std::string Upper(std::string s) {
  for (char& c : s) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  return s;
}

// The daemon's tab-separated table as aligned columns: numbers right-aligned, text left,
// two spaces between columns, the last column unpadded (like ss).
void PrintAligned(const std::string& body, bool header) {
  std::vector<std::vector<std::string>> rows;
  for (const std::string& line : Split(body, '\n')) {
    if (!line.empty()) rows.push_back(Split(line, '\t'));
  }
  if (rows.empty()) return;
  const size_t ncol = rows[0].size();
  for (std::string& h : rows[0]) h = Upper(h);
  std::vector<size_t> width(ncol, 0);
  std::vector<bool> numeric(ncol, true);
  for (size_t r = 0; r < rows.size(); ++r) {
    for (size_t c = 0; c < ncol && c < rows[r].size(); ++c) {
      width[c] = std::max(width[c], rows[r][c].size());
      if (r > 0 && !Numeric(rows[r][c]) && rows[r][c] != "-") numeric[c] = false;
    }
  }
  for (size_t r = header ? 0 : 1; r < rows.size(); ++r) {
    std::string out;
    for (size_t c = 0; c < ncol && c < rows[r].size(); ++c) {
      const std::string& v = rows[r][c];
      const bool last = c + 1 == ncol;
      if (c) out += "  ";
      if (numeric[c]) {
        out += std::string(width[c] - v.size(), ' ') + v;
      } else {
        out += v;
        if (!last) out += std::string(width[c] - v.size(), ' ');
      }
    }
    fmt::print("{}\n", out);
  }
}

}  // namespace

int main(int argc, char** argv) {
  std::string path = DefaultPath();
  bool json = false;
  int timeout_s = 5;
  std::string command;
  std::string client;
  auto usage = [](const std::string& why) {
    fmt::print(stderr, "xsockctl: {}\nTry 'xsockctl --help' for more information.\n", why);
    return kExitUsage;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&](std::string* out) {
      if (i + 1 >= argc) return false;
      *out = argv[++i];
      return true;
    };
    if (arg == "-h" || arg == "--help") {
      fmt::print("{}", HelpText());
      return kExitOk;
    } else if (arg == "--json") {
      json = true;
    } else if (arg == "--admin-socket") {
      if (!value(&path) || path.empty()) return usage("--admin-socket needs a path");
    } else if (arg == "--client") {
      if (!value(&client) || client.empty() || !Numeric(client) ||
          client.find('.') != std::string::npos) {
        return usage("--client needs a client id (a number, see 'xsockctl clients')");
      }
    } else if (arg == "--timeout") {
      std::string t;
      if (!value(&t)) return usage("--timeout needs a number of seconds");
      char* end = nullptr;
      const long v = std::strtol(t.c_str(), &end, 10);
      if (t.empty() || *end != '\0' || v < 1 || v > 3600) {
        return usage(fmt::format("--timeout {}: not 1..3600 seconds", t));
      }
      timeout_s = static_cast<int>(v);
    } else if (!arg.empty() && arg[0] == '-') {
      return usage(fmt::format("unknown option '{}'", arg));
    } else if (command.empty()) {
      command = arg;
    } else {
      return usage(fmt::format("unexpected argument '{}'", arg));
    }
  }
  if (command.empty()) return usage("no command given (clients, sockets or stats)");
  if (command != "clients" && command != "sockets" && command != "stats") {
    return usage(fmt::format("unknown command '{}' (clients, sockets or stats)", command));
  }
  if (!client.empty() && command != "sockets") return usage("--client applies to sockets only");

  std::string request = command + (json ? " format=json" : " format=text");
  if (!client.empty()) request += " client=" + client;
  try {
    const std::string body = Ask(path, request, timeout_s);
    if (json) {
      fmt::print("{}", body);
    } else {
      PrintAligned(body, command != "stats");
    }
  } catch (const Failure& f) {
    fmt::print(stderr, "xsockctl: {}\n", f.message);
    return f.status;
  }
  return kExitOk;
}
