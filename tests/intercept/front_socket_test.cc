// The routed data path (libintercept/front_socket.h) against a fake xsockd that plays
// the backend side of docs/channel.md: content in both directions beyond the ring size,
// kernel-visible readiness (poll, epoll level and edge triggered), EOF and error words,
// EPIPE/SIGPIPE, nonblocking EAGAIN, and the backend going away.
#include "libintercept/front_socket.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <functional>
#include <future>
#include <string>
#include <thread>

#include "libintercept/routed_io.h"
#include "tests/intercept/fake_backend.h"

namespace xsock::intercept {
namespace {

using testing::FakeBackend;
using testing::Fnv1a;
using testing::RandomBytes;

constexpr uint32_t kOrder = kMinRingOrder;  // 4 KiB rings: every test wraps them
constexpr size_t kRing = size_t{1} << kOrder;

// The application's side of one routed socket, set up as libxsock.so does it.
struct App {
  FrontSocketPool pool;  // declared first: destroyed after the socket went back to it
  FakeBackend& backend;
  int fd;
  FrontSocket* s;

  explicit App(FakeBackend& b, bool nonblocking = false) : backend(b) {
    fd = b.TakeAppChannel();
    const int one = 1;
    REQUIRE(setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &one, sizeof(one)) == 0);
    if (nonblocking) REQUIRE(fcntl(fd, F_SETFL, O_NONBLOCK) == 0);
    void* base = b.MapForApp();
    REQUIRE(base != nullptr);
    REQUIRE(FrontSocket::InitPageLocks(static_cast<SocketPage*>(base)) == 0);
    s = pool.Take();
    s->Open(LibcSyscalls(), {base, b.order(), b.socket_id(), AF_INET}, &pool);
  }
  ~App() {
    close(fd);
    s->Unref();
  }
  ssize_t Read(void* p, size_t n, int flags = 0) {
    iovec v = {p, n};
    return ToLibc(s->Recv(fd, &v, 1, flags));
  }
  ssize_t Write(const void* p, size_t n, int flags = 0) {
    iovec v = {const_cast<void*>(p), n};
    return ToLibc(s->Send(fd, &v, 1, flags));
  }
  // The kernel's view of the descriptor.
  short Poll(short events = POLLIN | POLLOUT, int timeout_ms = 0) {
    pollfd p = {fd, events, 0};
    return poll(&p, 1, timeout_ms) > 0 ? p.revents : 0;
  }
};

// Runs f on a thread; if it has not finished after timeout_ms, kills the backend (which
// makes every call return) and fails, describing where the protocol stood.
void WithDeadline(int timeout_ms, const std::function<void()>& f, FakeBackend& b) {
  auto done = std::async(std::launch::async, f);
  if (done.wait_for(std::chrono::milliseconds(timeout_ms)) != std::future_status::ready) {
    const std::string state = b.Describe();
    b.Die();
    done.wait();
    FAIL("timed out after " << timeout_ms << " ms; " << state);
  }
  done.get();
}

// Reads until n bytes or EOF/error, blocking, in chunks of varying size.
std::string ReadAll(App& app, size_t n) {
  std::string got;
  std::string buf(9000, '\0');
  size_t step = 1;
  while (got.size() < n) {
    step = step * 7 % 8999 + 1;
    const ssize_t r = app.Read(buf.data(), std::min(step, n - got.size()));
    if (r <= 0) break;
    got.append(buf.data(), static_cast<size_t>(r));
  }
  return got;
}

void WriteAll(App& app, const std::string& data) {
  size_t off = 0, step = 3;
  while (off < data.size()) {
    step = step * 13 % 7001 + 1;
    const ssize_t r = app.Write(data.data() + off, std::min(step, data.size() - off));
    if (r <= 0) return;
    off += static_cast<size_t>(r);
  }
}

std::atomic<int> g_sigpipes{0};
void CountSigpipe(int) { g_sigpipes.fetch_add(1); }

struct SigpipeCounter {
  struct sigaction old = {};
  SigpipeCounter() {
    struct sigaction sa = {};
    sa.sa_handler = CountSigpipe;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGPIPE, &sa, &old);
    g_sigpipes = 0;
  }
  ~SigpipeCounter() { sigaction(SIGPIPE, &old, nullptr); }
};

}  // namespace

