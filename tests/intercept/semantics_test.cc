// The call semantics of a routed connected socket, checked against what the kernel's TCP
// socket does (libintercept/front_socket.h, routed_io.h) with the fake xsockd: signals
// with and without SA_RESTART (EINTR, transparent restart, partial counts), SO_RCVTIMEO /
// SO_SNDTIMEO, MSG_PEEK | MSG_WAITALL, MSG_TRUNC, MSG_MORE, recvmmsg / sendmmsg, splice
// to and from pipes, and epoll flags on the channel.
//
// A signal is sent only once the thread is known to sleep in the expected system call
// (/proc/self/task/TID/syscall), so no assertion depends on timing.
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <functional>
#include <future>
#include <initializer_list>
#include <string>
#include <thread>

#include "libintercept/front_socket.h"
#include "libintercept/routed_io.h"
#include "tests/intercept/fake_backend.h"

namespace xsock::intercept {
namespace {

using testing::FakeBackend;
using testing::Fnv1a;
using testing::RandomBytes;

constexpr uint32_t kOrder = kMinRingOrder;
constexpr size_t kRing = size_t{1} << kOrder;

// The application's side of one routed socket, as libxsock.so sets it up.
struct App {
  FrontSocketPool pool;
  int fd;
  FrontSocket* s;

