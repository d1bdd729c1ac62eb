// xsock-echo-server: a host-side TCP echo server for the integration tests.
//
// One epoll loop serves any number of clients on IPv4 and IPv6 listeners. Each client has
// a bounded buffer: the server stops reading a client whose echo the client is not
// reading back, so a fast sender cannot make it grow without limit (the sender sees TCP
// back-pressure, as with a real server). After a client's FIN the server sends what is
// left and then its own FIN.
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/programs/common.h"

namespace {

using xsock::testprog::Endpoint;
using xsock::testprog::ErrnoName;

constexpr size_t kClientBuffer = 256 * 1024;

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: xsock-echo-server [--bind ADDR]... [--port N] [--max-clients N]\n"
               "                         [--corrupt-offset N]\n"
               "\n"
               "TCP echo server. Listens on every --bind address (default 127.0.0.1; IPv6\n"
               "literals such as ::1 work) at the same port. With --port 0 (the default)\n"
               "the kernel picks the port. The first line on stdout is the port number;\n"
               "one line per finished client follows.\n"
               "\n"
               "  --bind ADDR        address to listen on; repeat for several\n"
               "  --port N           port (0: any free port)\n"
               "  --max-clients N    exit 0 after N clients have been served and closed\n"
               "                     (default: run until killed)\n"
               "  --corrupt-offset N flip one bit of byte N of every client's echo (to show\n"
               "                     that a checker notices wrong data)\n");
}

[[noreturn]] void Die(const std::string& what, int err) {
  std::fprintf(stderr, "xsock-echo-server: %s: %s\n", what.c_str(), ErrnoName(err).c_str());
  std::exit(1);
}

struct Client {
  int fd = -1;
  uint64_t id = 0;
  std::vector<unsigned char> buf = std::vector<unsigned char>(kClientBuffer);
  size_t start = 0;  // first byte not yet echoed
  size_t end = 0;    // one past the last byte received
  bool peer_eof = false;
  uint64_t received = 0;
  uint64_t echoed = 0;
  uint32_t interest = 0;
};

class EchoServer {
 public:
  explicit EchoServer(std::optional<uint64_t> corrupt_offset)
      : epfd_(epoll_create1(EPOLL_CLOEXEC)), corrupt_offset_(corrupt_offset) {
    if (epfd_ < 0) Die("epoll_create1", errno);
  }

  // Listens on `host`:`port` and returns the port actually bound.
  uint16_t Listen(const std::string& host, uint16_t port) {
    auto ep = xsock::testprog::ParseEndpoint(host, port);
    if (!ep) {
      std::fprintf(stderr, "xsock-echo-server: --bind %s: not a numeric IP address\n",
                   host.c_str());
      std::exit(2);
    }
    const int fd = socket(ep->family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) Die("socket", errno);
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ep->family() == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    if (bind(fd, ep->addr(), ep->len) != 0) Die("bind " + host, errno);
    if (listen(fd, 128) != 0) Die("listen", errno);
    sockaddr_storage bound{};
    socklen_t len = sizeof(bound);
    getsockname(fd, reinterpret_cast<sockaddr*>(&bound), &len);
    Add(fd, EPOLLIN);
    listeners_.push_back(fd);
    return ntohs(bound.ss_family == AF_INET ? reinterpret_cast<sockaddr_in*>(&bound)->sin_port
                                            : reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port);
  }

  // Serves until `max_clients` clients have come and gone (0: forever).
  void Run(uint64_t max_clients) {
    epoll_event events[64];
    while (max_clients == 0 || finished_ < max_clients) {
      const int n = epoll_wait(epfd_, events, 64, -1);
      if (n < 0) {
        if (errno == EINTR) continue;
        Die("epoll_wait", errno);
      }
      for (int i = 0; i < n; ++i) {
        const int fd = events[i].data.fd;
        if (IsListener(fd)) {
          AcceptAll(fd);
        } else if (auto it = clients_.find(fd); it != clients_.end()) {
          Serve(*it->second);
        }
      }
    }
  }

 private:
  bool IsListener(int fd) const {
    for (int l : listeners_) {
      if (l == fd) return true;
    }
    return false;
  }