TEST_CASE("blocking reads and writes move 1 MiB each way through 4 KiB rings intact",
          "[front_socket]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  const std::string down = RandomBytes(1 << 20, 1);
  const std::string up = RandomBytes(1 << 20, 2);
  b.Send(down);
  std::string got;
  WithDeadline(
      30000,
      [&] {
        std::thread writer([&] { WriteAll(app, up); });
        got = ReadAll(app, down.size());
        writer.join();
      },
      b);
  REQUIRE(got.size() == down.size());
  CHECK(Fnv1a(got.data(), got.size()) == Fnv1a(down.data(), down.size()));
  REQUIRE(b.WaitReceived(up.size(), 10000));
  const std::string received = b.Received();
  REQUIRE(received.size() == up.size());
  CHECK(Fnv1a(received.data(), received.size()) == Fnv1a(up.data(), up.size()));
  CHECK_FALSE(b.saw_corrupt_index());
}

TEST_CASE("a nonblocking app driven by poll moves 512 KiB each way intact", "[front_socket]") {
  FakeBackend b({.order = kOrder});
  App app(b, /*nonblocking=*/true);
  const std::string down = RandomBytes(512 << 10, 3);
  const std::string up = RandomBytes(512 << 10, 4);
  b.Send(down);
  std::string got;
  size_t sent = 0;
  char buf[3000];
  WithDeadline(
      30000,
      [&] {
        while (got.size() < down.size() || sent < up.size()) {
          const short want = POLLIN | (sent < up.size() ? POLLOUT : 0);
          const short ev = app.Poll(want, 5000);
          REQUIRE(ev != 0);  // a lost wake-up shows here
          if (ev & POLLIN) {
            for (;;) {
              const ssize_t r = app.Read(buf, sizeof(buf));
              if (r < 0) {
                REQUIRE(errno == EAGAIN);
                break;
              }
              REQUIRE(r > 0);
              got.append(buf, static_cast<size_t>(r));
            }
          }
          if ((ev & POLLOUT) && sent < up.size()) {
            for (;;) {
              const ssize_t w =
                  app.Write(up.data() + sent, std::min<size_t>(5000, up.size() - sent));
              if (w < 0) {
                REQUIRE(errno == EAGAIN);
                break;
              }
              sent += static_cast<size_t>(w);
              if (sent == up.size()) break;
            }
          }
        }
      },
      b);
  CHECK(Fnv1a(got.data(), got.size()) == Fnv1a(down.data(), down.size()));
  REQUIRE(b.WaitReceived(up.size(), 10000));
  const std::string received = b.Received();
  CHECK(Fnv1a(received.data(), received.size()) == Fnv1a(up.data(), up.size()));
  // Everything read: no readiness left over.
  CHECK((app.Poll(POLLIN) & POLLIN) == 0);
}

TEST_CASE("an edge-triggered epoll loop moves 512 KiB each way intact", "[front_socket]") {
  FakeBackend b({.order = kOrder});
  App app(b, /*nonblocking=*/true);
  const std::string down = RandomBytes(512 << 10, 5);
  const std::string up = RandomBytes(512 << 10, 6);
  b.Send(down);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev = {};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, app.fd, &ev) == 0);
  std::string got;
  size_t sent = 0;
  char buf[2500];
  WithDeadline(
      30000,
      [&] {
        while (got.size() < down.size() || sent < up.size()) {
          epoll_event out;
          REQUIRE(epoll_wait(ep, &out, 1, 5000) == 1);  // a missing edge shows here
          // Edge triggered: drain both directions until EAGAIN on every edge.
          for (;;) {
            const ssize_t r = app.Read(buf, sizeof(buf));
            if (r < 0) {
              REQUIRE(errno == EAGAIN);
              break;
            }
            got.append(buf, static_cast<size_t>(r));
          }
          while (sent < up.size()) {
            const ssize_t w = app.Write(up.data() + sent, std::min<size_t>(7000, up.size() - sent));
            if (w < 0) {
              REQUIRE(errno == EAGAIN);
              break;
            }
            sent += static_cast<size_t>(w);
          }
        }
      },
      b);
  close(ep);
  CHECK(Fnv1a(got.data(), got.size()) == Fnv1a(down.data(), down.size()));
  REQUIRE(b.WaitReceived(up.size(), 10000));
  const std::string received = b.Received();
  CHECK(Fnv1a(received.data(), received.size()) == Fnv1a(up.data(), up.size()));
}