  explicit App(FakeBackend& b, bool nonblocking = false) {
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
  short Poll(short events, int timeout_ms = 0) {
    pollfd p = {fd, events, 0};
    return poll(&p, 1, timeout_ms) > 0 ? p.revents : 0;
  }
  // Fills `out` (the backend must not be consuming); returns the bytes written.
  size_t FillOut() {
    const std::string filler = RandomBytes(2 * kRing, 77);
    size_t n = 0;
    for (int i = 0; i < 16; ++i) {
      const ssize_t w = Write(filler.data(), filler.size(), MSG_DONTWAIT);
      if (w < 0) break;
      n += static_cast<size_t>(w);
    }
    REQUIRE(errno == EAGAIN);
    return n;
  }
};

// ---- signals ----

std::atomic<int> g_handled{0};
void CountSignal(int) { g_handled.fetch_add(1); }

// SIGUSR1 handled by a counter, with or without SA_RESTART, for the test's lifetime.
struct Handler {
  struct sigaction old = {};
  explicit Handler(bool restart) {
    struct sigaction sa = {};
    sa.sa_handler = CountSignal;
    sa.sa_flags = restart ? SA_RESTART : 0;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGUSR1, &sa, &old);
    g_handled = 0;
  }
  ~Handler() { sigaction(SIGUSR1, &old, nullptr); }
};

// The system call thread `tid` is sleeping in, or -1.
long SleepingIn(pid_t tid) {
  char path[64];
  std::snprintf(path, sizeof(path), "/proc/self/task/%d/syscall", static_cast<int>(tid));
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return -1;
  long nr = -1;
  if (std::fscanf(f, "%ld", &nr) != 1) nr = -1;  // "running"
  std::fclose(f);
  return nr;
}

// Waits (bounded) until `tid` sleeps in one of `calls`.
bool WaitSleepingIn(pid_t tid, std::initializer_list<long> calls) {
  for (int i = 0; i < 1000; ++i) {
    const long nr = SleepingIn(tid);
    for (long c : calls) {
      if (nr == c) return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return false;
}

bool WaitHandled(int n) {
  for (int i = 0; i < 1000 && g_handled.load() < n; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return g_handled.load() >= n;
}

const std::initializer_list<long> kPollCalls = {SYS_poll, SYS_ppoll};

// A call on its own thread, whose thread id the test can signal.
class Call {
 public:
  explicit Call(std::function<ssize_t()> f) {
    thread_ = std::thread([this, f = std::move(f)] {
      tid_.store(static_cast<pid_t>(syscall(SYS_gettid)));
      pthread_.store(pthread_self());
      result_ = f();
      errno_ = errno;
      done_.store(true);
    });
    while (tid_.load() == 0) std::this_thread::yield();
  }
  ~Call() {
    if (thread_.joinable()) thread_.join();
  }
  pid_t tid() const { return tid_.load(); }
  void Signal() { pthread_kill(pthread_.load(), SIGUSR1); }
  bool done() const { return done_.load(); }
  // Waits for the result; if the call does not return, kills the backend (which ends
  // every wait) and fails.
  ssize_t Join(FakeBackend& b, int* err) {
    for (int i = 0; i < 2000 && !done_.load(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (!done_.load()) {
      const std::string state = b.Describe();
      b.Die();
      thread_.join();
      FAIL("the call did not return; " << state);
    }
    thread_.join();
    *err = errno_;
    return result_;
  }

 private:
  std::thread thread_;
  std::atomic<pid_t> tid_{0};
  std::atomic<pthread_t> pthread_{};
  std::atomic<bool> done_{false};
  ssize_t result_ = 0;
  int errno_ = 0;
};

}  // namespace

TEST_CASE("a blocked read is interrupted with EINTR by a handler without SA_RESTART",
          "[semantics][signals]") {
  Handler h(/*restart=*/false);
  FakeBackend b({.order = kOrder});
  App app(b);
  char buf[16];
  Call call([&] { return app.Read(buf, sizeof(buf)); });
  REQUIRE(WaitSleepingIn(call.tid(), {SYS_recvmsg}));
  call.Signal();
  int err = 0;
  CHECK(call.Join(b, &err) == -1);
  CHECK(err == EINTR);
  CHECK(g_handled == 1);
  // Nothing was lost: data sent now is read whole.
  b.Send("later");
  REQUIRE((app.Poll(POLLIN, 2000) & POLLIN) != 0);
  CHECK(app.Read(buf, sizeof(buf)) == 5);
  CHECK(std::string(buf, 5) == "later");
}

TEST_CASE("a blocked read is restarted transparently under SA_RESTART", "[semantics][signals]") {
  Handler h(/*restart=*/true);
  FakeBackend b({.order = kOrder});
  App app(b);
  char buf[16];
  Call call([&] { return app.Read(buf, sizeof(buf)); });
  REQUIRE(WaitSleepingIn(call.tid(), {SYS_recvmsg}));
  call.Signal();
  REQUIRE(WaitHandled(1));
  REQUIRE(WaitSleepingIn(call.tid(), {SYS_recvmsg}));  // asleep again, not returned
  CHECK_FALSE(call.done());
  b.Send("after the signal");
  int err = 0;
  CHECK(call.Join(b, &err) == 16);
  CHECK(std::string(buf, 16) == "after the signal");
  CHECK(g_handled == 1);
}

TEST_CASE("SA_RESTART does not restart a read on a socket with SO_RCVTIMEO (EINTR)",
          "[semantics][signals]") {
  // signal(7): socket calls with a timeout set fail with EINTR even under SA_RESTART.
  Handler h(/*restart=*/true);
  FakeBackend b({.order = kOrder});
  App app(b);
  app.s->SetTimeout(/*receive=*/true, timeval{60, 0});
  char buf[4];
  Call call([&] { return app.Read(buf, sizeof(buf)); });
  REQUIRE(WaitSleepingIn(call.tid(), {SYS_recvmsg}));
  call.Signal();
  int err = 0;
  CHECK(call.Join(b, &err) == -1);
  CHECK(err == EINTR);
  CHECK(g_handled == 1);
}

TEST_CASE("a MSG_WAITALL read interrupted after some bytes returns them, even under SA_RESTART",
          "[semantics][signals]") {
  for (const bool restart : {false, true}) {
    Handler h(restart);
    FakeBackend b({.order = kOrder});
    App app(b);
    b.Send("abc");
    REQUIRE((app.Poll(POLLIN, 2000) & POLLIN) != 0);
    char buf[10];
    Call call([&] { return app.Read(buf, sizeof(buf), MSG_WAITALL); });
    REQUIRE(WaitSleepingIn(call.tid(), kPollCalls));
    call.Signal();
    int err = 0;
    CHECK(call.Join(b, &err) == 3);
    CHECK(std::string(buf, 3) == "abc");
    CHECK(g_handled == 1);
  }
}

TEST_CASE("a blocked write that sent nothing: EINTR without SA_RESTART, restarted with it",
          "[semantics][signals]") {
  const std::string data = RandomBytes(100, 5);
  SECTION("without SA_RESTART") {
    Handler h(/*restart=*/false);
    FakeBackend b({.order = kOrder});
    App app(b);
    b.PauseConsuming(true);
    const size_t filled = app.FillOut();
    Call call([&] { return app.Write(data.data(), data.size()); });
    REQUIRE(WaitSleepingIn(call.tid(), {SYS_sendmsg}));
    call.Signal();
    int err = 0;
    CHECK(call.Join(b, &err) == -1);
    CHECK(err == EINTR);
    CHECK(g_handled == 1);
    b.PauseConsuming(false);
    REQUIRE(b.WaitReceived(filled, 2000));
    CHECK(b.ReceivedSize() == filled);  // none of the interrupted write's bytes
  }
  SECTION("with SA_RESTART") {
    Handler h(/*restart=*/true);
    FakeBackend b({.order = kOrder});
    App app(b);
    b.PauseConsuming(true);
    const size_t filled = app.FillOut();
    Call call([&] { return app.Write(data.data(), data.size()); });
    REQUIRE(WaitSleepingIn(call.tid(), {SYS_sendmsg}));
    call.Signal();
    REQUIRE(WaitHandled(1));
    REQUIRE(WaitSleepingIn(call.tid(), {SYS_sendmsg}));
    CHECK_FALSE(call.done());
    b.PauseConsuming(false);
    int err = 0;
    CHECK(call.Join(b, &err) == static_cast<ssize_t>(data.size()));
    REQUIRE(b.WaitReceived(filled + data.size(), 2000));
    CHECK(b.Received().substr(filled) == data);
    CHECK(g_handled == 1);
  }
}

TEST_CASE("a blocked write interrupted after a partial send returns the count",
          "[semantics][signals]") {
  Handler h(/*restart=*/true);
  FakeBackend b({.order = kOrder});
  App app(b);
  b.PauseConsuming(true);
  const std::string data = RandomBytes(3 * kRing, 6);
  Call call([&] { return app.Write(data.data(), data.size()); });
  REQUIRE(WaitSleepingIn(call.tid(), kPollCalls));
  call.Signal();
  int err = 0;
  const ssize_t n = call.Join(b, &err);
  CHECK(n == static_cast<ssize_t>(kRing));
  b.PauseConsuming(false);
  REQUIRE(b.WaitReceived(kRing, 2000));
  CHECK(b.Received() == data.substr(0, kRing));
}

TEST_CASE("SO_SNDTIMEO ends a blocked write with EAGAIN, or its partial count",
          "[semantics][timeouts]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  b.PauseConsuming(true);
  app.s->SetTimeout(/*receive=*/false, timeval{0, 30000});
  const std::string data = RandomBytes(2 * kRing, 7);
  CHECK(app.Write(data.data(), data.size()) == static_cast<ssize_t>(kRing));  // partial
  CHECK(app.Write(data.data(), data.size()) == -1);
  CHECK(errno == EAGAIN);
  // The channel's own timeout follows the socket's (the kernel counts it).
  timeval tv = {};
  socklen_t len = sizeof(tv);
  REQUIRE(getsockopt(app.fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &len) == 0);
  const long ms = tv.tv_sec * 1000 + tv.tv_usec / 1000;
  CHECK((ms >= 30 && ms < 60));  // rounded up to the kernel's tick
}

TEST_CASE("SO_RCVTIMEO ends a partial MSG_WAITALL read with its count", "[semantics][timeouts]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  b.Send("xy");
  REQUIRE((app.Poll(POLLIN, 2000) & POLLIN) != 0);
  app.s->SetTimeout(/*receive=*/true, timeval{0, 30000});
  char buf[8];
  CHECK(app.Read(buf, sizeof(buf), MSG_WAITALL) == 2);
  CHECK(std::string(buf, 2) == "xy");
  CHECK(app.Read(buf, sizeof(buf)) == -1);
  CHECK(errno == EAGAIN);
}

// ---- flags ----

TEST_CASE("MSG_PEEK | MSG_WAITALL waits until the whole length can be peeked",
          "[semantics][flags]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  b.Send("abc");
  REQUIRE((app.Poll(POLLIN, 2000) & POLLIN) != 0);
  char buf[6] = {};
  Call call([&] { return app.Read(buf, sizeof(buf), MSG_PEEK | MSG_WAITALL); });
  REQUIRE(WaitSleepingIn(call.tid(), kPollCalls));
  CHECK_FALSE(call.done());
  b.Send("def");
  int err = 0;
  CHECK(call.Join(b, &err) == 6);
  CHECK(std::string(buf, 6) == "abcdef");
  // Peeked, not taken, and still readable for the next reader.
  REQUIRE((app.Poll(POLLIN, 2000) & POLLIN) != 0);
  char all[16];
  CHECK(app.Read(all, sizeof(all)) == 6);
  CHECK(std::string(all, 6) == "abcdef");
  CHECK((app.Poll(POLLIN) & POLLIN) == 0);
}

TEST_CASE("MSG_PEEK | MSG_WAITALL ended by a timeout keeps the descriptor readable",
          "[semantics][flags]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  b.Send("abc");
  REQUIRE((app.Poll(POLLIN, 2000) & POLLIN) != 0);
  app.s->SetTimeout(/*receive=*/true, timeval{0, 30000});
  char buf[6];
  CHECK(app.Read(buf, sizeof(buf), MSG_PEEK | MSG_WAITALL) == 3);
  CHECK(std::string(buf, 3) == "abc");
  CHECK((app.Poll(POLLIN, 2000) & POLLIN) != 0);  // the token is back
  CHECK(app.Read(buf, sizeof(buf)) == 3);
  CHECK((app.Poll(POLLIN) & POLLIN) == 0);
}

TEST_CASE("MSG_PEEK | MSG_WAITALL returns what is there at EOF, nonblocking or not",
          "[semantics][flags]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  b.Send("ab");
  REQUIRE((app.Poll(POLLIN, 2000) & POLLIN) != 0);
  char buf[6];
  CHECK(app.Read(buf, sizeof(buf), MSG_PEEK | MSG_WAITALL | MSG_DONTWAIT) == 2);
  b.Finish();
  REQUIRE((app.Poll(POLLRDHUP, 2000) & POLLRDHUP) != 0);
  CHECK(app.Read(buf, sizeof(buf), MSG_PEEK | MSG_WAITALL) == 2);
  CHECK(app.Read(buf, sizeof(buf)) == 2);
  CHECK(app.Read(buf, sizeof(buf)) == 0);
}

TEST_CASE("MSG_TRUNC discards the bytes and returns their count, as TCP does",
          "[semantics][flags]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  b.Send("0123456789");
  REQUIRE((app.Poll(POLLIN, 2000) & POLLIN) != 0);
  CHECK(app.Read(nullptr, 3, MSG_TRUNC | MSG_PEEK) == 3);  // nothing taken
  CHECK(app.Read(nullptr, 4, MSG_TRUNC) == 4);
  char buf[16];
  CHECK(app.Read(buf, sizeof(buf)) == 6);
  CHECK(std::string(buf, 6) == "456789");
}

TEST_CASE("MSG_MORE is accepted and the bytes go out", "[semantics][flags]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  CHECK(app.Write("ab", 2, MSG_MORE) == 2);
  CHECK(app.Write("cd", 2, MSG_MORE | MSG_NOSIGNAL) == 2);
  CHECK(app.Write("e", 1) == 1);
  REQUIRE(b.WaitReceived(5, 2000));
  CHECK(b.Received() == "abcde");
}

TEST_CASE("MSG_DONTWAIT on a blocking descriptor makes a write to a full out ring EAGAIN",
          "[semantics][flags]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  b.PauseConsuming(true);
  app.FillOut();
  CHECK(app.Write("x", 1, MSG_DONTWAIT) == -1);
  CHECK(errno == EAGAIN);
  CHECK((app.Poll(POLLOUT) & POLLOUT) == 0);
}

TEST_CASE("a zero-length read: EAGAIN when empty and nonblocking, 0 with data or at EOF",
          "[semantics][flags]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  char c;
  CHECK(app.Read(&c, 0, MSG_DONTWAIT) == -1);
  CHECK(errno == EAGAIN);
  // Blocking, it waits for data, then returns 0 and leaves the data.
  Call call([&] { return app.Read(&c, 0); });
  REQUIRE(WaitSleepingIn(call.tid(), {SYS_recvmsg}));
  b.Send("q");
  int err = 0;
  CHECK(call.Join(b, &err) == 0);
  CHECK(app.Read(&c, 0, MSG_DONTWAIT) == 0);
  CHECK(app.Read(&c, 1) == 1);
  b.Finish();
  REQUIRE((app.Poll(POLLRDHUP, 2000) & POLLRDHUP) != 0);
  CHECK(app.Read(&c, 0, MSG_DONTWAIT) == 0);
}

TEST_CASE("a connect that completed and was reset before the wait ended returns 0",
          "[semantics]") {
  // kClosed comes only after kConnected: the kernel's connect succeeded; recv then
  // reports the reset.
  FakeBackend b({.order = kOrder, .state = SocketState::kConnecting});
  App app(b);
  REQUIRE(app.s->Stuff(app.fd).ok());
  b.CompleteConnect(0);
  b.Finish(ECONNRESET);
  REQUIRE((app.Poll(POLLOUT, 2000) & POLLOUT) != 0);
  b.SetState(SocketState::kClosed);
  CHECK(app.s->WaitConnected(app.fd).ok());
  char c;
  CHECK(app.Read(&c, 1) == -1);
  CHECK(errno == ECONNRESET);
}

TEST_CASE("after a blocking connect reported its failure, reads fail with ENOTCONN",
          "[semantics]") {
  // The kernel disconnects the socket when connect() returns the error (tcp_disconnect);
  // a nonblocking connect's socket, whose error went to SO_ERROR, reads EOF instead.
  FakeBackend b({.order = kOrder, .state = SocketState::kConnecting});
  App app(b);
  REQUIRE(app.s->Stuff(app.fd).ok());
  b.CompleteConnect(ECONNREFUSED);
  REQUIRE((app.Poll(POLLOUT, 2000) & POLLOUT) != 0);
  CHECK(app.s->WaitConnected(app.fd).error() == ECONNREFUSED);
  char c;
  CHECK(app.Read(&c, 1) == -1);
  CHECK(errno == ENOTCONN);
  CHECK(app.Write("x", 1, MSG_NOSIGNAL) == -1);
  CHECK(errno == EPIPE);
}

TEST_CASE("a connect's completion is reported once", "[semantics]") {
  FakeBackend b({.order = kOrder, .state = SocketState::kConnecting});
  App app(b);
  REQUIRE(app.s->Stuff(app.fd).ok());
  b.CompleteConnect(0);
  CHECK(app.s->WaitConnected(app.fd).ok());
  CHECK(app.s->ExchangeConnectReported());  // the blocking connect returned 0: reported
}

// ---- recvmmsg / sendmmsg ----

TEST_CASE("sendmmsg sends every message in order and reports each length",
          "[semantics][mmsg]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  std::string parts[3] = {"one,", "two,", RandomBytes(2 * kRing, 8)};
  iovec iov[3];
  mmsghdr vec[3] = {};
  for (int i = 0; i < 3; ++i) {
    iov[i] = {parts[i].data(), parts[i].size()};
    vec[i].msg_hdr.msg_iov = &iov[i];
    vec[i].msg_hdr.msg_iovlen = 1;
  }
  Result r = Result::Ok(0);
  std::thread t([&] { r = io::SendMmsg(*app.s, app.fd, vec, 3, 0); });
  t.join();
  REQUIRE(r.ok());
  CHECK(r.value() == 3);
  for (int i = 0; i < 3; ++i) CHECK(vec[i].msg_len == parts[i].size());
  const size_t total = parts[0].size() + parts[1].size() + parts[2].size();
  REQUIRE(b.WaitReceived(total, 2000));
  CHECK(b.Received() == parts[0] + parts[1] + parts[2]);
}

TEST_CASE("sendmmsg stops at the first failing message, counting those before it",
          "[semantics][mmsg]") {
  FakeBackend b({.order = kOrder});
  App app(b, /*nonblocking=*/true);
  b.PauseConsuming(true);
  std::string big = RandomBytes(kRing + 10, 9);
  iovec iov[2] = {{big.data(), big.size()}, {big.data(), 5}};
  mmsghdr vec[2] = {};
  for (int i = 0; i < 2; ++i) {
    vec[i].msg_hdr.msg_iov = &iov[i];
    vec[i].msg_hdr.msg_iovlen = 1;
  }
  const Result r = io::SendMmsg(*app.s, app.fd, vec, 2, 0);
  CHECK(r.value() == 1);
  CHECK(vec[0].msg_len == kRing);  // short, and the batch went on to fail
  const Result again = io::SendMmsg(*app.s, app.fd, vec, 2, 0);
  CHECK(again.error() == EAGAIN);
}

TEST_CASE("recvmmsg fills messages, MSG_WAITFORONE stops waiting after the first",
          "[semantics][mmsg]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  b.Send("hello");
  REQUIRE((app.Poll(POLLIN, 2000) & POLLIN) != 0);
  char bufs[4][2];
  iovec iov[4];
  mmsghdr vec[4] = {};
  for (int i = 0; i < 4; ++i) {
    iov[i] = {bufs[i], 2};
    vec[i].msg_hdr.msg_iov = &iov[i];
    vec[i].msg_hdr.msg_iovlen = 1;
  }
  timespec tmo = {30, 0};
  const Result r = io::RecvMmsg(*app.s, app.fd, vec, 4, MSG_WAITFORONE, &tmo);
  REQUIRE(r.ok());
  CHECK(r.value() == 3);
  CHECK(vec[0].msg_len == 2);
  CHECK(vec[1].msg_len == 2);
  CHECK(vec[2].msg_len == 1);
  CHECK(std::string(bufs[0], 2) + std::string(bufs[1], 2) + std::string(bufs[2], 1) == "hello");
  CHECK((tmo.tv_sec > 0 && tmo.tv_sec <= 30));  // what is left, written back
  CHECK(io::RecvMmsg(*app.s, app.fd, vec, 4, MSG_DONTWAIT, nullptr).error() == EAGAIN);
  timespec bad = {0, 1000000000};
  CHECK(io::RecvMmsg(*app.s, app.fd, vec, 4, 0, &bad).error() == EINVAL);
  // At end of stream every entry gets 0 bytes, as for TCP.
  b.Finish();
  REQUIRE((app.Poll(POLLRDHUP, 2000) & POLLRDHUP) != 0);
  const Result eof = io::RecvMmsg(*app.s, app.fd, vec, 4, 0, nullptr);
  CHECK(eof.value() == 4);
  CHECK(vec[3].msg_len == 0);
}

// ---- splice ----

namespace {

struct Pipe {
  int r = -1, w = -1;
  Pipe() { REQUIRE(pipe2(&r, O_CLOEXEC) == 0); }
  ~Pipe() {
    if (r >= 0) close(r);
    if (w >= 0) close(w);
  }
  int Queued() const {
    int n = -1;
    ioctl(r, FIONREAD, &n);
    return n;
  }
};

}  // namespace

TEST_CASE("splice moves a pipe's bytes into a routed socket intact", "[semantics][splice]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  Pipe p;
  const std::string data = RandomBytes(5 * kRing + 7, 10);  // within the pipe's 64 KiB
  REQUIRE(write(p.w, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
  Result r = Result::Ok(0);
  std::thread t([&] { r = io::Splice(nullptr, p.r, nullptr, app.s, app.fd, nullptr, 1 << 20, 0); });
  t.join();
  CHECK(r.value() == static_cast<ssize_t>(data.size()));  // all the pipe held, not len
  REQUIRE(b.WaitReceived(data.size(), 5000));
  const std::string got = b.Received();
  CHECK(Fnv1a(got.data(), got.size()) == Fnv1a(data.data(), data.size()));
  CHECK(p.Queued() == 0);
}

TEST_CASE("splice into a nonblocking routed socket takes only what fits, losing nothing",
          "[semantics][splice]") {
  FakeBackend b({.order = kOrder});
  App app(b, /*nonblocking=*/true);
  b.PauseConsuming(true);
  Pipe p;
  const std::string data = RandomBytes(3 * kRing, 11);
  REQUIRE(write(p.w, data.data(), data.size()) == static_cast<ssize_t>(data.size()));
  const Result r = io::Splice(nullptr, p.r, nullptr, app.s, app.fd, nullptr, data.size(), 0);
  CHECK(r.value() == static_cast<ssize_t>(kRing));
  CHECK(p.Queued() == static_cast<int>(data.size() - kRing));  // the rest stays in the pipe
  CHECK(io::Splice(nullptr, p.r, nullptr, app.s, app.fd, nullptr, data.size(), 0).error() ==
        EAGAIN);
  b.PauseConsuming(false);
  REQUIRE((app.Poll(POLLOUT, 2000) & POLLOUT) != 0);
  size_t moved = kRing;
  for (int i = 0; i < 100 && moved < data.size(); ++i) {
    const Result more = io::Splice(nullptr, p.r, nullptr, app.s, app.fd, nullptr, data.size(), 0);
    if (more.ok()) moved += static_cast<size_t>(more.value());
    if (!more.ok()) REQUIRE((app.Poll(POLLOUT, 2000) & POLLOUT) != 0);
  }
  REQUIRE(b.WaitReceived(data.size(), 10000));  // a hang guard: ASan under load is slow
  CHECK(b.Received() == data);
}

TEST_CASE("splice from an empty pipe: EAGAIN with SPLICE_F_NONBLOCK, 0 without writers",
          "[semantics][splice]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  Pipe p;
  CHECK(io::Splice(nullptr, p.r, nullptr, app.s, app.fd, nullptr, 100, SPLICE_F_NONBLOCK)
            .error() == EAGAIN);
  close(p.w);
  p.w = -1;
  CHECK(io::Splice(nullptr, p.r, nullptr, app.s, app.fd, nullptr, 100, SPLICE_F_NONBLOCK)
            .value() == 0);
  CHECK(io::Splice(nullptr, p.r, nullptr, app.s, app.fd, nullptr, 100, 0).value() == 0);
}

TEST_CASE("splice from a routed socket into a pipe moves the stream intact",
          "[semantics][splice]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  Pipe p;
  const std::string data = RandomBytes(200 * 1024, 12);  // more than the pipe holds
  b.Send(data);
  b.Finish();
  std::string got;
  char buf[65536];
  for (int i = 0; i < 10000; ++i) {
    const Result r = io::Splice(app.s, app.fd, nullptr, nullptr, p.w, nullptr, 1 << 20, 0);
    REQUIRE(r.ok());
    if (r.value() == 0) break;  // end of stream
    size_t left = static_cast<size_t>(r.value());
    while (left > 0) {
      const ssize_t n = read(p.r, buf, std::min(left, sizeof(buf)));
      REQUIRE(n > 0);
      got.append(buf, static_cast<size_t>(n));
      left -= static_cast<size_t>(n);
    }
  }
  CHECK(got.size() == data.size());
  CHECK(Fnv1a(got.data(), got.size()) == Fnv1a(data.data(), data.size()));
}

TEST_CASE("splice into a full pipe: EAGAIN with SPLICE_F_NONBLOCK and the data stays",
          "[semantics][splice]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  Pipe p;
  REQUIRE(fcntl(p.w, F_SETPIPE_SZ, 4096) >= 0);
  const std::string fill(4096, 'f');
  REQUIRE(write(p.w, fill.data(), fill.size()) == 4096);
  b.Send("kept");
  REQUIRE((app.Poll(POLLIN, 2000) & POLLIN) != 0);
  CHECK(io::Splice(app.s, app.fd, nullptr, nullptr, p.w, nullptr, 100, SPLICE_F_NONBLOCK)
            .error() == EAGAIN);
  char buf[8];
  CHECK(app.Read(buf, sizeof(buf)) == 4);
  CHECK(std::string(buf, 4) == "kept");
}

TEST_CASE("splice checks its arguments as the kernel does", "[semantics][splice]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  Pipe p;
  loff_t off = 0;
  CHECK(io::Splice(nullptr, p.r, &off, app.s, app.fd, nullptr, 1, 0).error() == ESPIPE);
  CHECK(io::Splice(nullptr, p.r, nullptr, app.s, app.fd, &off, 1, 0).error() == EINVAL);
  CHECK(io::Splice(app.s, app.fd, nullptr, nullptr, p.w, &off, 1, 0).error() == ESPIPE);
  CHECK(io::Splice(app.s, app.fd, &off, nullptr, p.w, nullptr, 1, 0).error() == EINVAL);
  CHECK(io::Splice(app.s, app.fd, nullptr, app.s, app.fd, nullptr, 1, 0).error() == EINVAL);
  const int file = open("/dev/null", O_RDONLY | O_CLOEXEC);
  CHECK(io::Splice(nullptr, file, nullptr, app.s, app.fd, nullptr, 1, 0).error() == EINVAL);
  close(file);
  CHECK(io::Splice(nullptr, p.r, nullptr, app.s, app.fd, nullptr, 0, 0).value() == 0);
  CHECK(io::Splice(nullptr, p.r, nullptr, app.s, app.fd, nullptr, 1, 0x100).error() == EINVAL);
}

TEST_CASE("a blocked splice from an empty pipe follows SA_RESTART", "[semantics][splice][signals]") {
  for (const bool restart : {false, true}) {
    Handler h(restart);
    FakeBackend b({.order = kOrder});
    App app(b);
    Pipe p;
    Call call([&] {
      return ToLibc(io::Splice(nullptr, p.r, nullptr, app.s, app.fd, nullptr, 100, 0));
    });
    REQUIRE(WaitSleepingIn(call.tid(), {SYS_readv, SYS_read}));
    call.Signal();
    REQUIRE(WaitHandled(1));
    if (restart) {
      REQUIRE(WaitSleepingIn(call.tid(), {SYS_readv, SYS_read}));
      REQUIRE(write(p.w, "pipe", 4) == 4);
    }
    int err = 0;
    const ssize_t n = call.Join(b, &err);
    if (restart) {
      CHECK(n == 4);
      REQUIRE(b.WaitReceived(4, 2000));
      CHECK(b.Received() == "pipe");
    } else {
      CHECK(n == -1);
      CHECK(err == EINTR);
    }
  }
}

// ---- sendfile ----

TEST_CASE("sendfile with an offset past the end sends nothing; negative offset EINVAL",
          "[semantics][sendfile]") {
  FakeBackend b({.order = kOrder});
  App app(b);
  char path[] = "/tmp/xsock-semantics-XXXXXX";
  const int file = mkstemp(path);
  REQUIRE(file >= 0);
  unlink(path);
  REQUIRE(write(file, "0123456789", 10) == 10);
  off_t off = 20;
  CHECK(io::SendFile(*app.s, app.fd, file, &off, 5).value() == 0);
  CHECK(off == 20);
  off = -1;
  CHECK(io::SendFile(*app.s, app.fd, file, &off, 5).error() == EINVAL);
  off = 8;
  CHECK(io::SendFile(*app.s, app.fd, file, &off, 100).value() == 2);  // up to the end
  CHECK(off == 10);
  REQUIRE(b.WaitReceived(2, 2000));
  CHECK(b.Received() == "89");
  close(file);
}

// ---- epoll on the channel ----

TEST_CASE("after the host's FIN epoll reports EPOLLIN | EPOLLRDHUP and no EPOLLHUP",
          "[semantics][epoll]") {
  // A half-closed TCP socket: the kernel reports EPOLLHUP only when both directions are
  // shut down.
  FakeBackend b({.order = kOrder});
  App app(b, /*nonblocking=*/true);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev = {};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, app.fd, &ev) == 0);
  b.Send("bye");
  b.Finish();
  epoll_event out = {};
  for (int i = 0; i < 100; ++i) {
    REQUIRE(epoll_wait(ep, &out, 1, 2000) == 1);
    if (out.events & EPOLLRDHUP) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  CHECK((out.events & (EPOLLIN | EPOLLOUT | EPOLLRDHUP)) == (EPOLLIN | EPOLLOUT | EPOLLRDHUP));
  CHECK((out.events & (EPOLLHUP | EPOLLERR)) == 0);
  char buf[8];
  CHECK(app.Read(buf, sizeof(buf)) == 3);
  CHECK(app.Read(buf, sizeof(buf)) == 0);
  close(ep);
}

TEST_CASE("a backend that goes away gives EPOLLHUP", "[semantics][epoll]") {
  FakeBackend b({.order = kOrder});
  App app(b, /*nonblocking=*/true);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev = {};
  ev.events = EPOLLIN;  // EPOLLHUP is always reported
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, app.fd, &ev) == 0);
  epoll_event out = {};
  CHECK(epoll_wait(ep, &out, 1, 0) == 0);
  b.Die();
  REQUIRE(epoll_wait(ep, &out, 1, 2000) == 1);
  CHECK((out.events & EPOLLHUP) != 0);
  close(ep);
}

namespace {
std::atomic<int> g_sigpipes{0};
void CountSigpipe(int) { g_sigpipes.fetch_add(1); }
}  // namespace

TEST_CASE("a backend that also shuts the channel's read side gives TCP's EPOLLHUP after a reset",
          "[semantics][epoll]") {
  // What xsockd would do on a host RST to give the kernel's poll mask (docs: proposed):
  // error words, token, then SHUT_RDWR of its end instead of SHUT_WR. The library must
  // still report data, the error once, EOF, and EPIPE with SIGPIPE.
  struct sigaction sa = {}, old = {};
  sa.sa_handler = CountSigpipe;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGPIPE, &sa, &old);
  g_sigpipes = 0;
  FakeBackend b({.order = kOrder});
  App app(b, /*nonblocking=*/true);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev = {};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, app.fd, &ev) == 0);
  b.Send("abc");
  b.FailWrites(ECONNRESET);
  b.Finish(ECONNRESET);
  REQUIRE((app.Poll(POLLRDHUP, 2000) & POLLRDHUP) != 0);
  b.ShutdownChannelRead();
  epoll_event out = {};
  REQUIRE(epoll_wait(ep, &out, 1, 2000) == 1);
  CHECK((out.events & (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLHUP)) ==
        (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLHUP));
  char buf[8];
  CHECK(app.Read(buf, sizeof(buf)) == 3);
  CHECK(app.Read(buf, sizeof(buf)) == -1);
  CHECK(errno == ECONNRESET);
  CHECK(app.Read(buf, sizeof(buf)) == 0);
  CHECK(app.Write("x", 1) == -1);
  CHECK(errno == EPIPE);
  CHECK(g_sigpipes == 1);
  CHECK((app.Poll(POLLIN | POLLOUT) & POLLHUP) != 0);
  close(ep);
  sigaction(SIGPIPE, &old, nullptr);
}

TEST_CASE("EPOLLONESHOT reports once until re-armed", "[semantics][epoll]") {
  FakeBackend b({.order = kOrder});
  App app(b, /*nonblocking=*/true);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev = {};
  ev.events = EPOLLIN | EPOLLONESHOT;
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, app.fd, &ev) == 0);
  b.Send("a");
  epoll_event out;
  REQUIRE(epoll_wait(ep, &out, 1, 2000) == 1);
  CHECK(epoll_wait(ep, &out, 1, 0) == 0);  // disarmed though still readable
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_MOD, app.fd, &ev) == 0);
  CHECK(epoll_wait(ep, &out, 1, 0) == 1);
  close(ep);
}

