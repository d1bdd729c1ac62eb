// Server-side sockets in xsockd (docs/channel.md, "Bound and listening sockets"): bind,
// bind before connect, listen, the accept loop and its records on the listener channel,
// the backlog bound, closing a listener, attach of a listener, SO_LINGER on close, and
// hostile requests. Driven in-process as the library would, with kernel TCP peers on
// loopback.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <set>
#include <string>

#include "backend/host_listener.h"
#include "test_client.h"

namespace xsock::testing {
namespace {

proto::SetSockOptRequest IntOpt(uint64_t id, int level, int name, int value) {
  proto::SetSockOptRequest req;
  req.socket_id = id;
  req.level = level;
  req.optname = name;
  req.value.resize(sizeof(value));
  std::memcpy(req.value.data(), &value, sizeof(value));
  return req;
}

proto::BindReply Bind(Control& ctl, uint64_t id, const proto::SockAddr& addr) {
  return ctl.CallAs<proto::BindReply>(proto::BindRequest{id, addr});
}

// listen request; on success returns the listener channel's app end (else invalid; *err
// gets the reply's err).
UniqueFd Listen(Control& ctl, uint64_t id, int backlog, int* err = nullptr) {
  std::vector<UniqueFd> fds;
  const auto reply = ctl.CallAs<proto::ListenReply>(proto::ListenRequest{id, backlog}, &fds);
  if (err != nullptr) *err = reply.err;
  if (reply.err != 0) {
    CHECK(fds.empty());
    return UniqueFd();
  }
  REQUIRE(fds.size() == 1);
  return std::move(fds[0]);
}

// A bound, listening routed socket.
struct RoutedListener {
  std::unique_ptr<AppSocket> app;  // the socket before listen (its stream end is closed)
  UniqueFd channel;                // listener channel, app end
  proto::SockAddr addr;            // as bound (port 0 -> the real one)
};

RoutedListener ListenRouted(Control& ctl, int family, int backlog = 16) {
  RoutedListener l;
  l.app = AppSocket::Create(ctl, family);
  const auto bound = Bind(ctl, l.app->id(), LoopbackAddr(family, 0));
  REQUIRE(bound.err == 0);
  l.addr = bound.addr;
  REQUIRE(l.addr.port != 0);
  l.channel = Listen(ctl, l.app->id(), backlog);
  REQUIRE(l.channel.valid());
  // As the library does: its stream channel end is replaced by the listener channel, which
  // it makes unwritable (smallest send buffer, filled with packets xsockd never reads), as
  // a kernel listening socket never polls writable.
  l.app->CloseChannel();
  const int one = 1;
  REQUIRE(setsockopt(l.channel.get(), SOL_SOCKET, SO_SNDBUF, &one, sizeof(one)) == 0);
  static const char kFill[256] = {};
  for (int i = 0; i < 256 && send(l.channel.get(), kFill, sizeof(kFill), MSG_DONTWAIT) > 0; ++i) {
  }
  return l;
}

struct Accepted {
  proto::AcceptRecord record;
  std::unique_ptr<AppSocket> app;
};

// Receives one record (waiting up to timeout_ms); app is null on timeout or a bad record.
// Another process may take the record this one was woken for: it waits again then.
Accepted ReceiveRecord(int channel, int timeout_ms = kTimeoutMs, std::string* why = nullptr) {
  Accepted a;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  ssize_t n = -1;
  uint8_t buf[proto::kAcceptRecordSize + 1];
  iovec iov = {buf, sizeof(buf)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 4)];
  msghdr msg = {};
  while (n < 0) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd p = {channel, POLLIN, 0};
    if (left <= 0 || poll(&p, 1, static_cast<int>(left)) != 1) {
      if (why) *why = "no record";
      return a;
    }
    msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof(control);
    n = recvmsg(channel, &msg, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN && errno != EINTR) {
      if (why) *why = std::string("recvmsg: ") + strerror(errno);
      return a;
    }
  }
  std::vector<UniqueFd> fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    for (size_t i = 0; i < (c->cmsg_len - CMSG_LEN(0)) / sizeof(int); ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(fd));
      fds.emplace_back(fd);
    }
  }
  auto rec = proto::DecodeAcceptRecord({buf, static_cast<size_t>(n)});
  if (!rec.ok() || fds.size() != 2 || (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC))) {
    if (why) *why = "bad record: " + rec.status().ToString() + " fds=" + std::to_string(fds.size());
    return a;
  }
  a.record = *rec;
  a.app = std::make_unique<AppSocket>(std::move(fds[0]), std::move(fds[1]), rec->socket_id,
                                      rec->ring_order);
  // As the library's accept(): the connection is the application's now.
  a.app->page()->app_accepted.store(1, std::memory_order_release);
  return a;
}