TEST_CASE("POLLIN is set exactly while data or EOF is pending", "[front_socket]") {
  FakeBackend b({.order = kOrder});
  App app(b, /*nonblocking=*/true);
  CHECK((app.Poll(POLLIN) & POLLIN) == 0);
  b.Send("hello world");
  REQUIRE((app.Poll(POLLIN, 2000) & POLLIN) != 0);
  char buf[64];
  REQUIRE(app.Read(buf, 5) == 5);
  CHECK((app.Poll(POLLIN) & POLLIN) != 0);  // six bytes still there
  REQUIRE(app.Read(buf, sizeof(buf)) == 6);
  CHECK(std::string(buf, 6) == " world");
  CHECK((app.Poll(POLLIN) & POLLIN) == 0);  // token consumed with the last byte
  REQUIRE(app.Read(buf, sizeof(buf)) == -1);
  CHECK(errno == EAGAIN);
  b.Finish();
  REQUIRE((app.Poll(POLLIN, 2000) & POLLIN) != 0);
  CHECK(app.Read(buf, sizeof(buf)) == 0);
  // EOF stays readable, as after a FIN (once xsockd's shutdown follows its token).
  CHECK((app.Poll(POLLIN, 2000) & POLLIN) != 0);
  CHECK((app.Poll(POLLIN) & POLLIN) != 0);
  CHECK(app.Read(buf, sizeof(buf)) == 0);
}

TEST_CASE("level-triggered epoll reports data until it is read", "[front_socket]") {
  FakeBackend b({.order = kOrder});
  App app(b, /*nonblocking=*/true);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev = {};
  ev.events = EPOLLIN;
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, app.fd, &ev) == 0);
  epoll_event out;
  CHECK(epoll_wait(ep, &out, 1, 0) == 0);
  b.Send("abc");
  REQUIRE(epoll_wait(ep, &out, 1, 2000) == 1);
  CHECK(epoll_wait(ep, &out, 1, 0) == 1);  // level: still there
  char buf[8];
  REQUIRE(app.Read(buf, sizeof(buf)) == 3);
  CHECK(epoll_wait(ep, &out, 1, 0) == 0);
  close(ep);
}

TEST_CASE("POLLOUT drops when out is full and returns with an EPOLLET edge when drained",
          "[front_socket]") {
  FakeBackend b({.order = kOrder});
  App app(b, /*nonblocking=*/true);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev = {};
  ev.events = EPOLLOUT | EPOLLET;
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, app.fd, &ev) == 0);
  epoll_event out;
  REQUIRE(epoll_wait(ep, &out, 1, 0) == 1);  // the initial edge: writable
  REQUIRE((app.Poll(POLLOUT) & POLLOUT) != 0);

  b.PauseConsuming(true);
  const std::string data = RandomBytes(3 * kRing, 9);
  size_t sent = 0;
  for (;;) {
    const ssize_t w = app.Write(data.data() + sent, data.size() - sent);
    if (w < 0) break;
    sent += static_cast<size_t>(w);
  }
  CHECK(errno == EAGAIN);
  CHECK(sent >= kRing);
  CHECK((app.Poll(POLLOUT) & POLLOUT) == 0);
  CHECK(epoll_wait(ep, &out, 1, 0) == 0);

  b.PauseConsuming(false);
  REQUIRE(epoll_wait(ep, &out, 1, 2000) == 1);
  CHECK((out.events & EPOLLOUT) != 0);
  CHECK((app.Poll(POLLOUT) & POLLOUT) != 0);
  REQUIRE(b.WaitReceived(sent, 2000));
  CHECK(b.Received() == data.substr(0, sent));
  close(ep);
}

