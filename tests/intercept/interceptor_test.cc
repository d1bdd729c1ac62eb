// The routed implementation behind the hooks (libintercept/interceptor.h) and the
// control connection (control_client.h), against a fake xsockd: the routing decision,
// the swap of a kernel socket for a channel, option replay, connect semantics, the fd
// table under dup/close, forwarded calls, fork, and a broken control connection.
#include "libintercept/interceptor.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <fstream>
#include <mutex>
#include <string>
#include <vector>

#include "tests/intercept/fake_xsockd.h"

namespace xsock::intercept {
namespace {

using testing::FakeBackend;
using testing::FakeXsockd;

sockaddr_in Addr(const char* ip, uint16_t port) {
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  inet_pton(AF_INET, ip, &a.sin_addr);
  return a;
}

int IntOpt(int fd, int level, int name) {
  int v = -1;
  socklen_t len = sizeof(v);
  if (getsockopt(fd, level, name, &v, &len) != 0) return -errno;
  return v;
}

// Mappings of fake socket memory in this process (the backend's and the app's).
int SocketMappings() {
  std::ifstream maps("/proc/self/maps");
  int n = 0;
  for (std::string line; std::getline(maps, line);) {
    if (line.find("memfd:xsock-fake") != std::string::npos) ++n;
  }
  return n;
}

// A fake xsockd, an fd table and an interceptor wired to them, and the log lines.
struct Harness {
  FakeXsockd xsockd;
  FdTable table;
  std::mutex mu;
  std::vector<std::string> lines;
  Interceptor core;

  explicit Harness(FakeXsockd::Options options = {}, std::string route = "127.0.0.0/8",
                   std::string path = "")
      : xsockd(options), core(LibcSyscalls(), table, Config(route, path)) {}
  ~Harness() { table.RemoveRange(0, ~0u); }  // before the interceptor's pool goes

  InterceptorConfig Config(std::string route, std::string path) {
    InterceptorConfig c;
    c.socket_path = path.empty() ? xsockd.path() : path;
    c.route = std::move(route);
    c.log = [this](absl::string_view line) {
      std::lock_guard<std::mutex> lock(mu);
      lines.emplace_back(line);
    };
    return c;
  }
  Result Connect(int fd, const sockaddr_in& a) {
    return core.Connect(fd, reinterpret_cast<const sockaddr*>(&a), sizeof(a));
  }
  FrontSocket* Routed(int fd) {
    FdRef r = table.Find(fd);
    return r ? r.as<FrontSocket>() : nullptr;  // the table keeps it alive
  }
  // A TCP socket connected through the fake xsockd.
  int RoutedSocket(int type_flags = 0) {
    const int fd = socket(AF_INET, SOCK_STREAM | type_flags, 0);
    REQUIRE(fd >= 0);
    const Result r = Connect(fd, Addr("127.0.0.1", 9));
    INFO("errno " << r.error());
    REQUIRE(r.ok());
    return fd;
  }
  bool Logged(const std::string& line) {
    const auto log = xsockd.Log();
    return std::find(log.begin(), log.end(), line) != log.end();
  }
  size_t Position(const std::string& line) {
    const auto log = xsockd.Log();
    return static_cast<size_t>(std::find(log.begin(), log.end(), line) - log.begin());
  }
};

std::string RecvSome(FrontSocket* s, int fd) {
  char buf[256];
  iovec v = {buf, sizeof(buf)};
  const Result r = s->Recv(fd, &v, 1, 0);
  return r.ok() ? std::string(buf, static_cast<size_t>(r.value()))
                : "errno " + std::to_string(r.error());
}

Result SendStr(FrontSocket* s, int fd, const std::string& data) {
  iovec v = {const_cast<char*>(data.data()), data.size()};
  return s->Send(fd, &v, 1, MSG_NOSIGNAL);
}

}  // namespace

TEST_CASE("a connect to a routed destination swaps the kernel socket for a channel",
          "[interceptor]") {
  Harness h;
  const int fd = h.RoutedSocket();
  CHECK(IntOpt(fd, SOL_SOCKET, SO_DOMAIN) == AF_UNIX);  // the same number, now the channel
  FrontSocket* s = h.Routed(fd);
  REQUIRE(s != nullptr);
  CHECK(s->state() == SocketState::kConnected);
  CHECK(h.xsockd.Log() ==
        std::vector<std::string>{"hello", "socket AF_INET", "connect 1 127.0.0.1:9"});
  // Bytes cross both ways on the swapped descriptor, and it polls writable once xsockd
  // drained the stuffing of the connect.
  REQUIRE(SendStr(s, fd, "ping").ok());
  FakeBackend* b = h.xsockd.backend(1);
  REQUIRE(b->WaitReceived(4, 2000));
  CHECK(b->Received() == "ping");
  b->Send("pong");
  CHECK(RecvSome(s, fd) == "pong");
  pollfd p = {fd, POLLOUT, 0};
  CHECK(poll(&p, 1, 2000) == 1);
  CHECK(h.core.Close(fd).ok());
  CHECK(h.Routed(fd) == nullptr);
}

TEST_CASE("unrouted connects stay with the kernel and never contact xsockd", "[interceptor]") {
  Harness h({}, "10.0.0.0/8");
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a = Addr("127.0.0.1", 0);
  REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  REQUIRE(listen(listener, 4) == 0);
  socklen_t len = sizeof(a);
  getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);