// A kernel TCP client connected to addr (blocking), or invalid.
UniqueFd KernelConnect(const proto::SockAddr& addr) {
  UniqueFd fd(socket(addr.family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_storage ss;
  const socklen_t len = proto::ToSockaddr(addr, &ss);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&ss), len) != 0) return UniqueFd();
  return fd;
}

proto::SockAddr Name(int fd, bool peer) {
  sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  const int rc = peer ? getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len)
                      : getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  REQUIRE(rc == 0);
  return *proto::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), len);
}

// Routed sockets alive beyond the ones a test started with.
uint64_t SocketsNow(Control& ctl) { return ctl.Stats().sockets_now; }

TEST_CASE(
    "bind port 0 reports the real port; a kernel client's connection arrives as a record "
    "and carries 4 MiB each way",
    "[backend][listen]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  const int family = GENERATE(AF_INET, AF_INET6);
  RoutedListener l = ListenRouted(ctl, family);
  CHECK(l.addr == LoopbackAddr(family, l.addr.port));
  const auto named = ctl.CallAs<proto::GetSockNameReply>(proto::GetSockNameRequest{l.app->id()});
  CHECK(named.err == 0);
  CHECK(named.addr == l.addr);
  int type = 0;
  socklen_t tl = sizeof(type);
  REQUIRE(getsockopt(l.channel.get(), SOL_SOCKET, SO_TYPE, &type, &tl) == 0);
  CHECK(type == SOCK_SEQPACKET);
  // Nothing queued yet: not readable.
  pollfd p = {l.channel.get(), POLLIN, 0};
  CHECK(poll(&p, 1, 0) == 0);

  UniqueFd client = KernelConnect(l.addr);
  REQUIRE(client.valid());
  std::string why;
  Accepted a = ReceiveRecord(l.channel.get(), kTimeoutMs, &why);
  INFO(why);
  REQUIRE(a.app != nullptr);
  CHECK(a.record.local == l.addr);
  CHECK(a.record.peer == Name(client.get(), /*peer=*/false));
  CHECK(a.record.ring_order == kDefaultRingOrder);
  CHECK(a.record.socket_id != l.app->id());
  CHECK(a.app->page()->state.load() == static_cast<uint32_t>(SocketState::kConnected));
  CHECK(a.app->page()->socket_id == a.record.socket_id);
  // Writable at once, nothing to read.
  CHECK((a.app->Poll(POLLIN | POLLOUT) & (POLLIN | POLLOUT)) == POLLOUT);

  constexpr size_t kBytes = 4 << 20;
  const std::vector<uint8_t> up = Pattern(kBytes, 21), down = Pattern(kBytes, 22);
  bool client_sent = false, client_got_ok = false, app_sent = false;
  std::vector<uint8_t> client_got(kBytes);
  ScopedThread cw([&] { client_sent = SendAll(client.get(), down, 60000); }, client.get());
  ScopedThread cr([&] { client_got_ok = RecvExactly(client.get(), client_got, 60000); },
                  client.get());
  ScopedThread aw([&] { app_sent = a.app->WriteAll(up.data(), up.size(), 60000); });
  std::vector<uint8_t> app_got(kBytes);
  size_t have = 0;
  while (have < kBytes) {
    const ssize_t n = a.app->Read(app_got.data() + have, kBytes - have, 60000);
    if (n <= 0) break;
    have += static_cast<size_t>(n);
  }
  aw.join();
  cw.join();
  cr.join();
  CHECK(app_sent);
  CHECK(client_sent);
  CHECK(client_got_ok);
  CHECK(have == kBytes);
  CHECK(Fnv1a(app_got) == Fnv1a(down));
  CHECK(Fnv1a(client_got) == Fnv1a(up));

  // The app closes: the client reads end of stream.
  a.app->CloseChannel();
  int err = -1;
  CHECK(RecvToEof(client.get(), &err).empty());
  CHECK(err == 0);
  const std::string bound = proto::ToString(l.addr);
  CHECK_FALSE(log.WaitFor({"event=bind", "bound=" + bound}).empty());
  CHECK_FALSE(log.WaitFor({"event=listen", "addr=" + bound, "backlog=16"}).empty());
  CHECK_FALSE(
      log.WaitFor({"event=accept", "local=" + bound, "peer=" + proto::ToString(a.record.peer)})
          .empty());
}