TEST_CASE("data before EOF is delivered, then reads return 0", "[front_socket]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  const std::string data = RandomBytes(3 * kRing + 17, 11);
  b.Send(data);
  b.Finish();
  std::string got;
  WithDeadline(
      10000, [&] { got = ReadAll(app, data.size() + 1); }, b);
  CHECK(got == data);
  char c;
  CHECK(app.Read(&c, 1) == 0);
}

TEST_CASE("an error word becomes its errno once, after the data, then EOF", "[front_socket]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  b.Send("last words");
  b.Finish(ECONNRESET);
  char buf[64];
  REQUIRE(app.Read(buf, sizeof(buf)) == 10);
  errno = 0;
  CHECK(app.Read(buf, sizeof(buf)) == -1);
  CHECK(errno == ECONNRESET);
  CHECK(app.Read(buf, sizeof(buf)) == 0);
}

TEST_CASE("out_error fails writes with EPIPE and SIGPIPE unless MSG_NOSIGNAL", "[front_socket]") {
  SigpipeCounter sigpipes;
  FakeBackend b({.order = kOrder});
  App app(b);
  b.FailWrites(EPIPE);
  errno = 0;
  CHECK(app.Write("x", 1) == -1);
  CHECK(errno == EPIPE);
  CHECK(g_sigpipes == 1);
  CHECK(app.Write("x", 1, MSG_NOSIGNAL) == -1);
  CHECK(errno == EPIPE);
  CHECK(g_sigpipes == 1);
}

TEST_CASE("a reset reports ECONNRESET on the first write, then EPIPE", "[front_socket]") {
  SigpipeCounter sigpipes;
  FakeBackend b({.order = kOrder});
  App app(b);
  b.FailWrites(ECONNRESET);
  CHECK(app.Write("x", 1) == -1);
  CHECK(errno == ECONNRESET);
  CHECK(g_sigpipes == 0);
  CHECK(app.Write("x", 1) == -1);
  CHECK(errno == EPIPE);
  CHECK(g_sigpipes == 1);
}

TEST_CASE("nonblocking calls return EAGAIN instead of waiting", "[front_socket]") {
  FakeBackend b({.order = kOrder});
  SECTION("a nonblocking descriptor") {
    App app(b, /*nonblocking=*/true);
    char c;
    CHECK(app.Read(&c, 1) == -1);
    CHECK(errno == EAGAIN);
    b.PauseConsuming(true);
    const std::string data = RandomBytes(2 * kRing, 12);
    CHECK(app.Write(data.data(), data.size()) == static_cast<ssize_t>(kRing));  // partial
    CHECK(app.Write(data.data(), data.size()) == -1);
    CHECK(errno == EAGAIN);
  }
  SECTION("MSG_DONTWAIT on a blocking descriptor") {
    App app(b);
    char c;
    CHECK(app.Read(&c, 1, MSG_DONTWAIT) == -1);
    CHECK(errno == EAGAIN);
  }
}

TEST_CASE("MSG_PEEK leaves the data, MSG_WAITALL waits for all of it", "[front_socket]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  b.Send("peekaboo");
  char buf[16];
  REQUIRE((app.Poll(POLLIN, 2000) & POLLIN) != 0);
  REQUIRE(app.Read(buf, 4, MSG_PEEK) == 4);
  CHECK(std::string(buf, 4) == "peek");
  CHECK(app.s->ReadableBytes() == 8);
  REQUIRE(app.Read(buf, 8) == 8);
  CHECK(std::string(buf, 8) == "peekaboo");

  const std::string big = RandomBytes(5 * kRing, 13);
  std::string got(big.size(), '\0');
  ssize_t r = 0;
  WithDeadline(
      10000,
      [&] {
        std::thread later([&] {
          // Deliver in pieces, so a plain read would return early.
          for (size_t off = 0; off < big.size(); off += 1000) b.Send(big.substr(off, 1000));
        });
        r = app.Read(got.data(), got.size(), MSG_WAITALL);
        later.join();
      },
      b);
  CHECK(r == static_cast<ssize_t>(big.size()));
  CHECK(got == big);
}