TEST_CASE("EPOLLEXCLUSIVE and nested epoll sets see the channel's readiness",
          "[semantics][epoll]") {
  FakeBackend b({.order = kOrder});
  App app(b, /*nonblocking=*/true);
  const int inner = epoll_create1(EPOLL_CLOEXEC);
  const int outer = epoll_create1(EPOLL_CLOEXEC);
  const int excl = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev = {};
  ev.events = EPOLLIN;
  REQUIRE(epoll_ctl(inner, EPOLL_CTL_ADD, app.fd, &ev) == 0);
  REQUIRE(epoll_ctl(outer, EPOLL_CTL_ADD, inner, &ev) == 0);
  ev.events = EPOLLIN | EPOLLEXCLUSIVE;
  REQUIRE(epoll_ctl(excl, EPOLL_CTL_ADD, app.fd, &ev) == 0);
  epoll_event out;
  CHECK(epoll_wait(outer, &out, 1, 0) == 0);
  CHECK(epoll_wait(excl, &out, 1, 0) == 0);
  b.Send("x");
  REQUIRE(epoll_wait(outer, &out, 1, 2000) == 1);
  CHECK(epoll_wait(excl, &out, 1, 2000) == 1);
  CHECK(epoll_wait(inner, &out, 1, 0) == 1);
  char c;
  CHECK(app.Read(&c, 1) == 1);
  CHECK(epoll_wait(outer, &out, 1, 0) == 0);
  CHECK(epoll_wait(excl, &out, 1, 0) == 0);
  close(excl);
  close(outer);
  close(inner);
}

}  // namespace xsock::intercept