TEST_CASE("several connections are accepted as distinct sockets, each with its own stream",
          "[backend][listen]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  RoutedListener l = ListenRouted(ctl, AF_INET);
  constexpr int kClients = 6;
  std::vector<UniqueFd> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(KernelConnect(l.addr));
    REQUIRE(clients.back().valid());
    const std::string hello = "client " + std::to_string(i);
    REQUIRE(SendAll(clients.back().get(),
                    {reinterpret_cast<const uint8_t*>(hello.data()), hello.size()}));
  }
  std::set<uint64_t> ids;
  std::set<std::string> greetings;
  std::vector<Accepted> accepted(kClients);
  for (Accepted& a : accepted) {
    a = ReceiveRecord(l.channel.get());
    REQUIRE(a.app != nullptr);
    ids.insert(a.record.socket_id);
    // The peer's bytes were pumped before the app took the record.
    char buf[32] = {};
    const ssize_t n = a.app->Read(buf, sizeof(buf));
    REQUIRE(n > 0);
    const std::string got(buf, static_cast<size_t>(n));
    greetings.insert(got);
    // Echo back to the client that sent it (by its port).
    const std::string echo = "echo " + got;
    REQUIRE(a.app->WriteAll(echo.data(), echo.size()));
    bool matched = false;
    for (auto& c : clients) {
      if (Name(c.get(), false) == a.record.peer) {
        std::vector<uint8_t> back(echo.size());
        REQUIRE(RecvExactly(c.get(), back));
        CHECK(std::string(back.begin(), back.end()) == echo);
        matched = true;
      }
    }
    CHECK(matched);
  }
  CHECK(ids.size() == kClients);
  CHECK(greetings.size() == kClients);
  CHECK(SocketsNow(ctl) == 1 + kClients);
  // Closing the accepted sockets frees them; the listener stays.
  accepted.clear();
  CHECK(Eventually([&] { return SocketsNow(ctl) == 1; }));
  pollfd p = {l.channel.get(), POLLIN | POLLOUT, 0};
  CHECK(poll(&p, 1, 0) == 0);  // nothing queued, never writable
}

// Child side of the fork test: takes one record from the inherited listener channel,
// attaches the new socket on its own control connection and writes its pid through it.
// Exit status says what failed (no Catch assertions in a forked child).
int ChildAcceptOne(const std::string& path, int channel) {
  try {
    Accepted a = ReceiveRecord(channel);
    if (a.app == nullptr) return 10;
    Control ctl(path);
    ctl.Hello();
    const int fds[] = {a.app->channel()};
    std::vector<UniqueFd> got;
    const auto reply = ctl.CallAs<proto::AttachReply>(proto::AttachRequest{}, &got, fds);
    if (reply.err != 0 || reply.socket_id != a.record.socket_id || got.size() != 1 ||
        reply.state != static_cast<uint32_t>(SocketState::kConnected)) {
      return 11;
    }
    // Authority through attach: getpeername answers for this process.
    const auto peer =
        ctl.CallAs<proto::GetPeerNameReply>(proto::GetPeerNameRequest{reply.socket_id});
    if (peer.err != 0 || !(peer.addr == a.record.peer)) return 12;
    const std::string msg = "pid " + std::to_string(getpid());
    if (!a.app->WriteAll(msg.data(), msg.size())) return 13;
    a.app->CloseChannel();
    return 0;
  } catch (...) {
    return 14;
  }
}