TEST_CASE("readv and writev scatter and gather across the ring wrap", "[front_socket]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  // Move the indices near the end of the ring first.
  const std::string pad = RandomBytes(kRing - 5, 14);
  b.Send(pad);
  REQUIRE(ReadAll(app, pad.size()) == pad);
  WriteAll(app, pad);
  REQUIRE(b.WaitReceived(pad.size(), 2000));

  const std::string msg = "0123456789abcdefghij";
  b.Send(msg);
  char a[3], c[7], d[10];
  iovec in[] = {{a, sizeof(a)}, {c, sizeof(c)}, {d, sizeof(d)}};
  REQUIRE((app.Poll(POLLIN, 2000) & POLLIN) != 0);
  REQUIRE(ToLibc(app.s->Recv(app.fd, in, 3, MSG_WAITALL)) == 20);
  CHECK(std::string(a, 3) + std::string(c, 7) + std::string(d, 10) == msg);

  iovec outv[] = {{const_cast<char*>("wrap"), 4}, {const_cast<char*>("-around"), 7}};
  REQUIRE(ToLibc(app.s->Send(app.fd, outv, 2, 0)) == 11);
  REQUIRE(b.WaitReceived(pad.size() + 11, 2000));
  CHECK(b.Received().substr(pad.size()) == "wrap-around");
}

TEST_CASE("a backend that dies fails blocked and later calls without hanging", "[front_socket]") {
  SigpipeCounter sigpipes;
  FakeBackend b({.order = kOrder});
  App app(b);
  ssize_t r = 0;
  int err = 0;
  std::thread reader([&] {
    char c;
    r = app.Read(&c, 1);
    err = errno;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));  // let it block
  b.Die();
  reader.join();
  CHECK(r == -1);
  CHECK(err == ECONNRESET);
  CHECK((app.Poll() & (POLLIN | POLLOUT | POLLHUP)) == (POLLIN | POLLOUT | POLLHUP));
  const std::string data = RandomBytes(3 * kRing, 15);
  ssize_t w = 0;
  int werr = 0;
  WithDeadline(
      5000,
      [&] {
        // Bytes that fit into `out` are accepted (as a kernel socket accepts them before
        // the RST arrives); the write that needs xsockd fails.
        while ((w = app.Write(data.data(), data.size(), MSG_NOSIGNAL)) > 0) {
        }
        werr = errno;
      },
      b);
  CHECK(w == -1);
  CHECK(werr == EPIPE);
  char c;
  CHECK(app.Read(&c, 1) == -1);
  CHECK(errno == ECONNRESET);
}

TEST_CASE("reads keep waking a backend whose channel is stuffed by a full out ring",
          "[front_socket]") {
  // The host stops reading while it streams to us: `out` stays full and the channel
  // stuffed, yet every in_room_wanted wake must still reach xsockd, or both sides stall.
  FakeBackend b({.order = kOrder});
  App app(b, /*nonblocking=*/true);
  b.PauseConsuming(true);
  const std::string filler = RandomBytes(2 * kRing, 16);
  while (app.Write(filler.data(), filler.size()) > 0) {
  }
  REQUIRE(errno == EAGAIN);
  REQUIRE((app.Poll(POLLOUT) & POLLOUT) == 0);

  const std::string down = RandomBytes(64 * kRing, 17);
  b.Send(down);
  std::string got;
  char buf[1500];
  WithDeadline(
      20000,
      [&] {
        while (got.size() < down.size()) {
          REQUIRE((app.Poll(POLLIN, 5000) & POLLIN) != 0);
          for (;;) {
            const ssize_t r = app.Read(buf, sizeof(buf));
            if (r < 0) break;
            got.append(buf, static_cast<size_t>(r));
          }
        }
      },
      b);
  CHECK(got == down);
  CHECK((app.Poll(POLLOUT) & POLLOUT) == 0);  // still unwritable: out is still full
  CHECK(b.wakes() == 0);                      // nothing drained while out was full
  b.PauseConsuming(false);
  REQUIRE((app.Poll(POLLOUT, 2000) & POLLOUT) != 0);
  for (int i = 0; i < 200 && b.wakes() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));  // the drain is counting
  }
  CHECK(b.wakes() > 0);  // the wakes were there all along
}

