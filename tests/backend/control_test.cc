// xsockd's control plane, driven in-process: hello, socket creation, authority, attach,
// socket options, names, stats, and protocol errors.
#include <fcntl.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>

#include "test_client.h"

namespace xsock::testing {
namespace {

struct Routed {
  std::unique_ptr<AppSocket> app;
  UniqueFd peer;  // the host-side connection xsockd made
};

Routed ConnectRouted(Control& ctl, TcpListener& listener, uint32_t order = 0) {
  Routed r;
  r.app = AppSocket::Create(ctl, listener.family, order);
  const int err = r.app->Connect(ctl, listener.Addr());
  REQUIRE((err == 0 || err == EINPROGRESS));
  REQUIRE(r.app->WaitConnectDone() == SocketState::kConnected);
  r.peer = listener.Accept();
  REQUIRE(r.peer.valid());
  return r;
}

std::vector<uint8_t> IntBytes(int v) {
  std::vector<uint8_t> b(sizeof(v));
  std::memcpy(b.data(), &v, sizeof(v));
  return b;
}

proto::SockAddr NameOf(int fd, bool peer) {
  sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                      : getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  REQUIRE(rc == 0);
  return *proto::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

TEST_CASE("hello negotiates protocol 1 and only the capabilities both sides offer",
          "[backend][control]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());

  proto::HelloRequest too_new;
  too_new.min_version = 2;
  too_new.max_version = 3;
  CHECK(ctl.CallAs<proto::HelloReply>(too_new).err == EPROTONOSUPPORT);

  proto::HelloRequest hello;
  hello.caps = proto::kCapStats | (1u << 7);
  const auto reply = ctl.CallAs<proto::HelloReply>(hello);
  CHECK(reply.err == 0);
  CHECK(reply.version == proto::kVersion);
  CHECK(reply.caps == proto::kCapStats);
  CHECK(reply.server_pid == static_cast<uint32_t>(getpid()));
}

TEST_CASE("a request before hello disconnects the client with one log line", "[backend][control]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.SendRaw(proto::EncodeRequest(1, proto::StatsRequest{}));
  CHECK(ctl.WaitDisconnected());
  CHECK_FALSE(
      log.WaitFor({"level=warn", "event=protocol_error", "stats: request before hello"}).empty());
}

TEST_CASE("a second hello on one connection is a protocol error", "[backend][control]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  ctl.SendRaw(proto::EncodeRequest(2, proto::HelloRequest{}));
  CHECK(ctl.WaitDisconnected());
  CHECK_FALSE(log.WaitFor({"event=protocol_error", "hello: repeated"}).empty());
}

TEST_CASE("socket reply carries the channel end and a sealed memfd with an initialised page",
          "[backend][control]") {
  LogCapture log;
  TestServer server(/*ring_order=*/14);
  Control ctl(server.path());
  ctl.Hello();

  const uint32_t asked = GENERATE(0u, 12u, 20u);
  const uint32_t expected = asked == 0 ? 14 : asked;
  proto::SocketRequest req;
  req.domain = AF_INET;
  req.type = SOCK_STREAM;
  req.ring_order = asked;
  std::vector<UniqueFd> fds;
  const auto reply = ctl.CallAs<proto::SocketReply>(req, &fds);
  REQUIRE(reply.err == 0);
  CHECK(reply.ring_order == expected);
  CHECK(reply.socket_id != 0);
  REQUIRE(fds.size() == 2);

  // fds[0]: the channel, an AF_UNIX stream socket.
  int domain = 0, type = 0;
  socklen_t len = sizeof(int);
  REQUIRE(getsockopt(fds[0].get(), SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0);
  REQUIRE(getsockopt(fds[0].get(), SOL_SOCKET, SO_TYPE, &type, &len) == 0);
  CHECK(domain == AF_UNIX);
  CHECK(type == SOCK_STREAM);

  // fds[1]: the memfd, sized and sealed against resizing.
  struct stat st;
  REQUIRE(fstat(fds[1].get(), &st) == 0);
  CHECK(static_cast<size_t>(st.st_size) == SocketMemfdSize(expected));
  CHECK(fcntl(fds[1].get(), F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL));
  CHECK(ftruncate(fds[1].get(), 4096) == -1);
  CHECK(errno == EPERM);

  AppSocket app(std::move(fds[0]), std::move(fds[1]), reply.socket_id, reply.ring_order);
  SocketPage* page = app.page();
  CHECK(page->magic == kSocketPageMagic);
  CHECK(page->version == kSocketPageVersion);
  CHECK(page->ring_order == expected);
  CHECK(page->socket_id == reply.socket_id);
  CHECK(page->state.load() == static_cast<uint32_t>(SocketState::kIdle));
  CHECK(page->in_prod.value.load() == 0);
  CHECK(page->out_cons.value.load() == 0);
  // The app's locks are usable, process-shared and robust.
  CHECK(pthread_mutex_lock(&page->read_lock) == 0);
  CHECK(pthread_mutex_unlock(&page->read_lock) == 0);
  CHECK(pthread_mutex_lock(&page->write_lock) == 0);
  CHECK(pthread_mutex_unlock(&page->write_lock) == 0);
  CHECK_FALSE(log.WaitFor({"event=socket_create", "domain=inet"}).empty());
}

TEST_CASE("an IPv6 socket needs the IPv6 capability", "[backend][control]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello(proto::kCapStats);
  proto::SocketRequest req;
  req.domain = AF_INET6;
  req.type = SOCK_STREAM;
  CHECK(ctl.CallAs<proto::SocketReply>(req).err == EAFNOSUPPORT);
}

TEST_CASE("getsockname and getpeername report the host socket's addresses", "[backend][control]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  const int family = GENERATE(AF_INET, AF_INET6);
  auto listener = TcpListener::Open(family);
  Routed r = ConnectRouted(ctl, listener);

  const auto name = ctl.CallAs<proto::GetSockNameReply>(proto::GetSockNameRequest{r.app->id()});
  const auto peer = ctl.CallAs<proto::GetPeerNameReply>(proto::GetPeerNameRequest{r.app->id()});
  REQUIRE(name.err == 0);
  REQUIRE(peer.err == 0);
  CHECK(name.addr == NameOf(r.peer.get(), /*peer=*/true));
  CHECK(peer.addr == NameOf(r.peer.get(), /*peer=*/false));
  CHECK(peer.addr == listener.Addr());
}

TEST_CASE("getpeername of a socket that is not connected is ENOTCONN", "[backend][control]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto app = AppSocket::Create(ctl, AF_INET);
  CHECK(ctl.CallAs<proto::GetPeerNameReply>(proto::GetPeerNameRequest{app->id()}).err == ENOTCONN);
}

TEST_CASE("setsockopt TCP_NODELAY then getsockopt reads 1", "[backend][control]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  Routed r = ConnectRouted(ctl, listener);

  proto::SetSockOptRequest set;
  set.socket_id = r.app->id();
  set.level = IPPROTO_TCP;
  set.optname = TCP_NODELAY;
  set.value = IntBytes(1);
  CHECK(ctl.CallAs<proto::SetSockOptReply>(set).err == 0);

  proto::GetSockOptRequest get;
  get.socket_id = r.app->id();
  get.level = IPPROTO_TCP;
  get.optname = TCP_NODELAY;
  get.optlen = sizeof(int);
  const auto reply = ctl.CallAs<proto::GetSockOptReply>(get);
  REQUIRE(reply.err == 0);
  REQUIRE(reply.value.size() == sizeof(int));
  int v = 0;
  std::memcpy(&v, reply.value.data(), sizeof(v));
  CHECK(v == 1);
}

TEST_CASE("socket options that need privilege or redirect traffic are refused",
          "[backend][control]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto app = AppSocket::Create(ctl, AF_INET);

  auto set = [&](int level, int name, std::vector<uint8_t> value) {
    proto::SetSockOptRequest req;
    req.socket_id = app->id();
    req.level = level;
    req.optname = name;
    req.value = std::move(value);
    return ctl.CallAs<proto::SetSockOptReply>(req).err;
  };
  CHECK(set(SOL_SOCKET, SO_MARK, IntBytes(7)) == ENOPROTOOPT);
  CHECK(set(SOL_SOCKET, SO_BINDTODEVICE, {'l', 'o', 0}) == ENOPROTOOPT);
  CHECK(set(IPPROTO_IP, IP_TRANSPARENT, IntBytes(1)) == ENOPROTOOPT);
  CHECK(set(SOL_SOCKET, SO_PRIORITY, IntBytes(7)) == EPERM);
  CHECK(set(SOL_SOCKET, SO_PRIORITY, IntBytes(3)) == 0);
  CHECK(set(SOL_SOCKET, SO_ERROR, IntBytes(0)) == ENOPROTOOPT);  // read-only

  // A linger with a timeout is recorded (xsockd must not block in close) and read back.
  const struct linger l = {1, 5};
  std::vector<uint8_t> lb(sizeof(l));
  std::memcpy(lb.data(), &l, sizeof(l));
  CHECK(set(SOL_SOCKET, SO_LINGER, lb) == 0);
  proto::GetSockOptRequest get;
  get.socket_id = app->id();
  get.level = SOL_SOCKET;
  get.optname = SO_LINGER;
  get.optlen = sizeof(l);
  const auto reply = ctl.CallAs<proto::GetSockOptReply>(get);
  REQUIRE(reply.err == 0);
  REQUIRE(reply.value.size() == sizeof(l));
  struct linger back;
  std::memcpy(&back, reply.value.data(), sizeof(back));
  CHECK(back.l_onoff == 1);
  CHECK(back.l_linger == 5);
}

TEST_CASE("attach from a second control connection yields the same socket and memory",
          "[backend][control]") {
  LogCapture log;
  TestServer server;
  Control first(server.path());
  first.Hello();
  auto listener = TcpListener::Open(AF_INET);
  Routed r = ConnectRouted(first, listener);

  Control second(server.path());
  second.Hello();
  const int channel = r.app->channel();
  std::vector<UniqueFd> fds;
  const auto reply = second.CallAs<proto::AttachReply>(proto::AttachRequest{}, &fds,
                                                       std::span<const int>(&channel, 1));
  REQUIRE(reply.err == 0);
  CHECK(reply.socket_id == r.app->id());
  CHECK(reply.ring_order == r.app->order());
  CHECK(reply.state == static_cast<uint32_t>(SocketState::kConnected));
  REQUIRE(fds.size() == 1);
  struct stat a, b;
  REQUIRE(fstat(fds[0].get(), &a) == 0);
  REQUIRE(fstat(r.app->memfd(), &b) == 0);
  CHECK(a.st_ino == b.st_ino);
  CHECK_FALSE(log.WaitFor({"event=attach", "socket=" + std::to_string(r.app->id())}).empty());

  // The attaching connection now has authority over the socket...
  CHECK(second.CallAs<proto::GetPeerNameReply>(proto::GetPeerNameRequest{reply.socket_id}).err ==
        0);
  // ...and its own mapping sees the same rings: bytes from the host arrive through it.
  AppSocket attached(UniqueFd(dup(channel)), std::move(fds[0]), reply.socket_id, reply.ring_order);
  const std::vector<uint8_t> hello = {'h', 'i'};
  REQUIRE(SendAll(r.peer.get(), hello));
  uint8_t buf[2];
  REQUIRE(attached.Read(buf, 2) == 2);
  CHECK(std::vector<uint8_t>(buf, buf + 2) == hello);
}

TEST_CASE("attach of a descriptor xsockd did not make is refused", "[backend][control]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  int pipefd[2];
  REQUIRE(pipe2(pipefd, O_CLOEXEC) == 0);
  UniqueFd r(pipefd[0]), w(pipefd[1]);
  const int p = r.get();
  CHECK(ctl.CallAs<proto::AttachReply>(proto::AttachRequest{}, nullptr, std::span<const int>(&p, 1))
            .err == ENOTSOCK);
  int pair[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
  UniqueFd s0(pair[0]), s1(pair[1]);
  const int s = s0.get();
  CHECK(ctl.CallAs<proto::AttachReply>(proto::AttachRequest{}, nullptr, std::span<const int>(&s, 1))
            .err == EBADF);
}

TEST_CASE("a socket id of another control connection gets EBADF", "[backend][control]") {
  TestServer server;
  Control owner(server.path());
  owner.Hello();
  auto app = AppSocket::Create(owner, AF_INET);
  Control other(server.path());
  other.Hello();

  for (const uint64_t id : {app->id(), uint64_t{999999}}) {
    CHECK(other.CallAs<proto::ConnectReply>(proto::ConnectRequest{id, LoopbackAddr(AF_INET, 9)})
              .err == EBADF);
    CHECK(other.CallAs<proto::GetSockNameReply>(proto::GetSockNameRequest{id}).err == EBADF);
    CHECK(other.CallAs<proto::GetPeerNameReply>(proto::GetPeerNameRequest{id}).err == EBADF);
    CHECK(other.CallAs<proto::ShutdownReply>(proto::ShutdownRequest{id, SHUT_WR}).err == EBADF);
    proto::SetSockOptRequest set;
    set.socket_id = id;
    set.level = IPPROTO_TCP;
    set.optname = TCP_NODELAY;
    set.value = IntBytes(1);
    CHECK(other.CallAs<proto::SetSockOptReply>(set).err == EBADF);
    proto::GetSockOptRequest get;
    get.socket_id = id;
    get.level = IPPROTO_TCP;
    get.optname = TCP_NODELAY;
    get.optlen = 4;
    CHECK(other.CallAs<proto::GetSockOptReply>(get).err == EBADF);
    CHECK(other.CallAs<proto::ReleaseReply>(proto::ReleaseRequest{id}).err == EBADF);
  }
  // The owner still has it.
  CHECK(owner.CallAs<proto::GetSockNameReply>(proto::GetSockNameRequest{app->id()}).err == 0);
}

TEST_CASE("a malformed control message disconnects only that client", "[backend][control]") {
  LogCapture log;
  TestServer server;
  Control bad(server.path());
  bad.Hello();
  Control good(server.path());
  good.Hello();
  // A socket made through the connection that will misbehave lives on its channel, not on
  // the connection: it keeps working after the connection is dropped.
  auto listener = TcpListener::Open(AF_INET);
  Routed r = ConnectRouted(bad, listener);

  std::string reason;
  SECTION("garbage bytes") {
    const std::vector<uint8_t> garbage(40, 0xAB);
    bad.SendRaw(garbage);
    reason = "header.magic";
  }
  SECTION("a socket request with a descriptor attached") {
    proto::SocketRequest req;
    req.domain = AF_INET;
    req.type = SOCK_STREAM;
    const int fd = listener.fd.get();
    bad.SendRaw(proto::EncodeRequest(9, req), std::span<const int>(&fd, 1));
    reason = "socket: 1 descriptors attached, expected 0";
  }
  SECTION("an attach without its descriptor") {
    bad.SendRaw(proto::EncodeRequest(9, proto::AttachRequest{}));
    reason = "attach: 0 descriptors attached, expected 1";
  }
  SECTION("a packet longer than the largest message") {
    const std::vector<uint8_t> big(proto::kMaxMessageSize + 100, 0);
    bad.SendRaw(big);
    reason = "message longer than";
  }
  SECTION("a connect with an invalid address family") {
    auto bytes = proto::EncodeRequest(9, proto::ConnectRequest{r.app->id(), listener.Addr()});
    bytes[proto::kHeaderSize + 8] = 3;  // addr.family
    bad.SendRaw(bytes);
    reason = "connect.addr.family: 3";
  }
  CHECK(bad.WaitDisconnected());
  const std::string line = log.WaitFor({"level=warn", "event=protocol_error", reason});
  CHECK_FALSE(line.empty());
  // Exactly one line about this client going away.
  const std::string client = "client=1 ";
  int lines = 0;
  for (const std::string& l : log.Lines()) {
    if (l.find(client) != std::string::npos &&
        (l.find("event=protocol_error") != std::string::npos ||
         l.find("event=client_disconnect") != std::string::npos)) {
      ++lines;
    }
  }
  CHECK(lines == 1);

  CHECK(Eventually([&] { return good.Stats().clients_now == 1; }));
  const std::vector<uint8_t> data = Pattern(1000, 3);
  REQUIRE(r.app->WriteAll(data.data(), data.size()));
  std::vector<uint8_t> got(data.size());
  REQUIRE(RecvExactly(r.peer.get(), got));
  CHECK(Diff(got, data) == "");
}

TEST_CASE("stats count clients, sockets, connects and bytes", "[backend][control]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto s = ctl.Stats();
  CHECK(s.clients_now == 1);
  CHECK(s.clients_total == 1);
  CHECK(s.sockets_now == 0);

  {
    Control other(server.path());
    other.Hello();
    CHECK(ctl.Stats().clients_now == 2);
  }
  CHECK(Eventually([&] { return ctl.Stats().clients_now == 1; }));
  CHECK(ctl.Stats().clients_total == 2);

  auto listener = TcpListener::Open(AF_INET);
  Routed r = ConnectRouted(ctl, listener);
  auto refused = AppSocket::Create(ctl, AF_INET);
  const int err = refused->Connect(ctl, LoopbackAddr(AF_INET, ClosedPort(AF_INET)));
  if (err == EINPROGRESS) CHECK(refused->WaitConnectDone() == SocketState::kFailed);
  s = ctl.Stats();
  CHECK(s.sockets_now == 2);
  CHECK(s.sockets_total == 2);
  CHECK(s.connects_ok == 1);
  CHECK(s.connects_failed == 1);
  CHECK(s.bytes_to_host == 0);
  CHECK(s.bytes_from_host == 0);

  const std::vector<uint8_t> out = Pattern(1000, 1), in = Pattern(2000, 2);
  REQUIRE(r.app->WriteAll(out.data(), out.size()));
  std::vector<uint8_t> got(out.size());
  REQUIRE(RecvExactly(r.peer.get(), got));
  REQUIRE(SendAll(r.peer.get(), in));
  std::vector<uint8_t> back(in.size());
  size_t have = 0;
  while (have < back.size()) {
    const ssize_t n = r.app->Read(back.data() + have, back.size() - have);
    REQUIRE(n > 0);
    have += static_cast<size_t>(n);
  }
  s = ctl.Stats();
  CHECK(s.bytes_to_host == 1000);
  CHECK(s.bytes_from_host == 2000);

  r.app->CloseChannel();
  refused->CloseChannel();
  CHECK(Eventually([&] { return ctl.Stats().sockets_now == 0; }));
  CHECK(ctl.Stats().sockets_total == 2);
}

TEST_CASE("stats need the stats capability", "[backend][control]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello(proto::kCapIpv6);
  CHECK(ctl.CallAs<proto::StatsReply>(proto::StatsRequest{}).err == EOPNOTSUPP);
}

TEST_CASE("a client that does not read its replies is served once it does", "[backend][control]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  // Queue many requests without reading: xsockd stops reading once a reply does not fit and
  // resumes when there is room, so every request is answered, in order.
  constexpr int kRequests = 3000;
  const auto bytes = proto::EncodeRequest(0, proto::StatsRequest{});
  int sent = 0;
  while (sent < kRequests) {
    auto b = proto::EncodeRequest(static_cast<uint32_t>(100 + sent), proto::StatsRequest{});
    const ssize_t n = send(ctl.fd(), b.data(), b.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n < 0) {
      REQUIRE(errno == EAGAIN);
      break;  // our send queue is full too; read what is there
    }
    ++sent;
  }
  REQUIRE(sent > 0);
  for (int i = 0; i < sent; ++i) {
    pollfd p = {ctl.fd(), POLLIN, 0};
    REQUIRE(poll(&p, 1, kTimeoutMs) == 1);
    uint8_t buf[proto::kMaxMessageSize];
    const ssize_t n = recv(ctl.fd(), buf, sizeof(buf), 0);
    REQUIRE(n > 0);
    auto decoded = proto::DecodeReply(std::span<const uint8_t>(buf, static_cast<size_t>(n)));
    REQUIRE(decoded.ok());
    REQUIRE(decoded->seq == static_cast<uint32_t>(100 + i));
  }
  (void)bytes;
}

}  // namespace
}  // namespace xsock::testing