TEST_CASE("two processes accepting on one inherited listener channel get distinct connections",
          "[backend][listen]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  RoutedListener l = ListenRouted(ctl, AF_INET);
  std::vector<pid_t> children;
  for (int i = 0; i < 2; ++i) {
    const pid_t pid = fork();
    REQUIRE(pid >= 0);
    if (pid == 0) _exit(ChildAcceptOne(server.path(), l.channel.get()));
    children.push_back(pid);
  }
  std::set<std::string> answers;
  std::vector<UniqueFd> clients;
  for (int i = 0; i < 2; ++i) {
    clients.push_back(KernelConnect(l.addr));
    REQUIRE(clients.back().valid());
  }
  for (auto& c : clients) {
    int err = -1;
    const auto got = RecvToEof(c.get(), &err);
    CHECK(err == 0);
    answers.insert(std::string(got.begin(), got.end()));
  }
  std::set<std::string> expected;
  for (pid_t pid : children) {
    int status = -1;
    REQUIRE(waitpid(pid, &status, 0) == pid);
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    expected.insert("pid " + std::to_string(pid));
  }
  CHECK(answers == expected);
}

TEST_CASE("a second bind to a bound port fails with EADDRINUSE unless both set SO_REUSEPORT",
          "[backend][listen]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  RoutedListener first = ListenRouted(ctl, AF_INET);
  auto second = AppSocket::Create(ctl, AF_INET);
  const auto refused = Bind(ctl, second->id(), first.addr);
  CHECK(refused.err == EADDRINUSE);
  CHECK(refused.addr == proto::SockAddr{});
  CHECK_FALSE(log.WaitFor({"event=bind_failed", "errno=EADDRINUSE"}).empty());
  // The failed bind left the socket usable: another port binds.
  CHECK(Bind(ctl, second->id(), LoopbackAddr(AF_INET, 0)).err == 0);

  auto a = AppSocket::Create(ctl, AF_INET);
  auto b = AppSocket::Create(ctl, AF_INET);
  for (auto* s : {a.get(), b.get()}) {
    REQUIRE(ctl.CallAs<proto::SetSockOptReply>(IntOpt(s->id(), SOL_SOCKET, SO_REUSEPORT, 1)).err ==
            0);
  }
  const auto ba = Bind(ctl, a->id(), LoopbackAddr(AF_INET, 0));
  REQUIRE(ba.err == 0);
  const auto bb = Bind(ctl, b->id(), ba.addr);
  CHECK(bb.err == 0);
  CHECK(bb.addr == ba.addr);
  CHECK(Listen(ctl, a->id(), 4).valid());
  CHECK(Listen(ctl, b->id(), 4).valid());
}

TEST_CASE("a port is free again as soon as the app closes the socket bound to it",
          "[backend][listen]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  const bool listening = GENERATE(false, true);
  INFO((listening ? "listening" : "bound"));
  auto a = AppSocket::Create(ctl, AF_INET);
  const auto bound = Bind(ctl, a->id(), LoopbackAddr(AF_INET, 0));
  REQUIRE(bound.err == 0);
  UniqueFd channel;
  if (listening) {
    channel = Listen(ctl, a->id(), 4);
    REQUIRE(channel.valid());
  }
  auto b = AppSocket::Create(ctl, AF_INET);
  CHECK(Bind(ctl, b->id(), bound.addr).err == EADDRINUSE);
  // close() then bind() at once, as a program does: no wait for xsockd to notice.
  a->CloseChannel();
  channel.reset();
  const auto again = Bind(ctl, b->id(), bound.addr);
  CHECK(again.err == 0);
  CHECK(again.addr == bound.addr);
}