TEST_CASE("a connect in progress polls unwritable until the backend finishes it",
          "[front_socket]") {
  SECTION("success") {
    FakeBackend b({.order = kOrder, .state = SocketState::kConnecting});
    App app(b, /*nonblocking=*/true);
    REQUIRE(app.s->Stuff(app.fd).ok());
    CHECK((app.Poll() & (POLLIN | POLLOUT)) == 0);
    CHECK(app.Write("x", 1) == -1);
    CHECK(errno == EAGAIN);
    b.CompleteConnect(0);
    REQUIRE((app.Poll(POLLOUT, 2000) & POLLOUT) != 0);
    CHECK((app.Poll(POLLIN) & POLLIN) == 0);
    CHECK(app.s->state() == SocketState::kConnected);
    CHECK(app.s->TakeSoError() == 0);
    CHECK(app.Write("hi", 2) == 2);
    REQUIRE(b.WaitReceived(2, 2000));
  }
  SECTION("refused") {
    FakeBackend b({.order = kOrder, .state = SocketState::kConnecting});
    App app(b, /*nonblocking=*/true);
    REQUIRE(app.s->Stuff(app.fd).ok());
    b.CompleteConnect(ECONNREFUSED);
    REQUIRE((app.Poll(POLLOUT, 2000) & POLLOUT) != 0);
    CHECK((app.Poll(POLLIN) & POLLIN) != 0);  // readable and writable, like a refused TCP socket
    CHECK(app.s->state() == SocketState::kFailed);
    CHECK(app.s->TakeSoError() == ECONNREFUSED);
    CHECK(app.s->TakeSoError() == 0);  // cleared by reading it
    char c;
    CHECK(app.Read(&c, 1) == 0);
  }
  SECTION("a blocking wait returns the result") {
    FakeBackend b({.order = kOrder, .state = SocketState::kConnecting});
    App app(b);
    REQUIRE(app.s->Stuff(app.fd).ok());
    std::thread later([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      b.CompleteConnect(ETIMEDOUT);
    });
    Result r = Result::Ok(0);
    WithDeadline(
        5000, [&] { r = app.s->WaitConnected(app.fd); }, b);
    later.join();
    CHECK(r.error() == ETIMEDOUT);
  }
  SECTION("a blocking write waits for the connect and reports its failure") {
    SigpipeCounter sigpipes;
    FakeBackend b({.order = kOrder, .state = SocketState::kConnecting});
    App app(b);
    REQUIRE(app.s->Stuff(app.fd).ok());
    std::thread later([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(30));
      b.CompleteConnect(ECONNREFUSED);
    });
    ssize_t w = 0;
    int err = 0;
    WithDeadline(
        5000,
        [&] {
          w = app.Write("x", 1);
          err = errno;
        },
        b);
    later.join();
    CHECK(w == -1);
    CHECK(err == ECONNREFUSED);  // the kernel's sock_error, without SIGPIPE
    CHECK(g_sigpipes == 0);
  }
  SECTION("a blocking wait with SO_SNDTIMEO gives EINPROGRESS") {
    FakeBackend b({.order = kOrder, .state = SocketState::kConnecting});
    App app(b);
    REQUIRE(app.s->Stuff(app.fd).ok());
    app.s->SetTimeout(/*receive=*/false, timeval{0, 20000});
    CHECK(app.s->WaitConnected(app.fd).error() == EINPROGRESS);
  }
}

