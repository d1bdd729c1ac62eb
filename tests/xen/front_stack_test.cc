// `xsockd --front xen` over the test double: the real front (backend/xen/front_stack.cc)
// installed as xsockd's host stack in domain 1, the real dom0 backend
// (backend/xen/xen_backend.cc) in a thread as domain 0, an in-process xsockd server
// driven as libxsock.so would (tests/backend/test_client.h), and real TCP on 127.0.0.1.
// Catch2 assertions only on this (the main) thread; helper threads return values.
#include "backend/xen/front_stack.h"

#include <arpa/inet.h>
#include <netinet/in.h>
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

// dom0's backend serving in a thread.
struct Dom0 {
  std::unique_ptr<XenBackend> backend;
  std::thread thread;
  std::atomic<bool> run_ok{false};
  explicit Dom0(uint32_t max_order = 4) {
    xd::ScopedDomain as(0);
    XenBackendOptions o;
    o.max_ring_order = max_order;
    auto b = XenBackend::Create(xd::Api(), o);
    REQUIRE(b.ok());
    backend = std::move(*b);
    thread = std::thread([this] { run_ok = backend->Run().ok(); });
  }
  // Stops it (the front sees its backend go away).
  void Stop() {
    if (!backend) return;
    backend->Stop();
    thread.join();
    backend.reset();
  }
  ~Dom0() { Stop(); }
};

// The toolstack's nodes for domain 1's PVCalls device (xl does this on real Xen).
void Toolstack() {
  const std::string front = pv::FrontendPath(kDomU);
  const std::string back = pv::BackendPath(0, kDomU);
  xd::StoreWrite(front + "/backend", back);
  xd::StoreWrite(front + "/backend-id", "0");
  xd::StoreWrite(front + "/state", "1");
  xd::StoreWrite(back + "/frontend-id", std::to_string(kDomU));
  xd::StoreWrite(back + "/state", "1");
  xd::StoreWrite(back + "/frontend", front);
}

// The whole stack: dom0 backend, domU front installed as the host stack, xsockd server.
struct World {
  std::unique_ptr<Dom0> dom0;
  std::unique_ptr<FrontStack> front;
  std::unique_ptr<TestServer> server;
  explicit World(uint32_t ring_order = 4, uint32_t max_order = 4) {
    xd::Reset();
    dom0 = std::make_unique<Dom0>(max_order);
    Toolstack();
    {
      xd::ScopedDomain as(kDomU);
      FrontStackOptions o;
      o.domid = kDomU;
      o.ring_order = ring_order;
      o.probe_interval = std::chrono::milliseconds(200);
      o.probe_timeout = std::chrono::milliseconds(1000);
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
  auto app = AppSocket::Create(ctl, AF_INET, 0);
  const int err = app->Connect(ctl, addr);
  REQUIRE((err == 0 || err == EINPROGRESS));
  REQUIRE(app->WaitConnectDone() == SocketState::kConnected);
  return app;
}

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
  Control ctl(w.server->path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  auto app = ConnectApp(ctl, listener.Addr());
  UniqueFd peer = listener.Accept();
  REQUIRE(peer.valid());
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
  Control ctl(w.server->path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  auto app = ConnectApp(ctl, listener.Addr());
  UniqueFd peer = listener.Accept();
  REQUIRE(peer.valid());
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

TEST_CASE("front: dom0's backend gone resets the app's connection with ECONNRESET",
          "[front]") {
  World w;
  Control ctl(w.server->path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  auto app = ConnectApp(ctl, listener.Addr());
  UniqueFd peer = listener.Accept();
  REQUIRE(peer.valid());
  const std::vector<uint8_t> data = Pattern(5000, 6);
  REQUIRE(app->WriteAll(data.data(), data.size()));
  std::vector<uint8_t> got(data.size());
  REQUIRE(RecvExactly(peer.get(), got));
  CHECK(Diff(got, data) == "");
  w.dom0->Stop();
  char b;
  CHECK(app->Read(&b, 1, 20000) == -ECONNRESET);
  CHECK(w.front->Stats().backend_losses >= 1);
}

}  // namespace
}  // namespace xsock::testing