  const int tcp = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(h.Connect(tcp, a).ok());
  CHECK(IntOpt(tcp, SOL_SOCKET, SO_DOMAIN) == AF_INET);
  // A routed destination, but UDP: the kernel's too.
  Harness routed_udp({}, "127.0.0.0/8");
  const int udp = socket(AF_INET, SOCK_DGRAM, 0);
  CHECK(routed_udp.Connect(udp, Addr("127.0.0.1", 9)).ok());
  CHECK(IntOpt(udp, SOL_SOCKET, SO_DOMAIN) == AF_INET);
  // The kernel's errors come back unchanged.
  const int tcp2 = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in6 v6 = {};
  v6.sin6_family = AF_INET6;
  v6.sin6_port = htons(9);
  v6.sin6_addr = in6addr_loopback;
  CHECK(h.core.Connect(tcp2, reinterpret_cast<sockaddr*>(&v6), sizeof(v6)).error() == EAFNOSUPPORT);

  CHECK(h.xsockd.connections() == 0);
  CHECK(routed_udp.xsockd.connections() == 0);
  CHECK_FALSE(h.table.Contains(tcp));
  for (int fd : {listener, tcp, udp, tcp2}) close(fd);
}

TEST_CASE("an unreachable xsockd refuses routed connects with one line per process",
          "[interceptor]") {
  Harness h({}, "127.0.0.0/8", "/nonexistent/xsockd.sock");
  for (int i = 0; i < 3; ++i) {
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(h.Connect(fd, Addr("127.0.0.1", 9)).error() == ECONNREFUSED);
    CHECK(IntOpt(fd, SOL_SOCKET, SO_DOMAIN) == AF_INET);  // untouched
    close(fd);
  }
  REQUIRE(h.lines.size() == 1);
  CHECK(h.lines[0] ==
        "xsock: cannot reach xsockd at /nonexistent/xsockd.sock (ENOENT); routed connections "
        "fail with ECONNREFUSED");
}

TEST_CASE("malformed XSOCK_ROUTE entries are reported once each", "[interceptor]") {
  Harness h({}, "127.0.0.0/8,oops");
  REQUIRE(h.lines.size() == 1);
  CHECK(h.lines[0] == "xsock: XSOCK_ROUTE entry 'oops' ignored: 'oops' is not an IPv4 address");
  CHECK(h.core.policy().may_route());
  CHECK(h.core.policy().origin() == "XSOCK_ROUTE");
}