TEST_CASE("bind before connect keeps the source port the peer sees", "[backend][listen]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  const int family = GENERATE(AF_INET, AF_INET6);
  auto host = TcpListener::Open(family);
  auto app = AppSocket::Create(ctl, family);
  const auto bound = Bind(ctl, app->id(), LoopbackAddr(family, 0));
  REQUIRE(bound.err == 0);
  const int err = app->Connect(ctl, host.Addr());
  REQUIRE((err == 0 || err == EINPROGRESS));
  REQUIRE(app->WaitConnectDone() == SocketState::kConnected);
  UniqueFd peer = host.Accept();
  REQUIRE(peer.valid());
  CHECK(Name(peer.get(), /*peer=*/true) == bound.addr);
  const auto named = ctl.CallAs<proto::GetSockNameReply>(proto::GetSockNameRequest{app->id()});
  CHECK(named.addr == bound.addr);
  // Connected: bind and listen are refused as by the kernel.
  CHECK(Bind(ctl, app->id(), LoopbackAddr(family, 0)).err == EINVAL);
  int lerr = 0;
  CHECK_FALSE(Listen(ctl, app->id(), 4, &lerr).valid());
  CHECK(lerr == EINVAL);
}

TEST_CASE("listen on an unbound socket autobinds, as the kernel does", "[backend][listen]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto app = AppSocket::Create(ctl, AF_INET);
  UniqueFd channel = Listen(ctl, app->id(), 1);
  REQUIRE(channel.valid());
  const auto named = ctl.CallAs<proto::GetSockNameReply>(proto::GetSockNameRequest{app->id()});
  REQUIRE(named.err == 0);
  CHECK(named.addr.port != 0);
  UniqueFd client = KernelConnect(LoopbackAddr(AF_INET, named.addr.port));
  REQUIRE(client.valid());
  Accepted a = ReceiveRecord(channel.get());
  REQUIRE(a.app != nullptr);
  CHECK(a.record.local == LoopbackAddr(AF_INET, named.addr.port));
}

TEST_CASE("closing the listener channel closes the host listener and frees queued connections",
          "[backend][listen]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  const uint64_t baseline = SocketsNow(ctl);
  RoutedListener l = ListenRouted(ctl, AF_INET);
  constexpr int kClients = 3;
  std::vector<UniqueFd> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.push_back(KernelConnect(l.addr));
    REQUIRE(clients.back().valid());
  }
  // All three accepted by xsockd and waiting in the channel.
  REQUIRE(Eventually([&] { return SocketsNow(ctl) == baseline + 1 + kClients; }));
  l.channel.reset();
  CHECK(Eventually([&] { return SocketsNow(ctl) == baseline; }));
  CHECK_FALSE(log.WaitFor({"event=listener_closed", "accepted=3"}).empty());
  // Never accepted by the app: their peers are reset, as by a kernel listener's close, and
  // the port no longer accepts.
  for (auto& c : clients) {
    int err = -1;
    RecvToEof(c.get(), &err);
    CHECK(err == ECONNRESET);
  }
  CHECK_FALSE(log.WaitFor({"event=socket_closed", "close=never_accepted"}).empty());
  CHECK_FALSE(KernelConnect(l.addr).valid());
}