TEST_CASE("sendfile to a routed socket copies the file through the ring", "[front_socket]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  const std::string content = RandomBytes(5 * kRing + 123, 19);
  char path[] = "/tmp/xsock-sendfile-XXXXXX";
  const int file = mkstemp(path);
  REQUIRE(file >= 0);
  unlink(path);
  REQUIRE(write(file, content.data(), content.size()) == static_cast<ssize_t>(content.size()));
  // With an offset: the file position stays, *offset moves.
  off_t off = 100;
  ssize_t n = 0;
  WithDeadline(
      10000, [&] { n = ToLibc(io::SendFile(*app.s, app.fd, file, &off, 3 * kRing)); }, b);
  CHECK(n == static_cast<ssize_t>(3 * kRing));
  CHECK(off == static_cast<off_t>(100 + 3 * kRing));
  CHECK(lseek(file, 0, SEEK_CUR) == static_cast<off_t>(content.size()));
  // Without: from the file position, which moves.
  REQUIRE(lseek(file, 10, SEEK_SET) == 10);
  WithDeadline(
      10000, [&] { n = ToLibc(io::SendFile(*app.s, app.fd, file, nullptr, 1 << 20)); }, b);
  CHECK(n == static_cast<ssize_t>(content.size() - 10));
  CHECK(lseek(file, 0, SEEK_CUR) == static_cast<off_t>(content.size()));
  REQUIRE(b.WaitReceived(3 * kRing + content.size() - 10, 5000));
  CHECK(b.Received() == content.substr(100, 3 * kRing) + content.substr(10));
  close(file);
}

TEST_CASE("SO_RCVTIMEO ends a blocking read with EAGAIN", "[front_socket]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  app.s->SetTimeout(/*receive=*/true, timeval{0, 20000});
  char c;
  CHECK(app.Read(&c, 1) == -1);
  CHECK(errno == EAGAIN);
}

TEST_CASE("shutdown: reads return what is queued then EOF, writes fail with EPIPE",
          "[front_socket]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  b.Send("unread");
  REQUIRE((app.Poll(POLLIN, 2000) & POLLIN) != 0);
  app.s->ShutdownLocal(SHUT_RDWR);
  char buf[16];
  CHECK(app.Read(buf, sizeof(buf)) == 6);  // as TCP after SHUT_RD
  CHECK(std::string(buf, 6) == "unread");
  CHECK(app.Read(buf, sizeof(buf)) == 0);  // and never waits
  CHECK(app.Write("x", 1, MSG_NOSIGNAL) == -1);
  CHECK(errno == EPIPE);
}

TEST_CASE("a reader that died holding the read lock does not wedge the socket", "[front_socket]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    pthread_mutex_lock(&app.s->page()->read_lock);
    _exit(0);  // dies holding it
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  b.Send("still works");
  char buf[32];
  ssize_t r = 0;
  WithDeadline(
      5000, [&] { r = app.Read(buf, sizeof(buf)); }, b);
  CHECK(std::string(buf, r > 0 ? static_cast<size_t>(r) : 0) == "still works");
}

TEST_CASE("a forked child reads and writes the same socket through the shared page",
          "[front_socket]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  const std::string down = RandomBytes(3 * kRing, 18);
  b.Send(down);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    const std::string got = ReadAll(app, down.size());
    const char reply[] = "child done";
    const bool ok = got == down && app.Write(reply, sizeof(reply) - 1) == sizeof(reply) - 1;
    _exit(ok ? 0 : 1);
  }
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  REQUIRE(b.WaitReceived(10, 2000));
  CHECK(b.Received() == "child done");
  CHECK((app.Poll(POLLIN) & POLLIN) == 0);  // the child took the data and its token
}

}  // namespace xsock::intercept