TEST_CASE("a nonblocking routed connect reports EINPROGRESS, then POLLOUT and SO_ERROR",
          "[interceptor]") {
  Harness h({.connect = FakeXsockd::ConnectMode::kInProgress,
             .complete_err = ECONNREFUSED,
             .complete_after_ms = 200});
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  CHECK(h.Connect(fd, Addr("127.0.0.1", 9)).error() == EINPROGRESS);
  FrontSocket* s = h.Routed(fd);
  REQUIRE(s != nullptr);
  pollfd p = {fd, POLLOUT, 0};
  CHECK(poll(&p, 1, 0) == 0);  // unwritable while connecting
  CHECK(h.Connect(fd, Addr("127.0.0.1", 9)).error() == EALREADY);
  REQUIRE(poll(&p, 1, 3000) == 1);
  int err = -1;
  socklen_t len = sizeof(err);
  REQUIRE(h.core.GetSockOpt(*s, fd, SOL_SOCKET, SO_ERROR, &err, &len).ok());
  CHECK(err == ECONNREFUSED);
  REQUIRE(h.core.GetSockOpt(*s, fd, SOL_SOCKET, SO_ERROR, &err, &len).ok());
  CHECK(err == 0);
  CHECK(h.Connect(fd, Addr("127.0.0.1", 9)).error() == ECONNABORTED);
  h.core.Close(fd);
}

TEST_CASE("a nonblocking routed connect that succeeds polls writable, reports 0 once, then EISCONN",
          "[interceptor]") {
  Harness h({.connect = FakeXsockd::ConnectMode::kInProgress});
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  CHECK(h.Connect(fd, Addr("127.0.0.1", 9)).error() == EINPROGRESS);
  pollfd p = {fd, POLLOUT, 0};
  REQUIRE(poll(&p, 1, 3000) == 1);
  // As the kernel's __inet_stream_connect: the call after completion returns 0.
  CHECK(h.Connect(fd, Addr("127.0.0.1", 9)).ok());
  CHECK(h.Connect(fd, Addr("127.0.0.1", 9)).error() == EISCONN);
  h.core.Close(fd);
}

TEST_CASE("a blocking routed connect waits for the result", "[interceptor]") {
  SECTION("success") {
    Harness h({.connect = FakeXsockd::ConnectMode::kInProgress});
    const int fd = h.RoutedSocket();
    CHECK(h.Routed(fd)->state() == SocketState::kConnected);
    h.core.Close(fd);
  }
  SECTION("failure") {
    Harness h({.connect = FakeXsockd::ConnectMode::kInProgress, .complete_err = ETIMEDOUT});
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(h.Connect(fd, Addr("127.0.0.1", 9)).error() == ETIMEDOUT);
    h.core.Close(fd);
  }
  SECTION("refused at once") {
    Harness h({.connect = FakeXsockd::ConnectMode::kRefusedAtOnce});
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(h.Connect(fd, Addr("127.0.0.1", 9)).error() == ECONNREFUSED);
    FrontSocket* s = h.Routed(fd);
    REQUIRE(s != nullptr);
    CHECK(s->TakeSoError() == 0);  // reported by connect, as the kernel does
    h.core.Close(fd);
  }
}