TEST_CASE("with backlog 2 and nobody accepting, xsockd accepts only what the channel holds",
          "[backend][listen]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  constexpr int kBacklog = 2;
  // How many records a channel end with xsockd's send buffer holds, measured here the same
  // way: a scratch pair with that SO_SNDBUF, filled with 80-byte packets.
  int fits = 0;
  {
    int pair[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) == 0);
    UniqueFd a(pair[0]), b(pair[1]);
    const int sndbuf = backend::ListenerSendBuffer(kBacklog);
    REQUIRE(sndbuf > 0);
    REQUIRE(setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)) == 0);
    const uint8_t rec[proto::kAcceptRecordSize] = {};
    while (fits < 1000 && send(a.get(), rec, sizeof(rec), MSG_DONTWAIT) > 0) ++fits;
  }
  INFO("records that fit: " << fits << ", record cost " << backend::AcceptRecordCost());
  CHECK(fits >= kBacklog);
  CHECK(fits <= 8);  // about the backlog, not the default buffer's hundreds

  const uint64_t baseline = SocketsNow(ctl);
  RoutedListener l = ListenRouted(ctl, AF_INET, kBacklog);
  // fits records in the channel, one connection held by xsockd, two in the host's queue.
  const int clients_n = fits + 1 + 2;
  std::vector<UniqueFd> clients;
  for (int i = 0; i < clients_n; ++i) {
    clients.push_back(KernelConnect(l.addr));
    REQUIRE(clients.back().valid());
  }
  REQUIRE_FALSE(
      log.WaitFor({"event=accept_paused", "accepted=" + std::to_string(fits + 1)}).empty());
  // No more accepts while nobody takes a record (the paused host listener is not watched).
  CHECK(SocketsNow(ctl) == baseline + 1 + fits + 1);
  pollfd p = {l.channel.get(), POLLOUT, 0};
  CHECK(poll(&p, 1, 0) == 0);  // the listener channel never polls writable for the app

  // Taking records lets xsockd go on: every connection arrives, each once.
  std::set<uint64_t> ids;
  for (int i = 0; i < clients_n; ++i) {
    Accepted a = ReceiveRecord(l.channel.get());
    REQUIRE(a.app != nullptr);
    ids.insert(a.record.socket_id);
  }
  CHECK(ids.size() == static_cast<size_t>(clients_n));
  CHECK(poll(&p, 1, 0) == 0);
}

TEST_CASE("attach of a listener channel answers state listening without a descriptor",
          "[backend][listen]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  RoutedListener l = ListenRouted(ctl, AF_INET);
  Control other(server.path());
  other.Hello();
  // Not yet attached: no authority.
  CHECK(other.CallAs<proto::GetSockNameReply>(proto::GetSockNameRequest{l.app->id()}).err == EBADF);
  const int fds[] = {l.channel.get()};
  std::vector<UniqueFd> got;
  const auto reply = other.CallAs<proto::AttachReply>(proto::AttachRequest{}, &got, fds);
  CHECK(reply.err == 0);
  CHECK(reply.socket_id == l.app->id());
  CHECK(reply.state == static_cast<uint32_t>(SocketState::kListening));
  CHECK(reply.ring_order == 0);
  CHECK(got.empty());
  const auto named = other.CallAs<proto::GetSockNameReply>(proto::GetSockNameRequest{l.app->id()});
  CHECK(named.err == 0);
  CHECK(named.addr == l.addr);
  // SO_ACCEPTCONN comes from the host socket.
  const auto acc = other.CallAs<proto::GetSockOptReply>(
      proto::GetSockOptRequest{l.app->id(), SOL_SOCKET, SO_ACCEPTCONN, 4});
  REQUIRE(acc.err == 0);
  REQUIRE(acc.value.size() == 4);
  int v = 0;
  std::memcpy(&v, acc.value.data(), 4);
  CHECK(v == 1);
  // getpeername of a listener: ENOTCONN, as the kernel says.
  CHECK(other.CallAs<proto::GetPeerNameReply>(proto::GetPeerNameRequest{l.app->id()}).err ==
        ENOTCONN);
  CHECK_FALSE(log.WaitFor({"event=attach", "state=listening"}).empty());

  // The stream channel a socket had before listen() no longer names it.
  auto s = AppSocket::Create(ctl, AF_INET);
  UniqueFd old_end(fcntl(s->channel(), F_DUPFD_CLOEXEC, 0));
  UniqueFd s_channel = Listen(ctl, s->id(), 4);
  REQUIRE(s_channel.valid());
  const int stale[] = {old_end.get()};
  CHECK(other.CallAs<proto::AttachReply>(proto::AttachRequest{}, nullptr, stale).err == EBADF);
  // ...and its hang-up does not release the listener.
  s->CloseChannel();
  old_end.reset();
  const int live[] = {s_channel.get()};
  CHECK(other.CallAs<proto::AttachReply>(proto::AttachRequest{}, nullptr, live).socket_id ==
        s->id());
  const auto n2 = ctl.CallAs<proto::GetSockNameReply>(proto::GetSockNameRequest{s->id()});
  REQUIRE(n2.err == 0);
  UniqueFd client = KernelConnect(n2.addr);
  REQUIRE(client.valid());
  CHECK(ReceiveRecord(s_channel.get()).app != nullptr);
}

