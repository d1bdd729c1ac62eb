// xsockd's data plane, driven in-process through the rings and the channel exactly as the
// library would: connects, bytes both ways with back-pressure, EOF, reset, shutdown,
// release, closing the app end, ring corruption, and isolation between clients.
#include <fcntl.h>
#include <poll.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <thread>

#include "backend/log.h"
#include "test_client.h"

namespace xsock::testing {
namespace {

struct Routed {
  std::unique_ptr<AppSocket> app;
  UniqueFd peer;
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

// Reads exactly n bytes through the app side; returns what arrived before an error.
std::vector<uint8_t> AppReadExactly(AppSocket& app, size_t n, ssize_t* last = nullptr) {
  std::vector<uint8_t> out(n);
  size_t have = 0;
  while (have < n) {
    const ssize_t got = app.Read(out.data() + have, n - have);
    if (last != nullptr) *last = got;
    if (got <= 0) {
      UNSCOPED_INFO("app read returned " << got << " after " << have
                                         << " bytes: " << app.Describe());
      break;
    }
    have += static_cast<size_t>(got);
  }
  out.resize(have);
  return out;
}

void SetInt(Control& ctl, uint64_t id, int level, int name, int value) {
  proto::SetSockOptRequest req;
  req.socket_id = id;
  req.level = level;
  req.optname = name;
  req.value.resize(sizeof(value));
  std::memcpy(req.value.data(), &value, sizeof(value));
  REQUIRE(ctl.CallAs<proto::SetSockOptReply>(req).err == 0);
}

uint32_t InFill(AppSocket& app) {
  return app.page()->in_prod.value.load() - app.page()->in_cons.value.load();
}

TEST_CASE("connect to 127.0.0.1 and ::1 completes through the page and the channel",
          "[backend][data]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  const int family = GENERATE(AF_INET, AF_INET6);
  auto listener = TcpListener::Open(family);
  auto app = AppSocket::Create(ctl, family);

  const int err = app->Connect(ctl, listener.Addr());
  CHECK((err == 0 || err == EINPROGRESS));
  // The stuffing keeps the descriptor unwritable until xsockd drains it on completion.
  CHECK(app->WaitConnectDone() == SocketState::kConnected);
  CHECK((app->Poll(POLLIN | POLLOUT) & (POLLIN | POLLOUT)) == POLLOUT);
  CHECK(app->page()->so_error.load() == 0);
  UniqueFd peer = listener.Accept();
  CHECK(peer.valid());
  CHECK(ctl.Stats().connects_ok == 1);
  CHECK_FALSE(log.WaitFor({"event=connect_ok", "dst=" + proto::ToString(listener.Addr())}).empty());
}

TEST_CASE("connect to a closed port fails with ECONNREFUSED through so_error and state",
          "[backend][data]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  const int family = GENERATE(AF_INET, AF_INET6);
  auto app = AppSocket::Create(ctl, family);
  const int err = app->Connect(ctl, LoopbackAddr(family, ClosedPort(family)));
  REQUIRE((err == EINPROGRESS || err == ECONNREFUSED));
  if (err == EINPROGRESS) {
    CHECK(app->WaitConnectDone() == SocketState::kFailed);
    CHECK(app->page()->so_error.load() == ECONNREFUSED);
    CHECK(app->page()->in_error.value.load() == -ECONNREFUSED);
    // Readable and writable, as a refused TCP socket polls.
    CHECK((app->Poll(POLLIN, kTimeoutMs) & POLLIN) != 0);
    // HUP (xsockd's shutdown) may show a moment before the drain gives POLLOUT back.
    CHECK(Eventually([&] { return (app->Poll(POLLOUT) & POLLOUT) != 0; }));
    char b;
    CHECK(app->Read(&b, 1) == -ECONNREFUSED);
  }
  CHECK(ctl.Stats().connects_failed == 1);
  CHECK_FALSE(log.WaitFor({"event=connect_failed", "errno=ECONNREFUSED"}).empty());
}

TEST_CASE("8 MiB each way arrive intact through the rings, with back-pressure", "[backend][data]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  const uint32_t order = GENERATE(12u, 18u);
  auto listener = TcpListener::Open(AF_INET);
  Routed r = ConnectRouted(ctl, listener, order);
  REQUIRE(r.app->order() == order);

  constexpr size_t kBytes = 8 << 20;
  const std::vector<uint8_t> up = Pattern(kBytes, 11), down = Pattern(kBytes, 12);
  std::atomic<bool> peer_sent{false};
  std::vector<uint8_t> peer_got(kBytes);
  bool peer_recv_ok = false;
  ScopedThread peer_writer([&] { peer_sent = SendAll(r.peer.get(), down, 60000); }, r.peer.get());
  ScopedThread peer_reader([&] { peer_recv_ok = RecvExactly(r.peer.get(), peer_got, 60000); },
                           r.peer.get());
  bool app_sent = false;
  ScopedThread app_writer([&] { app_sent = r.app->WriteAll(up.data(), up.size(), 60000); });
  std::vector<uint8_t> app_got(kBytes);
  size_t have = 0;
  while (have < kBytes) {
    const ssize_t n = r.app->Read(app_got.data() + have, kBytes - have, 60000);
    if (n <= 0) break;
    have += static_cast<size_t>(n);
  }
  app_writer.join();
  peer_writer.join();
  peer_reader.join();
  CHECK(app_sent);
  CHECK(peer_sent);
  CHECK(peer_recv_ok);
  CHECK(have == kBytes);
  CHECK(Fnv1a(app_got) == Fnv1a(down));
  CHECK(Fnv1a(peer_got) == Fnv1a(up));
  const auto stats = ctl.Stats();
  CHECK(stats.bytes_to_host == kBytes);
  CHECK(stats.bytes_from_host == kBytes);
}

TEST_CASE("host FIN reaches the app as end of stream after all data", "[backend][data]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  Routed r = ConnectRouted(ctl, listener, 12);

  const std::vector<uint8_t> data = Pattern(100000, 5);
  ScopedThread peer(
      [&] {
        SendAll(r.peer.get(), data);
        shutdown(r.peer.get(), SHUT_WR);
      },
      r.peer.get());
  ssize_t last = 1;
  const auto got = AppReadExactly(*r.app, data.size(), &last);
  peer.join();
  CHECK(Diff(got, data) == "");
  char b;
  CHECK(r.app->Read(&b, 1) == 0);
  CHECK(r.app->page()->in_error.value.load() == kRingEof);
  // Readable for good, as a TCP socket after FIN.
  CHECK((r.app->Poll(POLLIN | POLLRDHUP, kTimeoutMs) & (POLLIN | POLLRDHUP)) ==
        (POLLIN | POLLRDHUP));
  CHECK(r.app->Read(&b, 1) == 0);
  CHECK_FALSE(log.WaitFor({"event=eof", "from_host=100000"}).empty());

  // Half-closed: the app can still send.
  const std::vector<uint8_t> reply = Pattern(5000, 6);
  REQUIRE(r.app->WriteAll(reply.data(), reply.size()));
  std::vector<uint8_t> peer_got(reply.size());
  REQUIRE(RecvExactly(r.peer.get(), peer_got));
  CHECK(Diff(peer_got, reply) == "");
}

TEST_CASE("host RST reaches the app as ECONNRESET", "[backend][data]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  Routed r = ConnectRouted(ctl, listener);

  const struct linger abort = {1, 0};
  REQUIRE(setsockopt(r.peer.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof(abort)) == 0);
  r.peer.reset();
  char b;
  CHECK(r.app->Read(&b, 1) == -ECONNRESET);
  CHECK(r.app->page()->so_error.load() == ECONNRESET);
  CHECK(r.app->page()->out_error.value.load() == -ECONNRESET);
  CHECK(r.app->page()->state.load() == static_cast<uint32_t>(SocketState::kClosed));
  CHECK(r.app->Write("x", 1) == -ECONNRESET);
  // Readable and writable for good (xsockd shuts its end down right after the token).
  CHECK((r.app->Poll(POLLIN, kTimeoutMs) & POLLIN) != 0);
  CHECK((r.app->Poll(POLLOUT) & POLLOUT) != 0);
  CHECK_FALSE(log.WaitFor({"event=reset", "errno=ECONNRESET"}).empty());
}

TEST_CASE("shutdown(SHUT_WR) after data: the host gets every byte, then EOF", "[backend][data]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  Routed r = ConnectRouted(ctl, listener, 12);

  const std::vector<uint8_t> data = Pattern(1 << 20, 7);
  int peer_err = -1;
  std::vector<uint8_t> peer_got;
  ScopedThread peer([&] { peer_got = RecvToEof(r.peer.get(), &peer_err); }, r.peer.get());
  REQUIRE(r.app->WriteAll(data.data(), data.size()));
  // Bytes may still be in `out`: xsockd shuts the host down only after flushing them.
  CHECK(ctl.CallAs<proto::ShutdownReply>(proto::ShutdownRequest{r.app->id(), SHUT_WR}).err == 0);
  peer.join();
  CHECK(peer_err == 0);
  CHECK(peer_got.size() == data.size());
  CHECK(Fnv1a(peer_got) == Fnv1a(data));

  // The other direction still flows.
  const std::vector<uint8_t> back = Pattern(3000, 8);
  REQUIRE(SendAll(r.peer.get(), back));
  CHECK(Diff(AppReadExactly(*r.app, back.size()), back) == "");
}

TEST_CASE("shutdown of a socket that is not connected is ENOTCONN", "[backend][data]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto app = AppSocket::Create(ctl, AF_INET);
  CHECK(ctl.CallAs<proto::ShutdownReply>(proto::ShutdownRequest{app->id(), SHUT_WR}).err ==
        ENOTCONN);
}

TEST_CASE("release drops the connection's claim; the socket lives until its channel closes",
          "[backend][data]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  Routed r = ConnectRouted(ctl, listener);

  CHECK(ctl.CallAs<proto::ReleaseReply>(proto::ReleaseRequest{r.app->id()}).err == 0);
  CHECK_FALSE(log.WaitFor({"event=release", "socket=" + std::to_string(r.app->id())}).empty());
  CHECK(ctl.CallAs<proto::GetSockNameReply>(proto::GetSockNameRequest{r.app->id()}).err == EBADF);
  CHECK(ctl.CallAs<proto::ReleaseReply>(proto::ReleaseRequest{r.app->id()}).err == EBADF);

  // The socket itself still carries bytes both ways...
  const std::vector<uint8_t> up = Pattern(2000, 9), down = Pattern(3000, 10);
  REQUIRE(r.app->WriteAll(up.data(), up.size()));
  std::vector<uint8_t> peer_got(up.size());
  REQUIRE(RecvExactly(r.peer.get(), peer_got));
  CHECK(Diff(peer_got, up) == "");
  REQUIRE(SendAll(r.peer.get(), down));
  CHECK(Diff(AppReadExactly(*r.app, down.size()), down) == "");
  CHECK(ctl.Stats().sockets_now == 1);

  // ...and attach gives the claim back.
  const int channel = r.app->channel();
  CHECK(ctl.CallAs<proto::AttachReply>(proto::AttachRequest{}, nullptr,
                                       std::span<const int>(&channel, 1))
            .err == 0);
  CHECK(ctl.CallAs<proto::GetSockNameReply>(proto::GetSockNameRequest{r.app->id()}).err == 0);

  // Closing the channel ends it: the host sees EOF and the socket is freed.
  r.app->CloseChannel();
  int err = -1;
  CHECK(RecvToEof(r.peer.get(), &err).empty());
  CHECK(err == 0);
  CHECK(Eventually([&] { return ctl.Stats().sockets_now == 0; }));
  CHECK(ctl.CallAs<proto::GetSockNameReply>(proto::GetSockNameRequest{r.app->id()}).err == EBADF);
}

TEST_CASE("closing the app's channel flushes out to the host, closes it and frees the socket",
          "[backend][data]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  Routed r = ConnectRouted(ctl, listener, 12);
  // Nobody reads on the host side yet, so most of the data is still queued (host socket
  // buffers and `out`) when the app closes.
  const std::vector<uint8_t> data = Pattern(64 << 10, 10);
  const int small = 4096;
  REQUIRE(setsockopt(r.peer.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) == 0);
  size_t off = 0;
  r.app->set_nonblocking(true);
  while (off < data.size()) {
    const ssize_t n = r.app->Write(data.data() + off, data.size() - off);
    if (n == -EAGAIN) break;
    REQUIRE(n > 0);
    off += static_cast<size_t>(n);
  }
  REQUIRE(off > 0);
  r.app->CloseChannel();
  int err = -1;
  const auto got = RecvToEof(r.peer.get(), &err);
  CHECK(err == 0);  // FIN, not RST
  CHECK(got.size() == off);
  CHECK(std::equal(got.begin(), got.end(), data.begin()));
  CHECK(Eventually([&] { return ctl.Stats().sockets_now == 0; }));
  CHECK_FALSE(
      log.WaitFor({"event=socket_closed", "reason=app_closed", "to_host=" + std::to_string(off)})
          .empty());
}

TEST_CASE("a corrupted ring index resets only that socket", "[backend][data]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  Routed victim = ConnectRouted(ctl, listener, 12);
  Routed bystander = ConnectRouted(ctl, listener, 12);
  const uint32_t size = 1u << 12;

  SECTION("out_prod beyond the ring size") {
    SocketPage* p = victim.app->page();
    p->out_prod.value.store(p->out_cons.value.load() + size + 1);
    const char wake = kWakeByte;
    REQUIRE(send(victim.app->channel(), &wake, 1, MSG_NOSIGNAL) == 1);
    CHECK_FALSE(log.WaitFor({"event=ring_corrupt", "ring=out",
                             "socket=" + std::to_string(victim.app->id()), "client=1"})
                    .empty());
  }
  SECTION("in_cons ahead of in_prod") {
    SocketPage* p = victim.app->page();
    p->in_cons.value.store(p->in_prod.value.load() + 5);
    REQUIRE(SendAll(victim.peer.get(), Pattern(100, 1)));
    CHECK_FALSE(
        log.WaitFor({"event=ring_corrupt", "ring=in", "socket=" + std::to_string(victim.app->id())})
            .empty());
  }
  // The victim's host connection is reset and the app sees the error.
  int err = 0;
  RecvToEof(victim.peer.get(), &err);
  CHECK(err == ECONNRESET);
  SocketPage* p = victim.app->page();
  CHECK(Eventually([&] { return p->state.load() == static_cast<uint32_t>(SocketState::kClosed); }));
  CHECK(p->in_error.value.load() == -ECONNRESET);
  CHECK(p->so_error.load() == ECONNRESET);

  // The other socket is untouched.
  const std::vector<uint8_t> up = Pattern(200000, 2), down = Pattern(200000, 3);
  std::vector<uint8_t> peer_got(up.size());
  bool peer_ok = false;
  ScopedThread peer(
      [&] {
        peer_ok =
            SendAll(bystander.peer.get(), down) && RecvExactly(bystander.peer.get(), peer_got);
      },
      bystander.peer.get());
  REQUIRE(bystander.app->WriteAll(up.data(), up.size()));
  CHECK(Diff(AppReadExactly(*bystander.app, down.size()), down) == "");
  peer.join();
  CHECK(peer_ok);
  CHECK(Diff(peer_got, up) == "");
}

TEST_CASE("a connect that hangs does not stall another client", "[backend][data]") {
  LogCapture log;
  TestServer server;
  // A listener with backlog 0 whose accept queue holds one connection already: the
  // kernel drops further SYNs, so a connect to it stays in progress.
  auto full = TcpListener::Open(AF_INET, /*backlog=*/0);
  UniqueFd filler(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_storage ss;
  const socklen_t len = proto::ToSockaddr(full.Addr(), &ss);
  REQUIRE(connect(filler.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);

  Control slow_ctl(server.path());
  slow_ctl.Hello();
  auto slow = AppSocket::Create(slow_ctl, AF_INET);
  REQUIRE(slow->Connect(slow_ctl, full.Addr()) == EINPROGRESS);

  // Meanwhile another client completes a full exchange.
  Control fast_ctl(server.path());
  fast_ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  Routed r = ConnectRouted(fast_ctl, listener);
  const std::vector<uint8_t> up = Pattern(1 << 20, 4), down = Pattern(1 << 20, 5);
  std::vector<uint8_t> peer_got;
  int peer_err = -1;
  ScopedThread peer(
      [&] {
        SendAll(r.peer.get(), down);
        shutdown(r.peer.get(), SHUT_WR);
        peer_got = RecvToEof(r.peer.get(), &peer_err);
      },
      r.peer.get());
  REQUIRE(r.app->WriteAll(up.data(), up.size()));
  REQUIRE(fast_ctl.CallAs<proto::ShutdownReply>(proto::ShutdownRequest{r.app->id(), SHUT_WR}).err ==
          0);
  ssize_t last = 1;
  CHECK(Diff(AppReadExactly(*r.app, down.size(), &last), down) == "");
  char b;
  CHECK(r.app->Read(&b, 1) == 0);
  peer.join();
  CHECK(peer_err == 0);
  CHECK(Diff(peer_got, up) == "");

  // The slow connect is still pending, and unwritable, all along.
  CHECK(slow->page()->state.load() == static_cast<uint32_t>(SocketState::kConnecting));
  CHECK((slow->Poll(POLLOUT) & POLLOUT) == 0);
  // Closing its channel abandons it.
  slow->CloseChannel();
  CHECK_FALSE(log.WaitFor({"event=socket_closed", "socket=" + std::to_string(slow->id()),
                           "state=connecting"})
                  .empty());
}

TEST_CASE("a wake byte lost while the channel is stuffed does not stall the socket",
          "[backend][data]") {
  // docs/channel.md lets the app send a wake byte when it makes room in `in`. If the app
  // has stuffed its channel (because `out` is full) that send fails with EAGAIN and the
  // wake is lost; xsockd must notice the room by itself (it re-checks held sockets).
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  const int small = 4096;
  REQUIRE(setsockopt(listener.fd.get(), SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)) == 0);
  auto app = AppSocket::Create(ctl, AF_INET, 12);
  SetInt(ctl, app->id(), SOL_SOCKET, SO_SNDBUF, small);
  SetInt(ctl, app->id(), SOL_SOCKET, SO_RCVBUF, small);
  const int err = app->Connect(ctl, listener.Addr());
  REQUIRE((err == 0 || err == EINPROGRESS));
  REQUIRE(app->WaitConnectDone() == SocketState::kConnected);
  UniqueFd peer = listener.Accept();
  REQUIRE(peer.valid());

  const std::vector<uint8_t> up = Pattern(4 << 20, 20);
  const std::vector<uint8_t> down = Pattern(1 << 20, 21);
  std::atomic<bool> peer_sent{false};
  ScopedThread peer_writer;
  std::vector<uint8_t> got;
  size_t sent = 0;
  app->set_nonblocking(true);
  // Whether the wake is really lost depends on the host socket staying unwritable, which
  // TCP does not promise; repeat until it happens (usually at once).
  bool proven = false;
  for (int attempt = 0; attempt < 50 && !proven && got.size() + 4096 < down.size(); ++attempt) {
    // 1. The app writes until `out` is full and its channel is stuffed.
    for (;;) {
      const ssize_t n = app->Write(up.data() + sent, up.size() - sent);
      if (n == -EAGAIN) break;
      REQUIRE(n > 0);
      sent += static_cast<size_t>(n);
      REQUIRE(sent < up.size());
    }
    // 2. The peer sends more than fits anywhere, so `in` fills and xsockd sleeps on room.
    if (attempt == 0) {
      peer_writer = ScopedThread([&] { peer_sent = SendAll(peer.get(), down, 60000); }, peer.get());
    }
    REQUIRE(Eventually(
        [&] { return InFill(*app) == (1u << 12) && app->page()->in_room_wanted.load() == 1; }));
    // 3. The app reads; while its channel is stuffed its wake byte cannot be sent.
    const int lost_before = app->lost_wakes();
    std::vector<uint8_t> chunk(1 << 12);
    REQUIRE(app->Read(chunk.data(), chunk.size()) == static_cast<ssize_t>(chunk.size()));
    got.insert(got.end(), chunk.begin(), chunk.end());
    proven = app->lost_wakes() > lost_before;
    // 4. xsockd refills `in` anyway.
    CHECK(Eventually([&] { return InFill(*app) > 0; }));
  }
  CHECK(proven);

  // 5. Everything completes with the content intact.
  app->set_nonblocking(false);
  std::vector<uint8_t> peer_got(up.size());
  ScopedThread peer_reader([&] { RecvExactly(peer.get(), peer_got, 60000); }, peer.get());
  ScopedThread app_writer([&] { app->WriteAll(up.data() + sent, up.size() - sent, 60000); });
  const auto rest = AppReadExactly(*app, down.size() - got.size(), nullptr);
  got.insert(got.end(), rest.begin(), rest.end());
  app_writer.join();
  peer_writer.join();
  peer_reader.join();
  CHECK(peer_sent);
  CHECK(Fnv1a(got) == Fnv1a(down));
  CHECK(Fnv1a(peer_got) == Fnv1a(up));
}

TEST_CASE("a stopped xsockd hangs up every channel", "[backend][data]") {
  auto listener = TcpListener::Open(AF_INET);
  std::unique_ptr<AppSocket> app;
  UniqueFd peer;
  {
    TestServer server;
    Control ctl(server.path());
    ctl.Hello();
    Routed r = ConnectRouted(ctl, listener);
    app = std::move(r.app);
    peer = std::move(r.peer);
  }
  char b;
  CHECK(app->Read(&b, 1) == -ECONNRESET);
  CHECK((app->Poll(POLLIN) & POLLHUP) != 0);
  int err = -1;
  RecvToEof(peer.get(), &err);
  CHECK(err == 0);  // xsockd closed its host socket gracefully
}

}  // namespace
}  // namespace xsock::testing
