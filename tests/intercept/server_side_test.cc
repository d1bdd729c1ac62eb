// The server side of the library's core (bind, listen, accept, bind-before-connect, and
// adopting an inherited channel) against a real xsockd, started by the test as a child
// process ($XSOCKD). No preload: the test drives Interceptor and FrontSocket directly and
// plays the host-side peers with kernel sockets on loopback.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "libintercept/interceptor.h"

namespace xsock::intercept {
namespace {

constexpr int kTimeoutMs = 10000;

sockaddr_in Addr(const char* ip, uint16_t port) {
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

const sockaddr* Sa(const sockaddr_in& a) { return reinterpret_cast<const sockaddr*>(&a); }

// xsockd as a child process on a private socket path; killed at the end.
class Xsockd {
 public:
  Xsockd() {
    char tmpl[] = "/tmp/xsock-server-side.XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/xsockd.sock";
    const char* exe = getenv("XSOCKD");
    REQUIRE(exe != nullptr);
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      const std::string log = dir_ + "/xsockd.log";
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd >= 0) dup2(fd, 2);
      execl(exe, exe, "--socket", path_.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < kTimeoutMs / 10; ++i) {
      struct stat st;
      if (stat(path_.c_str(), &st) == 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL("xsockd did not create " << path_);
  }
  ~Xsockd() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    std::string cmd = "rm -rf '" + dir_ + "'";
    (void)system(cmd.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string dir_, path_;
  pid_t pid_ = -1;
};

struct Harness {
  FdTable table;
  Interceptor core;
  explicit Harness(const std::string& path, std::string route = "127.0.0.0/8")
      : core(LibcSyscalls(), table, Config(path, std::move(route))) {}
  ~Harness() { table.RemoveRange(0, ~0u); }
  static InterceptorConfig Config(const std::string& path, std::string route) {
    InterceptorConfig c;
    c.socket_path = path;
    c.route = std::move(route);
    c.log = [](absl::string_view line) { UNSCOPED_INFO(std::string(line)); };
    return c;
  }
  FrontSocket& Sock(int fd) {
    FdRef r = table.Find(fd);
    REQUIRE(r);
    return *r.as<FrontSocket>();  // the table keeps it alive
  }
  uint16_t LocalPort(int fd) {
    sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    REQUIRE(core.GetSockName(Sock(fd), fd, reinterpret_cast<sockaddr*>(&ss), &len).ok());
    REQUIRE(ss.ss_family == AF_INET);
    return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  }
  // A routed listener on 127.0.0.1, ephemeral port.
  int Listener(int backlog = 16, int type_flags = 0) {
    const int fd = socket(AF_INET, SOCK_STREAM | type_flags, 0);
    REQUIRE(fd >= 0);
    core.AfterTcpSocket(fd);
    const sockaddr_in a = Addr("127.0.0.1", 0);
    REQUIRE(core.Bind(fd, Sa(a), sizeof(a)).ok());
    REQUIRE(core.Listen(Sock(fd), fd, backlog).ok());
    return fd;
  }
};

int KernelConnect(uint16_t port) {
  const int c = socket(AF_INET, SOCK_STREAM, 0);
  const sockaddr_in a = Addr("127.0.0.1", port);
  if (connect(c, Sa(a), sizeof(a)) != 0) {
    close(c);
    return -errno;
  }
  return c;
}

short PollOnce(int fd, short events, int timeout_ms) {
  pollfd p = {fd, events, 0};
  return poll(&p, 1, timeout_ms) == 1 ? p.revents : 0;
}

// Receives exactly n bytes through the routed socket (blocking).
std::string RecvAll(FrontSocket& s, int fd, size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    iovec iov = {out.data() + got, n - got};
    const Result r = s.Recv(fd, &iov, 1, 0);
    if (!r.ok() || r.value() == 0) break;
    got += static_cast<size_t>(r.value());
  }
  out.resize(got);
  return out;
}

bool SendAll(FrontSocket& s, int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    iovec iov = {const_cast<char*>(data.data()) + sent, data.size() - sent};
    const Result r = s.Send(fd, &iov, 1, MSG_NOSIGNAL);
    if (!r.ok()) return false;
    sent += static_cast<size_t>(r.value());
  }
  return true;
}

std::string Pattern(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed;
  for (char& c : s) {
    x = x * 1664525u + 1013904223u;
    c = static_cast<char>(x >> 24);
  }
  return s;
}

bool KernelSendAll(int fd, const std::string& data) {
  size_t sent = 0;
  while (sent < data.size()) {
    const ssize_t n = send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n <= 0) return false;
    sent += static_cast<size_t>(n);
  }
  return true;
}

std::string KernelRecvAll(int fd, size_t n) {
  std::string out(n, '\0');
  size_t got = 0;
  while (got < n) {
    const ssize_t r = recv(fd, out.data() + got, n - got, 0);
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  out.resize(got);
  return out;
}

TEST_CASE("routed bind reports the real port, listen and accept carry a connection") {
  Xsockd xsockd;
  Harness h(xsockd.path());
  const int lfd = h.Listener();
  const uint16_t port = h.LocalPort(lfd);
  CHECK(port != 0);
  CHECK(h.table.Contains(lfd));

  int v = -1;
  socklen_t len = sizeof(v);
  REQUIRE(h.core.GetSockOpt(h.Sock(lfd), lfd, SOL_SOCKET, SO_ACCEPTCONN, &v, &len).ok());
  CHECK(v == 1);
  // Like a listening TCP socket: not writable, not readable while nobody connects.
  CHECK(PollOnce(lfd, POLLIN | POLLOUT, 0) == 0);
  CHECK(h.core.Listen(h.Sock(lfd), lfd, 4).ok());  // again: no change, no error

  const int c = KernelConnect(port);
  REQUIRE(c >= 0);
  CHECK((PollOnce(lfd, POLLIN, kTimeoutMs) & POLLIN) != 0);

  sockaddr_in peer = {};
  socklen_t plen = sizeof(peer);
  const Result a = h.core.Accept(h.Sock(lfd), lfd, reinterpret_cast<sockaddr*>(&peer), &plen,
                                 SOCK_CLOEXEC);
  REQUIRE(a.ok());
  const int afd = static_cast<int>(a.value());
  sockaddr_in cname = {};
  socklen_t clen = sizeof(cname);
  getsockname(c, reinterpret_cast<sockaddr*>(&cname), &clen);
  CHECK(plen == sizeof(sockaddr_in));
  CHECK(peer.sin_family == AF_INET);
  CHECK(peer.sin_port == cname.sin_port);
  CHECK(peer.sin_addr.s_addr == cname.sin_addr.s_addr);
  CHECK((fcntl(afd, F_GETFD) & FD_CLOEXEC) != 0);
  CHECK((fcntl(afd, F_GETFL) & O_NONBLOCK) == 0);
  CHECK(h.LocalPort(afd) == port);  // attaches the accepted socket on first use

  // 2 MiB each way, content checked.
  const std::string up = Pattern(2 << 20, 1), down = Pattern(2 << 20, 2);
  std::thread writer([&] { KernelSendAll(c, up); });
  CHECK(RecvAll(h.Sock(afd), afd, up.size()) == up);
  writer.join();
  // Catch2's assertions are not thread-safe: the thread only records, main asserts.
  bool reader_got_down = false;
  std::thread reader([&] { reader_got_down = KernelRecvAll(c, down.size()) == down; });
  CHECK(SendAll(h.Sock(afd), afd, down));
  reader.join();
  CHECK(reader_got_down);

  // EOF from the peer reaches the accepted socket.
  shutdown(c, SHUT_WR);
  char b;
  iovec iov = {&b, 1};
  CHECK(h.Sock(afd).Recv(afd, &iov, 1, 0).value() == 0);
  close(c);
  CHECK(h.core.Close(afd).ok());
  CHECK(h.core.Close(lfd).ok());
}

TEST_CASE("nonblocking accept: EAGAIN when empty, SOCK_NONBLOCK on the new socket") {
  Xsockd xsockd;
  Harness h(xsockd.path());
  const int lfd = h.Listener(8, SOCK_NONBLOCK);
  CHECK((fcntl(lfd, F_GETFL) & O_NONBLOCK) != 0);  // kept across the swaps
  const Result none = h.core.Accept(h.Sock(lfd), lfd, nullptr, nullptr, 0);
  CHECK(none.error() == EAGAIN);
  CHECK(h.core.Accept(h.Sock(lfd), lfd, nullptr, nullptr, 0x4000).error() == EINVAL);

  std::vector<int> clients;
  for (int i = 0; i < 3; ++i) {
    const int c = KernelConnect(h.LocalPort(lfd));
    REQUIRE(c >= 0);
    clients.push_back(c);
  }
  std::vector<int> accepted;
  for (int tries = 0; accepted.size() < 3 && tries < kTimeoutMs / 5; ++tries) {
    const Result r = h.core.Accept(h.Sock(lfd), lfd, nullptr, nullptr, SOCK_NONBLOCK);
    if (r.ok()) {
      accepted.push_back(static_cast<int>(r.value()));
    } else {
      REQUIRE(r.error() == EAGAIN);
      PollOnce(lfd, POLLIN, 5);
    }
  }
  REQUIRE(accepted.size() == 3);
  for (int afd : accepted) {
    CHECK((fcntl(afd, F_GETFL) & O_NONBLOCK) != 0);
    CHECK((fcntl(afd, F_GETFD) & FD_CLOEXEC) == 0);
    char b;
    iovec iov = {&b, 1};
    CHECK(h.Sock(afd).Recv(afd, &iov, 1, 0).error() == EAGAIN);
  }
  // Each accepted socket is a distinct connection: a byte from client i arrives on i.
  for (size_t i = 0; i < clients.size(); ++i) {
    const char tag = static_cast<char>('a' + i);
    REQUIRE(send(clients[i], &tag, 1, 0) == 1);
  }
  std::string tags;
  for (int afd : accepted) {
    REQUIRE((PollOnce(afd, POLLIN, kTimeoutMs) & POLLIN) != 0);
    char b = 0;
    iovec iov = {&b, 1};
    REQUIRE(h.Sock(afd).Recv(afd, &iov, 1, 0).value() == 1);
    tags += b;
  }
  std::sort(tags.begin(), tags.end());
  CHECK(tags == "abc");
  for (int c : clients) close(c);
}

TEST_CASE("connect on a listener is EISCONN; listen on a connected socket is EINVAL") {
  Xsockd xsockd;
  Harness h(xsockd.path());
  const int lfd = h.Listener();
  const sockaddr_in a = Addr("127.0.0.1", h.LocalPort(lfd));
  CHECK(h.core.Connect(lfd, Sa(a), sizeof(a)).error() == EISCONN);

  const int cfd = socket(AF_INET, SOCK_STREAM, 0);
  h.core.AfterTcpSocket(cfd);
  REQUIRE(h.core.Connect(cfd, Sa(a), sizeof(a)).ok());
  CHECK(h.core.Listen(h.Sock(cfd), cfd, 1).error() == EINVAL);
  const sockaddr_in b = Addr("127.0.0.1", 0);
  CHECK(h.core.Bind(cfd, Sa(b), sizeof(b)).error() == EINVAL);
}

TEST_CASE("a routed bind before connect keeps its source port") {
  Xsockd xsockd;
  Harness h(xsockd.path());
  const int srv = socket(AF_INET, SOCK_STREAM, 0);
  const sockaddr_in any = Addr("127.0.0.1", 0);
  REQUIRE(bind(srv, Sa(any), sizeof(any)) == 0);
  REQUIRE(listen(srv, 4) == 0);
  sockaddr_in sname = {};
  socklen_t slen = sizeof(sname);
  getsockname(srv, reinterpret_cast<sockaddr*>(&sname), &slen);

  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  h.core.AfterTcpSocket(fd);
  REQUIRE(h.core.Bind(fd, Sa(any), sizeof(any)).ok());
  const uint16_t bound = h.LocalPort(fd);
  REQUIRE(bound != 0);
  REQUIRE(h.core.Connect(fd, Sa(sname), sizeof(sname)).ok());
  sockaddr_in peer = {};
  socklen_t plen = sizeof(peer);
  const int a = accept(srv, reinterpret_cast<sockaddr*>(&peer), &plen);
  REQUIRE(a >= 0);
  CHECK(ntohs(peer.sin_port) == bound);
  CHECK(SendAll(h.Sock(fd), fd, "hello"));
  CHECK(KernelRecvAll(a, 5) == "hello");
  close(a);
  close(srv);
}

TEST_CASE("a second routed bind to a port in use fails with EADDRINUSE") {
  Xsockd xsockd;
  Harness h(xsockd.path());
  const int lfd = h.Listener();
  const uint16_t port = h.LocalPort(lfd);
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  h.core.AfterTcpSocket(fd);
  const sockaddr_in a = Addr("127.0.0.1", port);
  CHECK(h.core.Bind(fd, Sa(a), sizeof(a)).error() == EADDRINUSE);
  // The socket stays usable, as an unbound one: a bind elsewhere works.
  const sockaddr_in b = Addr("127.0.0.1", 0);
  CHECK(h.core.Bind(fd, Sa(b), sizeof(b)).ok());
}

TEST_CASE("adopting inherited descriptors: a connected socket and a listener") {
  Xsockd xsockd;
  Harness h(xsockd.path());
  const int lfd = h.Listener();
  const uint16_t port = h.LocalPort(lfd);
  const int c = KernelConnect(port);
  REQUIRE(c >= 0);
  const Result a = h.core.Accept(h.Sock(lfd), lfd, nullptr, nullptr, 0);
  REQUIRE(a.ok());
  const int afd = static_cast<int>(a.value());

  // A second interceptor with an empty table plays the image after exec; the descriptors
  // are plain numbers to it until it adopts them.
  const int inherited = dup(afd);
  const int inherited_listener = dup(lfd);
  Harness after(xsockd.path());
  CHECK_FALSE(after.table.Contains(inherited));
  REQUIRE(after.core.AdoptInherited(inherited).ok());
  REQUIRE(after.core.AdoptInherited(inherited_listener).ok());
  CHECK(after.Sock(inherited_listener).state() == SocketState::kListening);
  CHECK(after.LocalPort(inherited) == port);

  REQUIRE(KernelSendAll(c, "ping"));
  CHECK(RecvAll(after.Sock(inherited), inherited, 4) == "ping");
  CHECK(SendAll(after.Sock(inherited), inherited, "pong"));
  CHECK(KernelRecvAll(c, 4) == "pong");

  const int c2 = KernelConnect(port);
  REQUIRE(c2 >= 0);
  const Result a2 =
      after.core.Accept(after.Sock(inherited_listener), inherited_listener, nullptr, nullptr, 0);
  REQUIRE(a2.ok());
  CHECK(after.LocalPort(static_cast<int>(a2.value())) == port);

  // Something that is not an xsock channel is refused, and stays unrouted.
  int pair[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, pair) == 0);
  CHECK_FALSE(after.core.AdoptInherited(pair[0]).ok());
  CHECK_FALSE(after.table.Contains(pair[0]));
  close(pair[0]);
  close(pair[1]);
  close(c);
  close(c2);
}

}  // namespace
}  // namespace xsock::intercept
