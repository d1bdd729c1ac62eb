// xsock-stats: asks a running xsockd for its counters and prints them, one `name value`
// per line or as a JSON object. It speaks the ordinary control protocol (hello, then
// stats) on xsockd's socket, so it also serves as a "is xsockd up and answering" probe.
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "fmt/core.h"
#include "shared/protocol.h"
#include "shared/syscalls.h"
#include "shared/unix_io.h"

namespace {

namespace proto = xsock::proto;

constexpr const char* kDefaultSocket = "/run/xsock/xsockd.sock";

void Usage(FILE* out) {
  fmt::print(out,
             "usage: xsock-stats [--socket PATH] [--json] [--timeout S]\n"
             "\n"
             "Prints the counters of a running xsockd, one 'name value' per line.\n"
             "\n"
             "  --socket PATH  xsockd's control socket (default: $XSOCK_SOCKET, else {})\n"
             "  --json         print one JSON object instead\n"
             "  --timeout S    longest wait for each reply, in seconds (default 5)\n"
             "\n"
             "exit: 0 printed, 1 xsockd unreachable or its answer unusable, 2 usage\n",
             kDefaultSocket);
}

std::string ErrnoText(int err) {
  const char* name = strerrorname_np(err);
  return fmt::format("{} ({})", name != nullptr ? name : std::to_string(err), std::strerror(err));
}

// Reports why the counters could not be read; the caller exits 1.
struct Failure {
  std::string message;
};

int ConnectControl(const std::string& path, int timeout_s) {
  sockaddr_un addr{};
  if (path.size() >= sizeof(addr.sun_path)) {
    throw Failure{
        fmt::format("socket path '{}' is longer than {} bytes", path, sizeof(addr.sun_path) - 1)};
  }
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.c_str(), path.size() + 1);
  const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) throw Failure{fmt::format("socket: {}", ErrnoText(errno))};
  // A wedged xsockd must not wedge the tool.
  timeval tv{timeout_s, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
  if (connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int err = errno;
    close(fd);
    throw Failure{fmt::format("cannot connect to xsockd at {}: {}", path, ErrnoText(err))};
  }
  return fd;
}

// Sends one request and returns its reply, which must be of type T and answer seq.
template <class T>
T Exchange(int fd, uint32_t seq, const proto::Request& request) {
  const char* name = proto::Name(proto::TypeOf(request));
  const std::vector<uint8_t> bytes = proto::EncodeRequest(seq, request);
  const auto& sys = xsock::LibcSyscalls();
  if (int r = xsock::SendPacket(sys, fd, bytes, {}); r < 0) {
    throw Failure{fmt::format("sending {} request: {}", name, ErrnoText(-r))};
  }
  std::vector<uint8_t> buf;
  std::vector<int> fds;
  const ssize_t n = xsock::RecvPacket(sys, fd, buf, proto::kMaxMessageSize, fds);
  for (int received : fds) close(received);
  if (n == 0)
    throw Failure{fmt::format("xsockd closed the connection instead of answering {}", name)};
  if (n == -EAGAIN) throw Failure{fmt::format("xsockd did not answer {} in time", name)};
  if (n < 0)
    throw Failure{fmt::format("receiving {} reply: {}", name, ErrnoText(static_cast<int>(-n)))};
  auto decoded = proto::DecodeReply(buf);
  if (!decoded.ok()) {
    throw Failure{
        fmt::format("malformed {} reply: {}", name, std::string(decoded.status().message()))};
  }
  if (decoded->seq != seq) {
    throw Failure{fmt::format("{} reply has seq {}, expected {}", name, decoded->seq, seq)};
  }
  const T* reply = std::get_if<T>(&decoded->msg);
  if (reply == nullptr) {
    throw Failure{
        fmt::format("answer to {} is a {} reply", name, proto::Name(proto::TypeOf(decoded->msg)))};
  }
  if (reply->err != 0) {
    throw Failure{fmt::format("xsockd refused {}: {}", name, ErrnoText(reply->err))};
  }
  return *reply;
}

proto::StatsReply FetchStats(const std::string& path, int timeout_s) {
  const int fd = ConnectControl(path, timeout_s);
  try {
    const auto hello = Exchange<proto::HelloReply>(
        fd, 1, proto::HelloRequest{proto::kVersion, proto::kVersion, proto::kAllCaps});
    if ((hello.caps & proto::kCapStats) == 0) {
      throw Failure{fmt::format("xsockd (pid {}) does not offer stats", hello.server_pid)};
    }
    const auto stats = Exchange<proto::StatsReply>(fd, 2, proto::StatsRequest{});
    close(fd);
    return stats;
  } catch (...) {
    close(fd);
    throw;
  }
}

std::vector<std::pair<const char*, uint64_t>> Counters(const proto::StatsReply& s) {
  return {
      {"clients_now", s.clients_now},     {"clients_total", s.clients_total},
      {"sockets_now", s.sockets_now},     {"sockets_total", s.sockets_total},
      {"connects_ok", s.connects_ok},     {"connects_failed", s.connects_failed},
      {"bytes_to_host", s.bytes_to_host}, {"bytes_from_host", s.bytes_from_host},
  };
}

}  // namespace

int main(int argc, char** argv) {
  std::string path;
  if (const char* env = std::getenv("XSOCK_SOCKET"); env != nullptr && *env != '\0') path = env;
  if (path.empty()) path = kDefaultSocket;
  bool json = false;
  int timeout_s = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--help" || arg == "-h") {
      Usage(stdout);
      return 0;
    } else if (arg == "--json") {
      json = true;
    } else if (arg == "--socket" && has_value) {
      path = argv[++i];
    } else if (arg == "--timeout" && has_value) {
      char* end = nullptr;
      const long t = std::strtol(argv[++i], &end, 10);
      if (*argv[i] == '\0' || *end != '\0' || t < 1 || t > 3600) {
        fmt::print(stderr, "xsock-stats: --timeout {}: not 1..3600 seconds\n", argv[i]);
        return 2;
      }
      timeout_s = static_cast<int>(t);
    } else {
      fmt::print(stderr, "xsock-stats: unknown or incomplete argument '{}'\n", arg);
      Usage(stderr);
      return 2;
    }
  }

  proto::StatsReply stats;
  try {
    stats = FetchStats(path, timeout_s);
  } catch (const Failure& f) {
    fmt::print(stderr, "xsock-stats: {}\n", f.message);
    return 1;
  }
  const auto counters = Counters(stats);
  if (json) {
    std::string out = "{";
    for (size_t i = 0; i < counters.size(); ++i) {
      out += fmt::format("{}\"{}\": {}", i == 0 ? "" : ", ", counters[i].first, counters[i].second);
    }
    fmt::print("{}}}\n", out);
  } else {
    for (const auto& [name, value] : counters) fmt::print("{} {}\n", name, value);
  }
  return 0;
}