TEST_CASE("options changed before connect are replayed to xsockd, defaults are not",
          "[interceptor]") {
  Harness h;
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  const int one = 1, idle = 60, tos = 0x10;
  const timeval rcvtimeo = {1, 500000};
  REQUIRE(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) == 0);
  REQUIRE(setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) == 0);
  REQUIRE(setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) == 0);
  REQUIRE(setsockopt(fd, IPPROTO_IP, IP_TOS, &tos, sizeof(tos)) == 0);
  REQUIRE(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &rcvtimeo, sizeof(rcvtimeo)) == 0);
  REQUIRE(h.Connect(fd, Addr("127.0.0.1", 9)).ok());
  const std::string nodelay = "setsockopt 1 6/1 len 4 = 1";
  const std::string keepalive = "setsockopt 1 1/9 len 4 = 1";
  const std::string keepidle = "setsockopt 1 6/4 len 4 = 60";
  const std::string iptos = "setsockopt 1 0/1 len 4 = 16";
  for (const auto& line : {nodelay, keepalive, keepidle, iptos}) {
    INFO(line);
    CHECK(h.Logged(line));
    CHECK(h.Position(line) < h.Position("connect 1 127.0.0.1:9"));
  }
  size_t setsockopts = 0;
  for (const auto& line : h.xsockd.Log()) setsockopts += line.rfind("setsockopt", 0) == 0;
  CHECK(setsockopts == 4);  // keepintvl, keepcnt, linger untouched
  // The receive timeout is kept here, where the waiting happens.
  timeval tv = {};
  socklen_t len = sizeof(tv);
  REQUIRE(h.core.GetSockOpt(*h.Routed(fd), fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &len).ok());
  CHECK(tv.tv_sec == 1);
  CHECK(tv.tv_usec == 500000);
  h.core.Close(fd);
}

TEST_CASE("O_NONBLOCK and FD_CLOEXEC carry over to the channel", "[interceptor]") {
  Harness h;
  const int plain = h.RoutedSocket();
  CHECK((fcntl(plain, F_GETFL) & O_NONBLOCK) == 0);
  CHECK((fcntl(plain, F_GETFD) & FD_CLOEXEC) == 0);
  const int flagged = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  CHECK(h.Connect(flagged, Addr("127.0.0.1", 9)).error() == 0);
  CHECK((fcntl(flagged, F_GETFL) & O_NONBLOCK) != 0);
  CHECK((fcntl(flagged, F_GETFD) & FD_CLOEXEC) != 0);
  h.core.Close(plain);
  h.core.Close(flagged);
}

TEST_CASE("a duplicate shares the socket, which is unmapped with its last descriptor",
          "[interceptor]") {
  Harness h;
  const int before = SocketMappings();
  const int fd = h.RoutedSocket();
  CHECK(SocketMappings() == before + 2);  // xsockd's and ours
  const int copy = dup(fd);
  h.core.AfterDup(fd, copy);
  CHECK(h.Routed(copy) == h.Routed(fd));
  REQUIRE(h.core.Close(fd).ok());
  CHECK(h.Routed(fd) == nullptr);
  CHECK(SocketMappings() == before + 2);
  REQUIRE(SendStr(h.Routed(copy), copy, "via the copy").ok());
  REQUIRE(h.xsockd.backend(1)->WaitReceived(12, 2000));
  REQUIRE(h.core.Close(copy).ok());
  CHECK(SocketMappings() == before + 1);  // only xsockd's left
}

TEST_CASE("dup2 over a routed descriptor and close_range forget it", "[interceptor]") {
  Harness h;
  const int before = SocketMappings();
  const int fd = h.RoutedSocket();
  const int kernel = socket(AF_INET, SOCK_STREAM, 0);
  h.core.BeforeReplace(fd);
  REQUIRE(dup2(kernel, fd) == fd);
  h.core.AfterDup(kernel, fd);
  CHECK(h.Routed(fd) == nullptr);
  CHECK(SocketMappings() == before + 1);
  // dup2 of a routed descriptor onto another number routes that number.
  const int a = h.RoutedSocket();
  const int b = h.RoutedSocket();
  h.core.BeforeReplace(kernel);
  REQUIRE(dup2(a, kernel) == kernel);
  h.core.AfterDup(a, kernel);
  CHECK(h.Routed(kernel) == h.Routed(a));
  const int lo = std::min({a, b, kernel}), hi = std::max({a, b, kernel});
  h.core.BeforeCloseRange(lo, hi, CLOSE_RANGE_CLOEXEC);  // closes nothing now
  CHECK(h.Routed(a) != nullptr);
  h.core.BeforeCloseRange(lo, hi, 0);
  // (The range also holds the fake xsockd's own descriptors: close only ours.)
  for (int fd2 : {a, b, kernel}) close(fd2);
  CHECK(h.Routed(a) == nullptr);
  CHECK(h.Routed(b) == nullptr);
  CHECK(h.Routed(kernel) == nullptr);
  CHECK(SocketMappings() == before + 3);
  close(fd);
}

