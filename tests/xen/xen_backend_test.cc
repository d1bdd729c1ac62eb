// xsockd's Xen transport end to end: the real backend code (backend/xen/xen_backend.cc)
// in a thread, test frontends (tests/xen/test_front.h) in other domains, everything
// joined by the test double of the Xen libraries, and real TCP on 127.0.0.1.
#include "backend/xen/xen_backend.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "backend/log.h"
#include "tests/xen/test_front.h"
#include "tests/xen/xen_double.h"

namespace pv = xsock::pvcalls;
namespace xd = xsock::xen_double;
using xsock::backend::xen::XenBackend;
using xsock::backend::xen::XenBackendOptions;
using xsock::xen_test::FrontRing;
using xsock::xen_test::TestFront;

namespace {

uint64_t Fnv(uint64_t h, const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}
constexpr uint64_t kFnvInit = 14695981039346656037ull;

std::vector<uint8_t> RandomBytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937_64 g(seed);
  for (size_t i = 0; i + 8 <= n; i += 8) {
    const uint64_t x = g();
    std::memcpy(v.data() + i, &x, 8);
  }
  return v;
}

// Captures xsockd's log lines.
struct LogCapture {
  std::mutex mu;
  std::vector<std::string> lines;
  LogCapture() {
    xsock::backend::SetLogSink([this](std::string_view l) {
      std::lock_guard lock(mu);
      lines.emplace_back(l);
      if (std::getenv("XSOCK_TEST_LOG") != nullptr)
        std::fprintf(stderr, "%.*s\n", static_cast<int>(l.size()), l.data());
    });
  }
  ~LogCapture() { xsock::backend::SetLogSink({}); }
  bool Has(const std::string& needle) {
    std::lock_guard lock(mu);
    for (const auto& l : lines) {
      if (l.find(needle) != std::string::npos) return true;
    }
    return false;
  }
};

// The backend, serving in a thread as dom0.
struct Backend {
  LogCapture log;
  std::unique_ptr<XenBackend> backend;
  std::thread thread;
  bool run_ok = false;  // set by the thread: Catch2's assertions are not thread-safe
  explicit Backend(uint32_t max_order = 4, bool extension = true) {
    xd::Reset();
    xd::ScopedDomain as(0);
    XenBackendOptions o;
    o.max_ring_order = max_order;
    o.extension = extension;
    auto b = XenBackend::Create(xd::Api(), o);
    REQUIRE(b.ok());
    backend = std::move(*b);
    thread = std::thread([this] { run_ok = backend->Run().ok(); });
  }
  ~Backend() {
    backend->Stop();
    thread.join();
    CHECK(run_ok);
    backend.reset();
  }
};

// A TCP listener on 127.0.0.1, port chosen by the kernel.
struct HostListener {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  uint16_t port = 0;
  HostListener() {
    sockaddr_in sin{};
    sin.sin_family = AF_INET;
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(bind(fd, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) == 0);
    REQUIRE(listen(fd, 16) == 0);
    socklen_t len = sizeof(sin);
    getsockname(fd, reinterpret_cast<sockaddr*>(&sin), &len);
    port = ntohs(sin.sin_port);
  }
  ~HostListener() { close(fd); }
};

// A port nothing listens on (bound, closed).
uint16_t FreePort() {
  HostListener l;
  return l.port;
}