TEST_CASE("hostile and out-of-order bind/listen requests get the kernel's errors",
          "[backend][listen]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  int err = 0;
  // Ids nobody holds.
  for (uint64_t id : {uint64_t{12345}, UINT64_MAX}) {
    CHECK_FALSE(Listen(ctl, id, 8, &err).valid());
    CHECK(err == EBADF);
    CHECK(Bind(ctl, id, LoopbackAddr(AF_INET, 0)).err == EBADF);
  }
  // Another client's socket.
  Control other(server.path());
  other.Hello();
  auto theirs = AppSocket::Create(other, AF_INET);
  CHECK_FALSE(Listen(ctl, theirs->id(), 8, &err).valid());
  CHECK(err == EBADF);

  auto s = AppSocket::Create(ctl, AF_INET);
  REQUIRE(Bind(ctl, s->id(), LoopbackAddr(AF_INET, 0)).err == 0);
  CHECK(Bind(ctl, s->id(), LoopbackAddr(AF_INET, 0)).err == EINVAL);  // bind twice
  UniqueFd channel = Listen(ctl, s->id(), -5);  // any backlog: the kernel clamps it
  REQUIRE(channel.valid());
  CHECK_FALSE(Listen(ctl, s->id(), 8, &err).valid());  // listening already
  CHECK(err == EINVAL);
  CHECK(Bind(ctl, s->id(), LoopbackAddr(AF_INET, 0)).err == EINVAL);
  CHECK(s->Connect(ctl, LoopbackAddr(AF_INET, 1)) == EISCONN);
  // SHUT_WR on a listener changes nothing; it still accepts.
  CHECK(ctl.CallAs<proto::ShutdownReply>(proto::ShutdownRequest{s->id(), SHUT_WR}).err == 0);
  const auto named = ctl.CallAs<proto::GetSockNameReply>(proto::GetSockNameRequest{s->id()});
  UniqueFd client = KernelConnect(named.addr);
  REQUIRE(client.valid());
  CHECK(ReceiveRecord(channel.get()).app != nullptr);
  // An IPv6 bind without the capability.
  Control v4only(server.path());
  v4only.Hello(proto::kCapStats);
  auto t = AppSocket::Create(v4only, AF_INET);
  CHECK(Bind(v4only, t->id(), LoopbackAddr(AF_INET6, 0)).err == EAFNOSUPPORT);
  // Still serving.
  CHECK(ctl.Stats().sockets_now >= 3);
}