TEST_CASE("a descriptor number reused after a close behind our back is not routed",
          "[interceptor]") {
  Harness h;
  const int fd = h.RoutedSocket();
  close(fd);  // e.g. fclose() of an fdopen()ed socket: libc's internal close
  const int again = socket(AF_INET, SOCK_STREAM, 0);
  REQUIRE(again == fd);
  h.core.AfterNewDescriptor(again);
  CHECK(h.Routed(again) == nullptr);
  close(again);
}

TEST_CASE("an epoll registration made before connect follows the socket onto the channel",
          "[interceptor]") {
  Harness h({.connect = FakeXsockd::ConnectMode::kInProgress, .complete_after_ms = 50});
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  auto register_then_connect = [&](bool shadowed) {
    const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (shadowed) h.core.AfterTcpSocket(fd);  // what the socket() hook does
    epoll_event ev = {};
    ev.events = EPOLLOUT | EPOLLET;
    ev.data.u64 = 1000 + static_cast<uint64_t>(fd);
    REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0);
    h.core.AfterEpollCtl(ep, EPOLL_CTL_ADD, fd, &ev);  // what the epoll_ctl hook does
    REQUIRE(h.Connect(fd, Addr("127.0.0.1", 9)).error() == EINPROGRESS);
    return fd;
  };
  SECTION("remembered registrations are re-added after the swap") {
    const int fd = register_then_connect(true);
    epoll_event out = {};
    REQUIRE(epoll_wait(ep, &out, 1, 3000) == 1);
    CHECK(out.data.u64 == 1000 + static_cast<uint64_t>(fd));
    CHECK((out.events & EPOLLOUT) != 0);
    CHECK(h.Routed(fd)->state() == SocketState::kConnected);  // not before completion
    h.core.Close(fd);
  }
  SECTION("without them the kernel drops the registration with the swapped socket") {
    const int fd = register_then_connect(false);
    epoll_event out = {};
    CHECK(epoll_wait(ep, &out, 1, 300) == 0);  // the pitfall the shadow exists for
    h.core.Close(fd);
  }
  close(ep);
}

TEST_CASE("getsockopt answers type, domain, protocol and acceptconn locally", "[interceptor]") {
  Harness h;
  const int fd = h.RoutedSocket();
  FrontSocket& s = *h.Routed(fd);
  auto get = [&](int level, int name) {
    int v = -1;
    socklen_t len = sizeof(v);
    const Result r = h.core.GetSockOpt(s, fd, level, name, &v, &len);
    return r.ok() ? v : -r.error();
  };
  CHECK(get(SOL_SOCKET, SO_TYPE) == SOCK_STREAM);
  CHECK(get(SOL_SOCKET, SO_DOMAIN) == AF_INET);
  CHECK(get(SOL_SOCKET, SO_PROTOCOL) == IPPROTO_TCP);
  CHECK(get(SOL_SOCKET, SO_ACCEPTCONN) == 0);
  CHECK(get(SOL_SOCKET, SO_ERROR) == 0);
  CHECK_FALSE(h.Logged("getsockopt 1 1/3 room 4"));
  // Everything else is xsockd's.
  CHECK(get(SOL_SOCKET, SO_RCVBUF) == 4242);
  CHECK(h.Logged("getsockopt 1 1/8 room 4"));
  uint16_t small = 0;
  socklen_t len = sizeof(small);
  REQUIRE(h.core.GetSockOpt(s, fd, IPPROTO_TCP, TCP_MAXSEG, &small, &len).ok());
  CHECK(len == 2);
  CHECK(h.Logged("getsockopt 1 6/2 room 2"));
  h.core.Close(fd);
}

