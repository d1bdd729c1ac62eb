// `xsockd --front xen` over the test double: the real front (backend/xen/front_stack.cc)
// installed as xsockd's host stack in domain 1, the real dom0 backend
// (backend/xen/xen_backend.cc) in a thread as domain 0, an in-process xsockd server
// driven as libxsock.so would (tests/backend/test_client.h), and real TCP on 127.0.0.1.
// Catch2 assertions only on this (the main) thread; helper threads return values.
#include "backend/xen/front_stack.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "backend/host_stack.h"
#include "backend/log.h"
#include "backend/xen/xen_backend.h"
#include "shared/pvcalls.h"
#include "tests/backend/test_client.h"
#include "tests/xen/dom0_thread.h"
#include "tests/xen/xen_double.h"

namespace xsock::testing {
namespace {

namespace pv = xsock::pvcalls;
namespace xd = xsock::xen_double;
using backend::xen::FrontStack;
using backend::xen::FrontStackOptions;
using backend::xen::XenBackend;
using backend::xen::XenBackendOptions;

constexpr uint32_t kDomU = 1;

using Dom0 = xen_test::Dom0Thread;

// The whole stack: dom0 backend, domU front installed as the host stack, xsockd server.
struct World {
  std::unique_ptr<Dom0> dom0;
  std::unique_ptr<FrontStack> front;
  std::unique_ptr<TestServer> server;
  // dom0_ext, front_ext: whether each side offers/asks for the xsock extension.
  explicit World(uint32_t ring_order = 4, uint32_t max_order = 4, bool dom0_ext = true,
                 bool front_ext = true) {
    xd::Reset();
    dom0 = std::make_unique<Dom0>(max_order, dom0_ext);
    xen_test::WriteToolstackNodes(kDomU);
    {
      xd::ScopedDomain as(kDomU);
      FrontStackOptions o;
      o.domid = kDomU;
      o.ring_order = ring_order;
      o.probe_interval = std::chrono::milliseconds(200);
      o.probe_timeout = std::chrono::milliseconds(1000);
      o.extension = front_ext;
      auto f = FrontStack::Create(xd::Api(), o);
      REQUIRE(f.ok());
      front = std::move(*f);
    }
    REQUIRE(front->WaitConnected(std::chrono::milliseconds(kTimeoutMs)));
    backend::InstallHostStack(front.get());
    server = std::make_unique<TestServer>();
  }
  ~World() {
    server.reset();
    backend::InstallHostStack(nullptr);
    front.reset();
    dom0.reset();
  }
};

std::unique_ptr<AppSocket> ConnectApp(Control& ctl, const proto::SockAddr& addr) {
  auto app = AppSocket::Create(ctl, addr.family, 0);
  const int err = app->Connect(ctl, addr);
  CAPTURE(err);
  REQUIRE((err == 0 || err == EINPROGRESS));
  REQUIRE(app->WaitConnectDone() == SocketState::kConnected);
  return app;
}

// A connected app socket through the whole stack and its peer on dom0's side.
struct Connection {
  Control ctl;
  TcpListener listener;
  std::unique_ptr<AppSocket> app;
  UniqueFd peer;
  explicit Connection(World& w, int family = AF_INET)
      : ctl(w.server->path()), listener(TcpListener::Open(family)) {
    ctl.Hello();
    app = ConnectApp(ctl, listener.Addr());
    peer = listener.Accept();
    REQUIRE(peer.valid());
  }
};

// Reads exactly `n` bytes from the app socket; false on EOF, error or timeout.
bool AppReadExactly(AppSocket& app, std::vector<uint8_t>& out, size_t n) {
  out.resize(n);
  size_t got = 0;
  for (int guard = 0; got < n && guard < 1000000; ++guard) {
    const ssize_t r = app.Read(out.data() + got, n - got);
    if (r <= 0) break;
    got += static_cast<size_t>(r);
  }
  out.resize(got);
  return got == n;
}

TEST_CASE("front: connect to a loopback server, multi-MiB both ways, hash-checked, wrapping",
          "[front]") {
  World w;  // ring order 4: 32 KiB each way, wraps 128 times per 4 MiB
  Connection c(w);
  auto& app = c.app;
  UniqueFd& peer = c.peer;
  constexpr size_t kSize = 4 * 1024 * 1024 + 12345;  // not a multiple of the ring

  // domU → dom0's peer.
  const std::vector<uint8_t> up = Pattern(kSize, 11);
  std::vector<uint8_t> got_up(kSize);
  std::atomic<bool> up_ok{false};
  {
    ScopedThread t([&] { up_ok = RecvExactly(peer.get(), got_up, 60000); }, peer.get());
    REQUIRE(app->WriteAll(up.data(), up.size(), 60000));
  }
  REQUIRE(up_ok.load());
  CHECK(Diff(got_up, up) == "");
  CHECK(Fnv1a(got_up) == Fnv1a(up));

  // dom0's peer → domU.
  const std::vector<uint8_t> down = Pattern(kSize, 12);
  std::atomic<bool> down_ok{false};
  std::vector<uint8_t> got_down;
  {
    ScopedThread t([&] { down_ok = SendAll(peer.get(), down, 60000); }, peer.get());
    REQUIRE(AppReadExactly(*app, got_down, kSize));
  }
  REQUIRE(down_ok.load());
  CHECK(Diff(got_down, down) == "");
  CHECK(Fnv1a(got_down) == Fnv1a(down));

  // Both ways at once: the peer echoes, the app writes and reads in turns.
  std::atomic<bool> echo_ok{false};
  std::vector<uint8_t> echoed;
  {
    ScopedThread t(
        [&] {
          std::vector<uint8_t> buf(65536);
          size_t done = 0;
          for (int guard = 0; done < kSize && guard < 1000000; ++guard) {
            pollfd p = {peer.get(), POLLIN, 0};
            if (poll(&p, 1, 60000) != 1) return;
            const ssize_t n = recv(peer.get(), buf.data(), buf.size(), 0);
            if (n <= 0) return;
            if (!SendAll(peer.get(), {buf.data(), static_cast<size_t>(n)}, 60000)) return;
            done += static_cast<size_t>(n);
          }
          echo_ok = done == kSize;
        },
        peer.get());
    const std::vector<uint8_t> data = Pattern(kSize, 13);
    echoed.reserve(kSize);
    size_t sent = 0;
    std::vector<uint8_t> buf(65536);
    app->set_nonblocking(true);
    for (int guard = 0; echoed.size() < kSize && guard < 10000000; ++guard) {
      if (sent < kSize) {
        const ssize_t n = app->Write(data.data() + sent, std::min<size_t>(kSize - sent, 50000));
        if (n > 0) sent += static_cast<size_t>(n);
        REQUIRE((n > 0 || n == -EAGAIN));
      }
      const ssize_t r = app->Read(buf.data(), buf.size());
      REQUIRE((r > 0 || r == -EAGAIN));
      if (r > 0) echoed.insert(echoed.end(), buf.data(), buf.data() + r);
      if (r == -EAGAIN && sent == kSize) app->Poll(POLLIN, 1000);
    }
    app->set_nonblocking(false);
    REQUIRE(echoed.size() == kSize);
    CHECK(Diff(echoed, data) == "");
  }
  CHECK(echo_ok.load());
  const auto stats = w.front->Stats();
  CHECK(stats.bytes_to_dom0 == 2 * kSize);
  CHECK(stats.bytes_from_dom0 == 2 * kSize);
}

TEST_CASE("front: connect to a closed port is ECONNREFUSED", "[front]") {
  World w;
  Control ctl(w.server->path());
  ctl.Hello();
  auto app = AppSocket::Create(ctl, AF_INET, 0);
  const int err = app->Connect(ctl, LoopbackAddr(AF_INET, ClosedPort(AF_INET)));
  if (err == EINPROGRESS) {
    app->WaitConnectDone();
    CHECK(app->page()->so_error.load() == ECONNREFUSED);
  } else {
    CHECK(err == ECONNREFUSED);
  }
}

TEST_CASE("front: a peer's reset reaches the app as ECONNRESET", "[front]") {
  World w;
  Connection c(w);
  auto& app = c.app;
  UniqueFd& peer = c.peer;
  const std::vector<uint8_t> hello = Pattern(1000, 5);
  REQUIRE(SendAll(peer.get(), hello));
  std::vector<uint8_t> got;
  REQUIRE(AppReadExactly(*app, got, hello.size()));
  CHECK(Diff(got, hello) == "");
  const linger lg{1, 0};  // close with RST
  REQUIRE(setsockopt(peer.get(), SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) == 0);
  peer.reset();
  char b;
  CHECK(app->Read(&b, 1) == -ECONNRESET);
}

TEST_CASE(
    "front: dom0's backend gone resets the app's connection with ECONNRESET; a new one "
    "is served again",
    "[front]") {
  World w;
  Connection c(w);
  auto& app = c.app;
  UniqueFd& peer = c.peer;
  const std::vector<uint8_t> data = Pattern(5000, 6);
  REQUIRE(app->WriteAll(data.data(), data.size()));
  std::vector<uint8_t> got(data.size());
  REQUIRE(RecvExactly(peer.get(), got));
  CHECK(Diff(got, data) == "");
  w.dom0->Stop();
  char b;
  CHECK(app->Read(&b, 1, 20000) == -ECONNRESET);
  CHECK(w.front->Stats().backend_losses >= 1);
  // Seen through the command ring's unmap notification (extension), not the probe.
  CHECK(w.front->Stats().backend_unmaps == 1);
  // dom0's xsockd starts again: the front handshakes with it, the next connection works.
  const uint64_t handshakes = w.front->Stats().handshakes;
  w.dom0 = std::make_unique<Dom0>();
  REQUIRE(w.front->WaitConnected(std::chrono::milliseconds(20000)));
  REQUIRE(Eventually([&] { return w.front->Stats().handshakes > handshakes; }, 20000));
  Connection again(w);
  const std::vector<uint8_t> more = Pattern(7000, 7);
  REQUIRE(again.app->WriteAll(more.data(), more.size()));
  std::vector<uint8_t> got_more(more.size());
  REQUIRE(RecvExactly(again.peer.get(), got_more));
  CHECK(Diff(got_more, more) == "");
}

// ---- the xsock extension (docs/xen.md) ------------------------------------------------------

template <class T>
std::vector<uint8_t> Bytes(const T& v) {
  const auto* p = reinterpret_cast<const uint8_t*>(&v);
  return {p, p + sizeof(v)};
}

int IntOf(const std::vector<uint8_t>& v) {
  int x = -1;
  if (v.size() == sizeof(x)) std::memcpy(&x, v.data(), sizeof(x));
  return x;
}

proto::SockAddr LocalName(int fd, bool peer) {
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  auto* sa = reinterpret_cast<sockaddr*>(&ss);
  REQUIRE((peer ? getpeername(fd, sa, &len) : getsockname(fd, sa, &len)) == 0);
  auto a = proto::FromSockaddr(sa, len);
  REQUIRE(a.ok());
  return *a;
}

TEST_CASE("front ext: the app's half-close reaches dom0's peer as EOF, the reply still flows",
          "[front][ext]") {
  World w;
  REQUIRE(w.front->Extension());
  CHECK(xd::StoreRead(pv::FrontendPath(kDomU) + "/xsock-ext") == "1");
  Connection c(w);
  Control& ctl = c.ctl;
  auto& app = c.app;
  UniqueFd& peer = c.peer;
  const std::vector<uint8_t> request = Pattern(100000, 21);
  REQUIRE(app->WriteAll(request.data(), request.size()));
  CHECK(ctl.CallAs<proto::ShutdownReply>(proto::ShutdownRequest{app->id(), SHUT_WR}).err == 0);
  // PVCalls v1 has no way to say this: the peer sees EOF only at release.
  int err = -1;
  const std::vector<uint8_t> got = RecvToEof(peer.get(), &err, 20000);
  CHECK(err == 0);
  CHECK(Diff(got, request) == "");
  const std::vector<uint8_t> reply = Pattern(150000, 22);
  {
    ScopedThread t([&] { SendAll(peer.get(), reply, 20000); }, peer.get());
    std::vector<uint8_t> back;
    REQUIRE(AppReadExactly(*app, back, reply.size()));
    CHECK(Diff(back, reply) == "");
  }
  peer.reset();
  char b;
  CHECK(app->Read(&b, 1) == 0);
}

TEST_CASE("front ext: socket names and options come from dom0's real socket", "[front][ext]") {
  World w;
  REQUIRE(w.front->Extension());
  Control ctl(w.server->path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  auto app = AppSocket::Create(ctl, AF_INET, 0);
  // Set before connect: dom0's host socket exists from PVCALLS_SOCKET on, under the
  // extension. The kernel doubles SO_RCVBUF: a value read back from a record would not be.
  const int rcvbuf = 100000;
  CHECK(ctl.CallAs<proto::SetSockOptReply>(
               proto::SetSockOptRequest{app->id(), SOL_SOCKET, SO_RCVBUF, Bytes(rcvbuf)})
            .err == 0);
  const int one = 1;
  CHECK(ctl.CallAs<proto::SetSockOptReply>(
               proto::SetSockOptRequest{app->id(), IPPROTO_TCP, TCP_NODELAY, Bytes(one)})
            .err == 0);
  const int err = app->Connect(ctl, listener.Addr());
  REQUIRE((err == 0 || err == EINPROGRESS));
  REQUIRE(app->WaitConnectDone() == SocketState::kConnected);
  UniqueFd peer = listener.Accept();
  REQUIRE(peer.valid());
  const auto rcv = ctl.CallAs<proto::GetSockOptReply>(
      proto::GetSockOptRequest{app->id(), SOL_SOCKET, SO_RCVBUF, sizeof(int)});
  CHECK(rcv.err == 0);
  CHECK(IntOf(rcv.value) == 2 * rcvbuf);
  const auto nodelay = ctl.CallAs<proto::GetSockOptReply>(
      proto::GetSockOptRequest{app->id(), IPPROTO_TCP, TCP_NODELAY, sizeof(int)});
  CHECK(nodelay.err == 0);
  CHECK(IntOf(nodelay.value) == 1);
  // The local name is dom0's ephemeral port, the one the peer sees.
  const auto name = ctl.CallAs<proto::GetSockNameReply>(proto::GetSockNameRequest{app->id()});
  CHECK(name.err == 0);
  CHECK(name.addr == LocalName(peer.get(), true));
  CHECK(name.addr.port != 0);
  // A connected socket's names cannot change: dom0 is asked once, then the answer is kept.
  const uint64_t requests = w.dom0->backend->Stats().requests;
  for (int i = 0; i < 5; ++i) {
    const auto again = ctl.CallAs<proto::GetSockNameReply>(proto::GetSockNameRequest{app->id()});
    CHECK(again.addr == name.addr);
  }
  CHECK(w.dom0->backend->Stats().requests - requests <= 2);  // liveness probes, if any
  const auto peername = ctl.CallAs<proto::GetPeerNameReply>(proto::GetPeerNameRequest{app->id()});
  CHECK(peername.err == 0);
  CHECK(peername.addr == listener.Addr());
}

// A listener made through the front's HostStack calls: 127.0.0.1, port 0, backlog 4.
UniqueFd ListenOnLoopback(FrontStack& f) {
  UniqueFd l(f.Socket(AF_INET));
  REQUIRE(l.valid());
  sockaddr_in any{};
  any.sin_family = AF_INET;
  any.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(f.Bind(l.get(), reinterpret_cast<const sockaddr*>(&any), sizeof(any)) == 0);
  REQUIRE(f.Listen(l.get(), 4) == 0);
  return l;
}

TEST_CASE("front ext: a listener through dom0 knows its port and who connected", "[front][ext]") {
  World w;
  REQUIRE(w.front->Extension());
  FrontStack& f = *w.front;
  UniqueFd l = ListenOnLoopback(f);
  sockaddr_in bound{};
  socklen_t len = sizeof(bound);
  REQUIRE(f.GetSockName(l.get(), reinterpret_cast<sockaddr*>(&bound), &len) == 0);
  REQUIRE(len == sizeof(bound));
  CHECK(bound.sin_port != 0);  // port 0 was asked for: this is the one dom0's kernel chose
  UniqueFd client(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(connect(client.get(), reinterpret_cast<const sockaddr*>(&bound), sizeof(bound)) == 0);
  pollfd p{l.get(), POLLIN, 0};
  REQUIRE(poll(&p, 1, kTimeoutMs) == 1);
  UniqueFd c(f.Accept(l.get()));
  REQUIRE(c.valid());
  sockaddr_in who{};
  len = sizeof(who);
  REQUIRE(f.GetPeerName(c.get(), reinterpret_cast<sockaddr*>(&who), &len) == 0);
  CHECK(LocalName(client.get(), false) ==
        *proto::FromSockaddr(reinterpret_cast<sockaddr*>(&who), len));
}

// A listener always has an accept outstanding at dom0. Standard PVCalls drops it unanswered
// at release, which costs its command-ring slot for good; the extension answers it.
void ReleaseListeners(World& w, int n) {
  FrontStack& f = *w.front;
  for (int i = 0; i < n; ++i) {
    UniqueFd l = ListenOnLoopback(f);
  }  // closed: the front releases it
  REQUIRE(Eventually([&] { return f.Stats().live_sockets == 0; }));
}

TEST_CASE("front ext: released listeners give their pending accept's slot back", "[front][ext]") {
  SECTION("extension") {
    World w;
    ReleaseListeners(w, 3);
    CHECK(w.front->Stats().leaked_slots == 0);
    // 3 more than the slots a leak would leave: each listener needs three at once.
    ReleaseListeners(w, 12);
    CHECK(w.front->Stats().leaked_slots == 0);
  }
  SECTION("standard PVCalls v1: the slot is lost, counted") {
    World w(4, 4, /*dom0_ext=*/false);
    ReleaseListeners(w, 3);
    CHECK(w.front->Stats().leaked_slots == 3);
  }
}

TEST_CASE("front ext: IPv6 to [::1], hash-checked both ways", "[front][ext]") {
  World w;
  REQUIRE(w.front->Extension());
  Connection c(w, AF_INET6);
  Control& ctl = c.ctl;
  auto& app = c.app;
  UniqueFd& peer = c.peer;
  const std::vector<uint8_t> up = Pattern(1 << 20, 31);
  std::vector<uint8_t> got_up(up.size());
  std::atomic<bool> up_ok{false};
  {
    ScopedThread t([&] { up_ok = RecvExactly(peer.get(), got_up, 60000); }, peer.get());
    REQUIRE(app->WriteAll(up.data(), up.size(), 60000));
  }
  REQUIRE(up_ok.load());
  CHECK(Fnv1a(got_up) == Fnv1a(up));
  const std::vector<uint8_t> down = Pattern(1 << 20, 32);
  std::vector<uint8_t> got_down;
  {
    ScopedThread t([&] { SendAll(peer.get(), down, 60000); }, peer.get());
    REQUIRE(AppReadExactly(*app, got_down, down.size()));
  }
  CHECK(Fnv1a(got_down) == Fnv1a(down));
  const auto peername = ctl.CallAs<proto::GetPeerNameReply>(proto::GetPeerNameRequest{app->id()});
  CHECK(peername.err == 0);
  CHECK(peername.addr == c.listener.Addr());
  const auto name = ctl.CallAs<proto::GetSockNameReply>(proto::GetSockNameRequest{app->id()});
  CHECK(name.addr == LocalName(peer.get(), true));
}

TEST_CASE("front: a backend without the extension gets a standard PVCalls v1 frontend",
          "[front][ext]") {
  World w(4, 4, /*dom0_ext=*/false);
  CHECK_FALSE(w.front->Extension());
  CHECK(xd::StoreRead(pv::FrontendPath(kDomU) + "/xsock-ext") == "0");
  CHECK(w.front->Socket(AF_INET6) == -EAFNOSUPPORT);
  Connection c(w);
  Control& ctl = c.ctl;
  auto& app = c.app;
  UniqueFd& peer = c.peer;
  const std::vector<uint8_t> data = Pattern(5000, 41);
  REQUIRE(app->WriteAll(data.data(), data.size()));
  std::vector<uint8_t> got(data.size());
  REQUIRE(RecvExactly(peer.get(), got));
  CHECK(Diff(got, data) == "");
  // Options are recorded, not applied: read back exactly as set.
  const int rcvbuf = 100000;
  CHECK(ctl.CallAs<proto::SetSockOptReply>(
               proto::SetSockOptRequest{app->id(), SOL_SOCKET, SO_RCVBUF, Bytes(rcvbuf)})
            .err == 0);
  const auto rcv = ctl.CallAs<proto::GetSockOptReply>(
      proto::GetSockOptRequest{app->id(), SOL_SOCKET, SO_RCVBUF, sizeof(int)});
  CHECK(IntOf(rcv.value) == rcvbuf);
}

TEST_CASE("front: a front that does not ask for the extension is served as standard",
          "[front][ext]") {
  World w(4, 4, /*dom0_ext=*/true, /*front_ext=*/false);
  CHECK_FALSE(w.front->Extension());
  CHECK(xd::StoreRead(pv::FrontendPath(kDomU) + "/xsock-ext") == "0");
  CHECK(w.front->Socket(AF_INET6) == -EAFNOSUPPORT);
}

}  // namespace
}  // namespace xsock::testing