  void Add(int fd, uint32_t events) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) Die("epoll_ctl add", errno);
  }

  void AcceptAll(int listener) {
    for (;;) {
      const int fd = accept4(listener, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) return;
        Die("accept4", errno);
      }
      auto c = std::make_unique<Client>();
      c->fd = fd;
      c->id = ++accepted_;
      c->interest = EPOLLIN | EPOLLRDHUP;
      Add(fd, c->interest);
      clients_[fd] = std::move(c);
    }
  }

  // Moves bytes for one client until it would block, then sets its epoll interest: read
  // while there is room, write while there is something to echo.
  void Serve(Client& c) {
    for (;;) {
      bool progress = false;
      if (c.start < c.end) {
        const ssize_t n = send(c.fd, c.buf.data() + c.start, c.end - c.start, MSG_NOSIGNAL);
        if (n > 0) {
          c.start += static_cast<size_t>(n);
          c.echoed += static_cast<uint64_t>(n);
          progress = true;
          if (c.start == c.end) c.start = c.end = 0;
        } else if (errno != EAGAIN && errno != EINTR) {
          return Finish(c, "send: " + ErrnoName(errno));
        }
      }
      if (!c.peer_eof && c.end < c.buf.size()) {
        const ssize_t n = recv(c.fd, c.buf.data() + c.end, c.buf.size() - c.end, 0);
        if (n > 0) {
          if (corrupt_offset_ && *corrupt_offset_ >= c.received &&
              *corrupt_offset_ - c.received < static_cast<uint64_t>(n)) {
            c.buf[c.end + (*corrupt_offset_ - c.received)] ^= 1;
          }
          c.received += static_cast<uint64_t>(n);
          c.end += static_cast<size_t>(n);
          progress = true;
        } else if (n == 0) {
          c.peer_eof = true;
          progress = true;
        } else if (errno != EAGAIN && errno != EINTR) {
          return Finish(c, "recv: " + ErrnoName(errno));
        }
      }
      if (c.peer_eof && c.start == c.end) return Finish(c, "eof");
      if (!progress) break;
    }
    // Reclaim the space in front of unsent data so reading can go on.
    if (c.start > 0 && c.end == c.buf.size()) {
      std::memmove(c.buf.data(), c.buf.data() + c.start, c.end - c.start);
      c.end -= c.start;
      c.start = 0;
      return Serve(c);
    }
    uint32_t want = 0;
    if (!c.peer_eof && c.end < c.buf.size()) want |= EPOLLIN | EPOLLRDHUP;
    if (c.start < c.end) want |= EPOLLOUT;
    if (want != c.interest) {
      epoll_event ev{};
      ev.events = want;
      ev.data.fd = c.fd;
      if (epoll_ctl(epfd_, EPOLL_CTL_MOD, c.fd, &ev) != 0) Die("epoll_ctl mod", errno);
      c.interest = want;
    }
  }

  void Finish(Client& c, const std::string& how) {
    std::printf("client %llu: echoed %llu bytes, %s\n", static_cast<unsigned long long>(c.id),
                static_cast<unsigned long long>(c.echoed), how.c_str());
    std::fflush(stdout);
    const int fd = c.fd;
    // The peer's FIN has been answered by everything it sent; now ours.
    shutdown(fd, SHUT_WR);
    close(fd);
    clients_.erase(fd);
    ++finished_;
  }

  int epfd_;
  std::optional<uint64_t> corrupt_offset_;
  std::vector<int> listeners_;
  std::map<int, std::unique_ptr<Client>> clients_;
  uint64_t accepted_ = 0;
  uint64_t finished_ = 0;
};

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> binds;
  uint16_t port = 0;
  uint64_t max_clients = 0;
  std::optional<uint64_t> corrupt_offset;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--help" || arg == "-h") {
      Usage(stdout);
      return 0;
    } else if (arg == "--bind" && has_value) {
      binds.push_back(argv[++i]);
    } else if (arg == "--port" && has_value) {
      const auto p = xsock::testprog::ParsePort(argv[++i]);
      if (!p) {
        std::fprintf(stderr, "xsock-echo-server: --port %s: not a port number\n", argv[i]);
        return 2;
      }
      port = *p;
    } else if (arg == "--max-clients" && has_value) {
      const auto n = xsock::testprog::ParseSize(argv[++i]);
      if (!n) {
        std::fprintf(stderr, "xsock-echo-server: --max-clients %s: not a number\n", argv[i]);
        return 2;
      }
      max_clients = *n;
    } else if (arg == "--corrupt-offset" && has_value) {
      corrupt_offset = xsock::testprog::ParseSize(argv[++i]);
      if (!corrupt_offset) {
        std::fprintf(stderr, "xsock-echo-server: --corrupt-offset %s: not a number\n", argv[i]);
        return 2;
      }
    } else {
      std::fprintf(stderr, "xsock-echo-server: unknown or incomplete argument '%s'\n", arg.c_str());
      Usage(stderr);
      return 2;
    }
  }
  if (binds.empty()) binds.push_back("127.0.0.1");
  signal(SIGPIPE, SIG_IGN);

  EchoServer server(corrupt_offset);
  // Every listener shares the first one's port, so one number reaches all of them.
  for (const std::string& host : binds) port = server.Listen(host, port);
  std::printf("%u\n", port);
  std::fflush(stdout);
  server.Run(max_clients);
  return 0;
}