TEST_CASE("setsockopt is forwarded, except the timeouts kept locally", "[interceptor]") {
  Harness h;
  const int fd = h.RoutedSocket();
  FrontSocket& s = *h.Routed(fd);
  const int one = 1;
  REQUIRE(h.core.SetSockOpt(s, fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)).ok());
  CHECK(h.Logged("setsockopt 1 6/1 len 4 = 1"));
  const timeval tv = {0, 250000};
  REQUIRE(h.core.SetSockOpt(s, fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)).ok());
  CHECK(s.GetTimeout(/*receive=*/false).tv_usec == 250000);
  const std::vector<char> huge(proto::kMaxOptLen + 1);
  CHECK(h.core.SetSockOpt(s, fd, SOL_SOCKET, SO_BINDTODEVICE, huge.data(), huge.size()).error() ==
        EINVAL);
  size_t setsockopts = 0;
  for (const auto& line : h.xsockd.Log()) setsockopts += line.rfind("setsockopt", 0) == 0;
  CHECK(setsockopts == 1);
  h.core.Close(fd);
}

TEST_CASE("getsockname and getpeername are forwarded and truncated like the kernel's",
          "[interceptor]") {
  Harness h;
  const int fd = h.RoutedSocket();
  FrontSocket& s = *h.Routed(fd);
  sockaddr_in a = {};
  socklen_t len = sizeof(a);
  REQUIRE(h.core.GetSockName(s, fd, reinterpret_cast<sockaddr*>(&a), &len).ok());
  CHECK(len == sizeof(sockaddr_in));
  CHECK(ntohs(a.sin_port) == 40000);
  REQUIRE(h.core.GetPeerName(s, fd, reinterpret_cast<sockaddr*>(&a), &len).ok());
  CHECK(ntohs(a.sin_port) == 9);
  CHECK(a.sin_addr.s_addr == htonl(INADDR_LOOPBACK));
  sockaddr_in partial = {};
  len = 4;
  REQUIRE(h.core.GetPeerName(s, fd, reinterpret_cast<sockaddr*>(&partial), &len).ok());
  CHECK(len == sizeof(sockaddr_in));    // the full length
  CHECK(ntohs(partial.sin_port) == 9);  // within the 4 bytes
  CHECK(partial.sin_addr.s_addr == 0);  // beyond them: untouched
  h.core.Close(fd);
}

TEST_CASE("shutdown is forwarded; after SHUT_RD reads return what is queued, then EOF",
          "[interceptor]") {
  Harness h;
  const int fd = h.RoutedSocket();
  FrontSocket* s = h.Routed(fd);
  CHECK(h.core.Shutdown(*s, fd, 7).error() == EINVAL);
  h.xsockd.backend(1)->Send("unread");
  REQUIRE(h.xsockd.backend(1)->WaitProduced(2000));
  REQUIRE(h.core.Shutdown(*s, fd, SHUT_RD).ok());
  CHECK(h.Logged("shutdown 1 0"));
  CHECK(RecvSome(s, fd) == "unread");  // as TCP: queued bytes are still read
  CHECK(RecvSome(s, fd).empty());      // then EOF, without waiting
  h.core.Close(fd);
}

