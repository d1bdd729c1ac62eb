// xsock-bench-server: the far end of the network benchmark. Accepts TCP connections and
// serves each on its own thread, in the mode chosen by the client's first byte (see
// net_common.h). Runs until killed. It is an ordinary kernel-socket program: in every
// benchmark configuration it runs in the root namespace without the preload library.
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "bench/net/net_common.h"

namespace xsock::bench {
namespace {

constexpr size_t kSinkBufferBytes = 256 * 1024;
constexpr size_t kEchoBufferBytes = 64 * 1024;

constexpr char kUsage[] =
    "usage: xsock-bench-server [--addr ADDR] [--port PORT] [--port-file PATH] [--quiet]\n"
    "  --addr ADDR       numeric address to listen on (default 127.0.0.1)\n"
    "  --port PORT       port (default 0: the kernel picks one)\n"
    "  --port-file PATH  after listen(), write the port number to PATH (atomically), so a\n"
    "                    script knows when and where the server is ready\n"
    "  --quiet           do not log connections\n";

// Reads until EOF, then answers with the count: the client's proof of delivery.
void ServeSink(int fd, bool quiet) {
  std::vector<char> buf(kSinkBufferBytes);
  uint64_t total = 0;
  for (;;) {
    const ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n > 0) {
      total += static_cast<uint64_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      if (!quiet) std::fprintf(stderr, "sink: recv: %s\n", std::strerror(errno));
      return;
    }
    break;
  }
  uint8_t count[kSinkCountBytes];
  for (size_t i = 0; i < kSinkCountBytes; ++i) count[i] = static_cast<uint8_t>(total >> (8 * i));
  if (!SendAll(fd, count, sizeof(count)) && !quiet) {
    std::fprintf(stderr, "sink: send count: %s\n", std::strerror(errno));
  }
  if (!quiet) std::fprintf(stderr, "sink: %llu bytes\n", static_cast<unsigned long long>(total));
}

// Echoes whatever arrives, as soon as it arrives, until EOF.
void ServeEcho(int fd, bool quiet) {
  SetNoDelay(fd);
  std::vector<char> buf(kEchoBufferBytes);
  uint64_t total = 0;
  for (;;) {
    const ssize_t n = recv(fd, buf.data(), buf.size(), 0);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (!SendAll(fd, buf.data(), static_cast<size_t>(n))) break;
    total += static_cast<uint64_t>(n);
  }
  if (!quiet) std::fprintf(stderr, "echo: %llu bytes\n", static_cast<unsigned long long>(total));
}

void ServeConnection(int fd, bool quiet) {
  char mode = 0;
  const ssize_t n = RecvAll(fd, &mode, 1);
  if (n == 1 && mode == kModeSink) {
    ServeSink(fd, quiet);
  } else if (n == 1 && mode == kModeEchoRr) {
    ServeEcho(fd, quiet);
  } else if (!quiet) {
    std::fprintf(stderr, "connection closed: %s\n", n == 1 ? "unknown mode byte" : "no mode byte");
  }
  close(fd);
}

// Writes the port to PATH.tmp and renames it, so a reader never sees a partial number.
void WritePortFile(const std::string& path, uint16_t port) {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr) Die("--port-file " + tmp + ": " + std::strerror(errno));
  std::fprintf(f, "%u\n", port);
  if (std::fclose(f) != 0) Die("--port-file " + tmp + ": " + std::strerror(errno));
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    Die("--port-file " + path + ": " + std::strerror(errno));
  }
}

int Listen(const std::string& host, uint16_t port) {
  socklen_t len = 0;
  const auto addr = MakeAddress(host, port, &len);
  if (!addr) Die("--addr: not a numeric IPv4/IPv6 address: '" + host + "'");
  const int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) Die(std::string("socket: ") + std::strerror(errno));
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  if (bind(fd, reinterpret_cast<const sockaddr*>(&*addr), len) != 0) {
    Die("bind " + host + ":" + std::to_string(port) + ": " + std::strerror(errno));
  }
  if (listen(fd, 64) != 0) Die(std::string("listen: ") + std::strerror(errno));
  return fd;
}

uint16_t BoundPort(int fd) {
  sockaddr_storage ss = {};
  socklen_t len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) {
    Die(std::string("getsockname: ") + std::strerror(errno));
  }
  const in_port_t p = ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                               : reinterpret_cast<sockaddr_in*>(&ss)->sin_port;
  return ntohs(p);
}

int Main(int argc, char** argv) {
  const Args args(argc, argv);
  if (args.Has("--help") || args.Has("-h")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  args.RejectUnknown({"--addr", "--port", "--port-file"}, {"--quiet"});
  const std::string host = args.Get("--addr").value_or("127.0.0.1");
  const uint64_t port = args.GetU64("--port", 0);
  if (port > 65535) Die("--port: out of range");
  const bool quiet = args.Has("--quiet");
  signal(SIGPIPE, SIG_IGN);

  const int listen_fd = Listen(host, static_cast<uint16_t>(port));
  const uint16_t bound = BoundPort(listen_fd);
  if (const auto path = args.Get("--port-file")) WritePortFile(*path, bound);
  if (!quiet) std::fprintf(stderr, "listening on %s port %u\n", host.c_str(), bound);

  for (;;) {
    const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE || errno == ENFILE) {
        // Transient: keep serving (an EMFILE storm is not expected from the benchmark).
        if (errno == EMFILE || errno == ENFILE) usleep(10'000);
        continue;
      }
      Die(std::string("accept: ") + std::strerror(errno));
    }
    std::thread(ServeConnection, fd, quiet).detach();
  }
}

}  // namespace
}  // namespace xsock::bench

int main(int argc, char** argv) { return xsock::bench::Main(argc, argv); }