int HostConnect(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&sin), sizeof(sin)) != 0) {
    const int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

bool WriteAll(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t w = write(fd, p, n);
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

// Reads until `n` bytes or `deadline`, from a frontend ring.
std::string ReadRing(TestFront& f, FrontRing& r, size_t n) {
  std::string got;
  const auto deadline = xsock::xen_test::Clock::now() + std::chrono::seconds(10);
  while (got.size() < n && xsock::xen_test::Clock::now() < deadline) {
    char buf[256];
    const size_t k = f.Read(r, buf, std::min(sizeof(buf), n - got.size()));
    got.append(buf, k);
    if (k == 0) f.WaitEvent(std::chrono::milliseconds(20));
  }
  return got;
}

}  // namespace

TEST_CASE("xen: the handshake publishes versions, max-page-order and function-calls") {
  Backend b(4);
  TestFront f(xd::Api(), 1);
  REQUIRE(f.Connect());
  CHECK(f.BackendState() == "4");
  CHECK(xd::StoreRead(pv::BackendPath(0, 1) + "/versions") == "1");
  CHECK(xd::StoreRead(pv::BackendPath(0, 1) + "/function-calls") == "1");
  CHECK(f.max_page_order() == 4);
  CHECK(b.log.Has("event=frontend_connected domid=1"));
}

TEST_CASE("xen: 16 MiB each way through a PVCalls data ring, hashes equal") {
  Backend b(4);
  TestFront f(xd::Api(), 1);
  REQUIRE(f.Connect());
  constexpr size_t kBytes = 16u << 20;
  const std::vector<uint8_t> up = RandomBytes(kBytes, 1);
  const std::vector<uint8_t> down = RandomBytes(kBytes, 2);
  HostListener server;
  uint64_t server_got = kFnvInit;
  size_t server_count = 0;
  std::thread host([&] {
    const int c = accept4(server.fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return;  // server_count stays short: the main thread's checks fail
    std::thread writer([&] { WriteAll(c, down.data(), down.size()); });
    std::vector<uint8_t> buf(1 << 16);
    while (server_count < kBytes) {
      const ssize_t n = read(c, buf.data(), buf.size());
      if (n <= 0) break;
      server_got = Fnv(server_got, buf.data(), static_cast<size_t>(n));
      server_count += static_cast<size_t>(n);
    }
    writer.join();
    close(c);
  });

  REQUIRE(f.Socket(1) == 0);
  REQUIRE(f.ConnectTo(1, server.port, 4) == 0);
  FrontRing* ring = f.Ring(1);
  REQUIRE(ring != nullptr);
  size_t sent = 0, received = 0;
  uint64_t front_got = kFnvInit;
  std::vector<uint8_t> buf(1 << 16);
  const auto deadline = xsock::xen_test::Clock::now() + std::chrono::seconds(120);
  while ((sent < kBytes || received < kBytes) && xsock::xen_test::Clock::now() < deadline) {
    bool progress = false;
    if (sent < kBytes) {
      const size_t n = f.Write(*ring, up.data() + sent, kBytes - sent);
      sent += n;
      progress |= n > 0;
    }
    if (received < kBytes) {
      const size_t n = f.Read(*ring, buf.data(), buf.size());
      front_got = Fnv(front_got, buf.data(), n);
      received += n;
      progress |= n > 0;
    }
    if (received < kBytes && __atomic_load_n(&ring->intf->in_error, __ATOMIC_ACQUIRE) != 0 &&
        __atomic_load_n(&ring->intf->in_prod, __ATOMIC_ACQUIRE) == ring->in_cons) {
      FAIL("in_error " << ring->intf->in_error << " after " << received << " bytes");
    }
    if (!progress) f.WaitEvent(std::chrono::milliseconds(50));
  }
  host.join();
  CHECK(sent == kBytes);
  CHECK(received == kBytes);
  CHECK(server_count == kBytes);
  CHECK(server_got == Fnv(kFnvInit, up.data(), kBytes));
  CHECK(front_got == Fnv(kFnvInit, down.data(), kBytes));
  // The host closed: the frontend sees -ENOTCONN (the spec's orderly EOF) after the data.
  const auto eof_deadline = xsock::xen_test::Clock::now() + std::chrono::seconds(10);
  while (__atomic_load_n(&ring->intf->in_error, __ATOMIC_ACQUIRE) == 0 &&
         xsock::xen_test::Clock::now() < eof_deadline) {
    f.WaitEvent(std::chrono::milliseconds(20));
  }
  CHECK(ring->intf->in_error == -ENOTCONN);
  const size_t before = xd::LiveMappings();
  CHECK(f.Release(1) == 0);
  CHECK(xd::LiveMappings() == before - 2);  // indexes page and data ring unmapped
}

TEST_CASE("xen: a refused connect answers -ECONNREFUSED and the id can connect again") {
  Backend b;
  TestFront f(xd::Api(), 1);
  REQUIRE(f.Connect());
  REQUIRE(f.Socket(5) == 0);
  const size_t before = xd::LiveMappings();
  CHECK(f.ConnectTo(5, FreePort()) == -ECONNREFUSED);
  CHECK(xd::LiveMappings() == before);  // nothing left mapped for the failed attempt
  CHECK(b.log.Has("event=connect_failed domid=1 id=5"));
  HostListener server;
  CHECK(f.ConnectTo(5, server.port) == 0);
  // Errors of the command layer.
  CHECK(f.Socket(5) == -EEXIST);
  CHECK(f.ConnectTo(5, server.port) == -EISCONN);
  CHECK(f.ConnectTo(99, server.port) == -EBADF);
  pv::Request unknown{};
  unknown.cmd = 42;
  auto rsp = f.Call(unknown);
  REQUIRE(rsp);
  CHECK(rsp->ret == pv::kWireENOTSUPP);
  pv::Request udp{};
  udp.cmd = pv::kCmdSocket;
  udp.u.socket.id = 6;
  udp.u.socket.domain = AF_INET;
  udp.u.socket.type = SOCK_DGRAM;
  rsp = f.Call(udp);
  REQUIRE(rsp);
  CHECK(rsp->ret == -EAFNOSUPPORT);
  CHECK(f.BackendState() == "4");  // errors are answers, not faults
}

TEST_CASE("xen: bind, listen, poll and accept serve a host client; release stops listening") {
  Backend b;
  TestFront f(xd::Api(), 1);
  REQUIRE(f.Connect());
  const uint16_t port = FreePort();
  REQUIRE(f.Socket(10) == 0);
  REQUIRE(f.Bind(10, port) == 0);
  REQUIRE(f.Listen(10) == 0);
  pv::Request poll_req{};
  poll_req.cmd = pv::kCmdPoll;
  poll_req.u.poll.id = 10;
  const uint32_t poll_id = f.Send(poll_req);
  // Nothing is waiting yet: poll is not answered.
  CHECK_FALSE(f.Wait(poll_id, std::chrono::milliseconds(100)));
  const int client = HostConnect(port);
  REQUIRE(client >= 0);
  auto poll_rsp = f.Wait(poll_id);
  REQUIRE(poll_rsp);
  CHECK(poll_rsp->ret == 0);
  CHECK(poll_rsp->id == 10);
  const uint32_t acc = f.SendAccept(10, 11);
  auto acc_rsp = f.Wait(acc);
  REQUIRE(acc_rsp);
  CHECK(acc_rsp->ret == 0);
  CHECK(acc_rsp->id == 10);
  FrontRing* ring = f.Ring(11);
  REQUIRE(ring != nullptr);
  REQUIRE(WriteAll(client, reinterpret_cast<const uint8_t*>("ping"), 4));
  CHECK(ReadRing(f, *ring, 4) == "ping");
  REQUIRE(f.Write(*ring, "pong!", 5) == 5);
  char buf[8] = {};
  size_t got = 0;
  while (got < 5) {
    const ssize_t n = read(client, buf + got, 5 - got);
    REQUIRE(n > 0);
    got += static_cast<size_t>(n);
  }
  CHECK(std::string(buf, 5) == "pong!");
  // An accept that waits is answered when the next client comes.
  const uint32_t acc2 = f.SendAccept(10, 12);
  CHECK_FALSE(f.Wait(acc2, std::chrono::milliseconds(100)));
  const int client2 = HostConnect(port);
  REQUIRE(client2 >= 0);
  auto acc2_rsp = f.Wait(acc2);
  REQUIRE(acc2_rsp);
  CHECK(acc2_rsp->ret == 0);
  CHECK(b.log.Has("event=accept domid=1 listener=10 id=12"));
  CHECK(f.Release(11) == 0);
  CHECK(f.Release(12) == 0);
  // The host side of a released socket sees EOF.
  const ssize_t n = read(client, buf, sizeof(buf));
  CHECK(n == 0);
  CHECK(f.Release(10) == 0);
  CHECK(HostConnect(port) == -1);
  CHECK(errno == ECONNREFUSED);
  close(client);
  close(client2);
}

TEST_CASE("xen: garbage commands and impossible indices cut off only that frontend") {
  Backend b;
  TestFront good(xd::Api(), 1);
  REQUIRE(good.Connect());
  HostListener server;
  REQUIRE(good.Socket(1) == 0);
  REQUIRE(good.ConnectTo(1, server.port) == 0);
  const int peer = accept4(server.fd, nullptr, nullptr, SOCK_CLOEXEC);
  REQUIRE(peer >= 0);

  SECTION("a release with reuse neither 0 nor 1") {
    TestFront bad(xd::Api(), 2);
    REQUIRE(bad.Connect());
    REQUIRE(bad.Socket(1) == 0);
    pv::Request r{};
    r.cmd = pv::kCmdRelease;
    r.u.release.id = 1;
    r.u.release.reuse = 0xAB;
    bad.Send(r);
    CHECK(bad.WaitBackendState(6));
    CHECK(b.log.Has("event=frontend_cut_off domid=2 reason=\"garbage command 2"));
  }
  SECTION("a command ring producer index beyond the ring") {
    TestFront bad(xd::Api(), 3);
    REQUIRE(bad.Connect());
    __atomic_store_n(&bad.sring()->req_prod, bad.req_prod_pvt() + 1000, __ATOMIC_RELEASE);
    bad.Notify(bad.cmd_port());
    CHECK(bad.WaitBackendState(6));
    CHECK(b.log.Has("event=frontend_cut_off domid=3 reason=\"command ring req_prod"));
  }
  SECTION("a data ring producer index beyond the ring, with the socket's grants unmapped") {
    TestFront bad(xd::Api(), 4);
    REQUIRE(bad.Connect());
    REQUIRE(bad.Socket(1) == 0);
    REQUIRE(bad.ConnectTo(1, server.port) == 0);
    const int peer4 = accept4(server.fd, nullptr, nullptr, SOCK_CLOEXEC);
    const size_t before = xd::LiveMappings();
    FrontRing* ring = bad.Ring(1);
    __atomic_store_n(&ring->intf->out_prod, ring->bytes * 3 + 1, __ATOMIC_RELEASE);
    bad.Notify(ring->port);
    CHECK(bad.WaitBackendState(6));
    CHECK(b.log.Has("event=frontend_cut_off domid=4 reason=\"socket 1: out_prod"));
    // Command ring, indexes page and data ring: all unmapped.
    CHECK(xd::LiveMappings() == before - 3);
    // Its host connection is closed.
    char c;
    CHECK(read(peer4, &c, 1) == 0);
    close(peer4);
  }
  SECTION("a data ring consumer index past the producer") {
    TestFront bad(xd::Api(), 5);
    REQUIRE(bad.Connect());
    REQUIRE(bad.Socket(1) == 0);
    REQUIRE(bad.ConnectTo(1, server.port) == 0);
    const int peer5 = accept4(server.fd, nullptr, nullptr, SOCK_CLOEXEC);
    FrontRing* ring = bad.Ring(1);
    __atomic_store_n(&ring->intf->in_cons, 100u, __ATOMIC_RELEASE);
    bad.Notify(ring->port);
    CHECK(bad.WaitBackendState(6));
    CHECK(b.log.Has("event=frontend_cut_off domid=5 reason=\"socket 1: in_cons"));
    close(peer5);
  }

  // The good frontend never noticed: its connection still moves bytes both ways.
  CHECK(good.BackendState() == "4");
  FrontRing* ring = good.Ring(1);
  REQUIRE(good.Write(*ring, "still here", 10) == 10);
  char buf[16] = {};
  size_t got = 0;
  while (got < 10) {
    const ssize_t n = read(peer, buf + got, 10 - got);
    REQUIRE(n > 0);
    got += static_cast<size_t>(n);
  }
  CHECK(std::string(buf, 10) == "still here");
  REQUIRE(WriteAll(peer, reinterpret_cast<const uint8_t*>("yes"), 3));
  CHECK(ReadRing(good, *ring, 3) == "yes");
  CHECK(good.Socket(2) == 0);
  close(peer);
}

TEST_CASE("xen: a ring order beyond max-page-order is refused with -EINVAL") {
  Backend b(2);
  TestFront f(xd::Api(), 1);
  REQUIRE(f.Connect());
  REQUIRE(f.max_page_order() == 2);
  HostListener server;
  REQUIRE(f.Socket(1) == 0);
  CHECK(f.ConnectTo(1, server.port, 3) == -EINVAL);
  CHECK(f.ConnectTo(1, server.port, 2) == 0);
}

TEST_CASE("xen: a frontend that closes is torn down and may connect again") {
  Backend b;
  TestFront f(xd::Api(), 1);
  REQUIRE(f.Connect());
  HostListener server;
  REQUIRE(f.Socket(1) == 0);
  REQUIRE(f.ConnectTo(1, server.port) == 0);
  const int peer = accept4(server.fd, nullptr, nullptr, SOCK_CLOEXEC);
  REQUIRE(peer >= 0);
  xd::StoreWrite(pv::FrontendPath(1) + "/state", "5");
  CHECK(f.WaitBackendState(5));
  char c;
  CHECK(read(peer, &c, 1) == 0);  // its sockets were closed
  close(peer);
  xd::StoreWrite(pv::FrontendPath(1) + "/state", "6");
  CHECK(f.WaitBackendState(6));
  xd::StoreWrite(pv::FrontendPath(1) + "/state", "1");
  CHECK(f.WaitBackendState(2));
}

// ---- the xsock extension ------------------------------------------------------------------

namespace {

pv::Request ExtReq(uint32_t cmd, uint64_t id) {
  pv::Request r{};
  r.cmd = cmd;
  r.u.ext_name.id = id;  // every extension request starts with the socket id
  return r;
}

pv::Request SockOpt(uint32_t cmd, uint64_t id, uint32_t level, uint32_t name, uint32_t len,
                    int value = 0) {
  pv::Request r{};
  r.cmd = cmd;
  r.u.ext_sockopt.id = id;
  r.u.ext_sockopt.level = level;
  r.u.ext_sockopt.name = name;
  r.u.ext_sockopt.len = len;
  std::memcpy(r.u.ext_sockopt.value, &value, sizeof(value));
  return r;
}

int PayloadInt(const pv::ExtResponse& r) {
  int v = 0;
  if (r.len == sizeof(v)) std::memcpy(&v, r.data, sizeof(v));
  return v;
}

}  // namespace

TEST_CASE("xen ext: a frontend without xsock-ext sees a standard backend") {
  Backend b(4);
  TestFront f(xd::Api(), 1);
  REQUIRE(f.Connect());
  CHECK(xd::StoreRead(pv::BackendPath(0, 1) + "/" + pv::kExtFeatureNode) == "1");
  REQUIRE(f.Socket(1) == 0);
  auto r = f.Call(ExtReq(pv::kCmdExtGetSockName, 1));
  REQUIRE(r);
  CHECK(r->ret == pv::kWireENOTSUPP);
  pv::Request s6{};
  s6.cmd = pv::kCmdSocket;
  s6.u.socket.id = 2;
  s6.u.socket.domain = AF_INET6;
  s6.u.socket.type = SOCK_STREAM;
  auto r6 = f.Call(s6);
  REQUIRE(r6);
  CHECK(r6->ret == -EAFNOSUPPORT);
}

TEST_CASE("xen ext: a backend with the feature off publishes nothing and refuses") {
  Backend b(4, /*extension=*/false);
  TestFront f(xd::Api(), 1);
  f.request_extension = true;
  REQUIRE(f.Connect());
  CHECK(!xd::StoreRead(pv::BackendPath(0, 1) + "/" + pv::kExtFeatureNode).has_value());
  REQUIRE(f.Socket(1) == 0);
  auto r = f.Call(ExtReq(pv::kCmdExtShutdown, 1));
  REQUIRE(r);
  CHECK(r->ret == pv::kWireENOTSUPP);
}

TEST_CASE("xen ext: half-close, names and options on a negotiated frontend") {
  Backend b(4);
  TestFront f(xd::Api(), 1);
  f.request_extension = true;
  REQUIRE(f.Connect());
  HostListener server;
  constexpr size_t kUp = 100000;
  const std::vector<uint8_t> up = RandomBytes(kUp, 7);
  const std::string reply = "reply after half-close";
  size_t server_count = 0;
  uint64_t server_hash = kFnvInit;
  bool server_saw_eof = false;
  std::thread host([&] {
    const int c = accept4(server.fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return;
    std::vector<uint8_t> buf(1 << 16);
    for (int i = 0; i < 100000; ++i) {
      const ssize_t n = read(c, buf.data(), buf.size());
      if (n == 0) {
        server_saw_eof = true;
        break;
      }
      if (n < 0) break;
      server_hash = Fnv(server_hash, buf.data(), static_cast<size_t>(n));
      server_count += static_cast<size_t>(n);
    }
    WriteAll(c, reinterpret_cast<const uint8_t*>(reply.data()), reply.size());
    close(c);
  });
  REQUIRE(f.Socket(1) == 0);
  REQUIRE(f.ConnectTo(1, server.port, 1) == 0);  // 4 KiB rings: the shutdown queues
  FrontRing* ring = f.Ring(1);
  REQUIRE(ring != nullptr);

  // Names and options first, while the connection is quiet.
  auto peer = f.CallExt(ExtReq(pv::kCmdExtGetPeerName, 1));
  REQUIRE(peer);
  CHECK(peer->base.ret == 0);
  REQUIRE(peer->len == sizeof(sockaddr_in));
  sockaddr_in sin{};
  std::memcpy(&sin, peer->data, sizeof(sin));
  CHECK(sin.sin_family == AF_INET);
  CHECK(ntohs(sin.sin_port) == server.port);
  auto set = f.CallExt(SockOpt(pv::kCmdExtSetSockOpt, 1, IPPROTO_TCP, TCP_NODELAY, 4, 1));
  REQUIRE(set);
  CHECK(set->base.ret == 0);
  auto get = f.CallExt(SockOpt(pv::kCmdExtGetSockOpt, 1, IPPROTO_TCP, TCP_NODELAY, 4));
  REQUIRE(get);
  CHECK(get->base.ret == 0);
  CHECK(PayloadInt(*get) == 1);
  auto setbuf = f.CallExt(SockOpt(pv::kCmdExtSetSockOpt, 1, SOL_SOCKET, SO_RCVBUF, 4, 65536));
  REQUIRE(setbuf);
  CHECK(setbuf->base.ret == 0);
  auto getbuf = f.CallExt(SockOpt(pv::kCmdExtGetSockOpt, 1, SOL_SOCKET, SO_RCVBUF, 4));
  REQUIRE(getbuf);
  CHECK(PayloadInt(*getbuf) >= 65536);  // Linux doubles it
  auto denied = f.CallExt(SockOpt(pv::kCmdExtSetSockOpt, 1, SOL_SOCKET, SO_PRIORITY, 4, 1));
  REQUIRE(denied);
  CHECK(denied->base.ret == -ENOPROTOOPT);
  auto too_long = f.CallExt(SockOpt(pv::kCmdExtSetSockOpt, 1, IPPROTO_TCP, TCP_NODELAY, 33, 1));
  REQUIRE(too_long);
  CHECK(too_long->base.ret == -EINVAL);
  pv::Request bad_how = ExtReq(pv::kCmdExtShutdown, 1);
  bad_how.u.ext_shutdown.how = 7;
  auto bh = f.CallExt(bad_how);
  REQUIRE(bh);
  CHECK(bh->base.ret == -EINVAL);

  // Fill the 4 KiB out ring, then SHUTDOWN(SHUT_WR) behind it; keep writing what is left
  // is not allowed after the shutdown, so write everything first in ring-sized pieces.
  size_t sent = f.Write(*ring, up.data(), kUp);
  REQUIRE(sent > 0);
  // The rest goes in as the backend drains; the shutdown follows the last byte.
  const auto deadline = xsock::xen_test::Clock::now() + std::chrono::seconds(30);
  while (sent < kUp && xsock::xen_test::Clock::now() < deadline) {
    const size_t n = f.Write(*ring, up.data() + sent, kUp - sent);
    sent += n;
    if (n == 0) f.WaitEvent(std::chrono::milliseconds(5));
  }
  REQUIRE(sent == kUp);
  pv::Request shut = ExtReq(pv::kCmdExtShutdown, 1);
  shut.u.ext_shutdown.how = SHUT_WR;
  auto sh = f.CallExt(shut);
  REQUIRE(sh);
  CHECK(sh->base.ret == 0);
  const std::string got = ReadRing(f, *ring, reply.size());
  host.join();
  CHECK(server_saw_eof);
  CHECK(server_count == kUp);
  CHECK(server_hash == Fnv(kFnvInit, up.data(), up.size()));
  CHECK(got == reply);
}

TEST_CASE("xen ext: getsockname after bind to port 0 gives the real port") {
  Backend b(4);
  TestFront f(xd::Api(), 1);
  f.request_extension = true;
  REQUIRE(f.Connect());
  REQUIRE(f.Socket(1) == 0);
  REQUIRE(f.Bind(1, 0) == 0);
  auto name = f.CallExt(ExtReq(pv::kCmdExtGetSockName, 1));
  REQUIRE(name);
  CHECK(name->base.ret == 0);
  REQUIRE(name->len == sizeof(sockaddr_in));
  sockaddr_in sin{};
  std::memcpy(&sin, name->data, sizeof(sin));
  CHECK(sin.sin_family == AF_INET);
  CHECK(sin.sin_port != 0);
  CHECK(sin.sin_addr.s_addr == htonl(INADDR_LOOPBACK));
  auto unknown = f.CallExt(ExtReq(pv::kCmdExtGetSockName, 99));
  REQUIRE(unknown);
  CHECK(unknown->base.ret == -EBADF);
}

// Issue item 5: under the extension dom0 signals a data ring only when the frontend armed
// the flag for it (libxenvchan's rule); a standard frontend gets an event per update, as
// Linux's pvcalls-front needs.
TEST_CASE("xen ext: data-ring events only for an armed flag; standard frontends get one each") {
  const bool ext = GENERATE(true, false);
  CAPTURE(ext);
  Backend b(4);
  TestFront f(xd::Api(), 1);
  f.request_extension = ext;
  REQUIRE(f.Connect());
  REQUIRE(f.extension() == ext);
  HostListener server;
  REQUIRE(f.Socket(1) == 0);
  REQUIRE(f.ConnectTo(1, server.port, 1) == 0);
  const int c = accept4(server.fd, nullptr, nullptr, SOCK_CLOEXEC);
  REQUIRE(c >= 0);
  FrontRing* ring = f.Ring(1);
  REQUIRE(ring != nullptr);
  auto in_prod = [&] { return __atomic_load_n(&ring->intf->in_prod, __ATOMIC_ACQUIRE); };
  auto wait_in_prod = [&](uint32_t want) {
    const auto deadline = xsock::xen_test::Clock::now() + std::chrono::seconds(10);
    while (in_prod() != want && xsock::xen_test::Clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return in_prod() == want;
  };
  // Not armed: the bytes arrive in the ring without an event (standard: with one).
  __atomic_store_n(&ring->intf->ext_fe_in_wake, 0u, __ATOMIC_SEQ_CST);
  const uint64_t before = b.backend->Stats().data_events;
  const std::vector<uint8_t> first = RandomBytes(1000, 3);
  REQUIRE(WriteAll(c, first.data(), first.size()));
  REQUIRE(wait_in_prod(1000));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // any event would be sent by now
  const uint64_t after_first = b.backend->Stats().data_events;
  CHECK(after_first - before == (ext ? 0u : 1u));
  // Armed: the next bytes bring exactly one event, and dom0 took the flag.
  pv::ArmWake(&ring->intf->ext_fe_in_wake);
  const std::vector<uint8_t> second = RandomBytes(500, 4);
  REQUIRE(WriteAll(c, second.data(), second.size()));
  REQUIRE(wait_in_prod(1500));
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  CHECK(b.backend->Stats().data_events - after_first == 1u);
  if (ext) CHECK(__atomic_load_n(&ring->intf->ext_fe_in_wake, __ATOMIC_SEQ_CST) == 0u);
  // Every byte is there, in order.
  std::string got = ReadRing(f, *ring, 1500);
  REQUIRE(got.size() == 1500);
  CHECK(std::memcmp(got.data(), first.data(), 1000) == 0);
  CHECK(std::memcmp(got.data() + 1000, second.data(), 500) == 0);
  close(c);
}

// Issue item 6: a guest (or its front process) that dies loses its sockets and nothing
// else. Under the extension the frontend shares its command ring with an unmap
// notification, so dom0 learns at once, without waiting for XenStore.
TEST_CASE(
    "xen ext: a frontend whose command ring is unmapped loses its sockets at once; "
    "another frontend keeps its own") {
  Backend b(4);
  TestFront dying(xd::Api(), 1);
  dying.request_extension = true;
  REQUIRE(dying.Connect());
  TestFront other(xd::Api(), 2);
  other.request_extension = true;
  REQUIRE(other.Connect());
  HostListener server;
  REQUIRE(dying.Socket(1) == 0);
  REQUIRE(dying.ConnectTo(1, server.port, 1) == 0);
  const int peer1 = accept4(server.fd, nullptr, nullptr, SOCK_CLOEXEC);
  REQUIRE(peer1 >= 0);
  REQUIRE(other.Socket(1) == 0);
  REQUIRE(other.ConnectTo(1, server.port, 1) == 0);
  const int peer2 = accept4(server.fd, nullptr, nullptr, SOCK_CLOEXEC);
  REQUIRE(peer2 >= 0);

  dying.UnshareCommandRing();  // its process died: no XenStore write
  pollfd p{peer1, POLLIN, 0};
  REQUIRE(poll(&p, 1, 10000) == 1);
  char c;
  CHECK(read(peer1, &c, 1) == 0);  // dom0 closed its host socket
  CHECK(b.log.Has("event=frontend_gone domid=1"));
  CHECK(dying.WaitBackendState(5));  // Closing: a new frontend starts from Initialising

  // The other domain's connection is untouched.
  FrontRing* ring = other.Ring(1);
  REQUIRE(ring != nullptr);
  const std::string hello = "still here";
  REQUIRE(other.Write(*ring, hello.data(), hello.size()) == hello.size());
  std::string got(hello.size(), '\0');
  size_t n = 0;
  for (int i = 0; i < 100 && n < got.size(); ++i) {
    pollfd q{peer2, POLLIN, 0};
    if (poll(&q, 1, 100) != 1) continue;
    const ssize_t r = read(peer2, got.data() + n, got.size() - n);
    if (r <= 0) break;
    n += static_cast<size_t>(r);
  }
  CHECK(got == hello);
  CHECK_FALSE(b.log.Has("event=frontend_gone domid=2"));
  close(peer1);
  close(peer2);
}