TEST_CASE("ioctl answers FIONREAD and SIOCOUTQ from the rings", "[interceptor]") {
  Harness h;
  const int fd = h.RoutedSocket();
  FrontSocket* s = h.Routed(fd);
  h.xsockd.backend(1)->Send("12345");
  pollfd p = {fd, POLLIN, 0};
  REQUIRE(poll(&p, 1, 2000) == 1);
  int n = -1;
  Result r = Result::Ok(0);
  REQUIRE(h.core.Ioctl(*s, fd, FIONREAD, &n, &r));
  CHECK(r.ok());
  CHECK(n == 5);
  REQUIRE(h.core.Ioctl(*s, fd, SIOCOUTQ, &n, &r));
  CHECK(n == 0);
  CHECK_FALSE(h.core.Ioctl(*s, fd, FIONBIO, &n, &r));  // the channel's own
  h.core.Close(fd);
}

TEST_CASE("a forked child attaches the socket on its own connection before using it",
          "[interceptor]") {
  Harness h;
  const int fd = h.RoutedSocket();
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // No atfork handler here: the control client notices the new pid by itself.
    sockaddr_in a = {};
    socklen_t len = sizeof(a);
    FdRef ref = h.table.Find(fd);
    const Result r =
        h.core.GetPeerName(*ref.as<FrontSocket>(), fd, reinterpret_cast<sockaddr*>(&a), &len);
    _exit(r.ok() && ntohs(a.sin_port) == 9 ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(h.xsockd.connections() == 2);
  CHECK(h.Logged("attach 1"));
  CHECK(h.Position("attach 1") < h.Position("getpeername 1"));
  h.core.Close(fd);
}

TEST_CASE("xsockd honours a socket only on the connection that created or attached it",
          "[control_client]") {
  Harness h;
  const int fd = h.RoutedSocket();
  ControlClient stranger(LibcSyscalls(), h.xsockd.path());
  auto r = stranger.Call(proto::GetPeerNameRequest{1});
  REQUIRE(r.ok());
  CHECK(std::get<proto::GetPeerNameReply>(r->reply).err == EBADF);
  auto attached = stranger.CallForSocket(proto::GetPeerNameRequest{1}, 1, fd, 0);
  REQUIRE(attached.ok());
  CHECK(std::get<proto::GetPeerNameReply>(attached->reply).err == 0);
  h.core.Close(fd);
}

TEST_CASE("the control client reconnects after the app closed its descriptor", "[control_client]") {
  FakeXsockd xsockd({});
  ControlClient c(LibcSyscalls(), xsockd.path());
  REQUIRE(c.Call(proto::StatsRequest{}).ok());
  const uint64_t first = c.generation();
  int ours = -1;
  for (int fd = 0; fd < 1024 && ours < 0; ++fd) {
    if (c.IsOurs(fd)) ours = fd;
  }
  REQUIRE(ours >= 0);
  CHECK((fcntl(ours, F_GETFD) & FD_CLOEXEC) != 0);
  c.ForgetIfOurs(ours);  // what the close hook does
  close(ours);
  REQUIRE(c.Call(proto::StatsRequest{}).ok());
  CHECK(xsockd.connections() == 2);
  CHECK(c.generation() != first);
}

TEST_CASE("a reply that does not answer the request drops the connection", "[control_client]") {
  FakeXsockd xsockd({.wrong_seq = true});
  ControlClient c(LibcSyscalls(), xsockd.path());
  auto r = c.Call(proto::StatsRequest{});
  REQUIRE_FALSE(r.ok());
  CHECK(absl::IsDataLoss(r.status()));
  CHECK_THAT(std::string(r.status().message()), Catch::Contains("does not answer stats"));
  (void)c.Call(proto::StatsRequest{});
  CHECK(xsockd.connections() == 2);
}

TEST_CASE("an unreachable xsockd is reported with the path and errno", "[control_client]") {
  ControlClient c(LibcSyscalls(), "/nonexistent/dir/xsockd.sock");
  auto r = c.Call(proto::StatsRequest{});
  REQUIRE_FALSE(r.ok());
  CHECK(absl::IsUnavailable(r.status()));
  CHECK(r.status().message() == "cannot reach xsockd at /nonexistent/dir/xsockd.sock (ENOENT)");
}

}  // namespace xsock::intercept