TEST_CASE("SO_LINGER {1, 0}: the app's close resets the host peer", "[backend][listen][linger]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto host = TcpListener::Open(AF_INET);
  auto app = AppSocket::Create(ctl, AF_INET);
  proto::SetSockOptRequest req;
  req.socket_id = app->id();
  req.level = SOL_SOCKET;
  req.optname = SO_LINGER;
  // As the kernel: {0, 0} after {1, 7} turns lingering off but keeps the time.
  for (const struct linger l : {linger{1, 7}, linger{0, 0}}) {
    req.value.resize(sizeof(l));
    std::memcpy(req.value.data(), &l, sizeof(l));
    REQUIRE(ctl.CallAs<proto::SetSockOptReply>(req).err == 0);
  }
  const auto off = ctl.CallAs<proto::GetSockOptReply>(
      proto::GetSockOptRequest{app->id(), SOL_SOCKET, SO_LINGER, sizeof(struct linger)});
  REQUIRE(off.value.size() == sizeof(struct linger));
  struct linger seen = {};
  std::memcpy(&seen, off.value.data(), sizeof(seen));
  CHECK(seen.l_onoff == 0);
  CHECK(seen.l_linger == 7);
  const struct linger abort = {1, 0};
  req.value.resize(sizeof(abort));
  std::memcpy(req.value.data(), &abort, sizeof(abort));
  REQUIRE(ctl.CallAs<proto::SetSockOptReply>(req).err == 0);
  const int err = app->Connect(ctl, host.Addr());
  REQUIRE((err == 0 || err == EINPROGRESS));
  REQUIRE(app->WaitConnectDone() == SocketState::kConnected);
  UniqueFd peer = host.Accept();
  REQUIRE(peer.valid());
  const std::string hello = "bytes before the reset";
  REQUIRE(app->WriteAll(hello.data(), hello.size()));
  std::vector<uint8_t> got(hello.size());
  REQUIRE(RecvExactly(peer.get(), got));
  app->CloseChannel();
  int rerr = 0;
  CHECK(RecvToEof(peer.get(), &rerr).empty());
  CHECK(rerr == ECONNRESET);
  CHECK_FALSE(log.WaitFor({"event=socket_closed", "close=abort"}).empty());
}

TEST_CASE("SO_LINGER {1, 1}: a close that cannot flush resets the peer after the linger time",
          "[backend][listen][linger]") {
  LogCapture log;
  TestServer server(/*ring_order=*/12);
  Control ctl(server.path());
  ctl.Hello();
  auto host = TcpListener::Open(AF_INET);
  auto app = AppSocket::Create(ctl, AF_INET);
  proto::SetSockOptRequest req;
  req.socket_id = app->id();
  req.level = SOL_SOCKET;
  req.optname = SO_LINGER;
  const struct linger one = {1, 1};
  req.value.resize(sizeof(one));
  std::memcpy(req.value.data(), &one, sizeof(one));
  REQUIRE(ctl.CallAs<proto::SetSockOptReply>(req).err == 0);
  // getsockopt reports what the app set.
  const auto reported = ctl.CallAs<proto::GetSockOptReply>(
      proto::GetSockOptRequest{app->id(), SOL_SOCKET, SO_LINGER, sizeof(struct linger)});
  REQUIRE(reported.value.size() == sizeof(struct linger));
  struct linger back = {};
  std::memcpy(&back, reported.value.data(), sizeof(back));
  CHECK(back.l_onoff == 1);
  CHECK(back.l_linger == 1);
  const int err = app->Connect(ctl, host.Addr());
  REQUIRE((err == 0 || err == EINPROGRESS));
  REQUIRE(app->WaitConnectDone() == SocketState::kConnected);
  UniqueFd peer = host.Accept();
  REQUIRE(peer.valid());
  // The peer reads nothing: fill the host's buffers and then the out ring.
  const int small = 4096;
  setsockopt(peer.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  app->set_nonblocking(true);
  const std::vector<uint8_t> chunk = Pattern(65536, 3);
  size_t written = 0;
  for (int i = 0; i < 4096; ++i) {
    const ssize_t n = app->Write(chunk.data(), chunk.size(), 100);
    if (n == -EAGAIN) {
      if (Eventually([&] { return app->Poll(POLLOUT) != 0; }, 200)) continue;
      break;
    }
    REQUIRE(n > 0);
    written += static_cast<size_t>(n);
  }
  INFO("written " << written);
  REQUIRE(app->page()->out_prod.value.load() != app->page()->out_cons.value.load());
  app->CloseChannel();
  CHECK_FALSE(log.WaitFor({"event=socket_closed", "close=linger_timeout"}).empty());
  int rerr = 0;
  const auto got = RecvToEof(peer.get(), &rerr);
  CHECK(got.size() < written);
  CHECK(rerr == ECONNRESET);
}

}  // namespace
}  // namespace xsock::testing
