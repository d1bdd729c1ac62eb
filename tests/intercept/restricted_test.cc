// Restricted mode (front_socket.h): a forked child enters it as libxsock.so's prctl hook
// does, confines itself with a seccomp filter that kills on anything but read, write,
// poll & co (tests/programs/sandbox_filter.h, OpenSSH-like), and drives FrontSocket
// against the fake backend. A channel call outside the list ends the child with SIGSYS.
// The fake backend has no poll tick (xsockd's backstop for wakes skipped through a
// stuffed channel), so these cases never need a wake while the channel is stuffed; the
// integration test tests/integration/sandbox.sh covers that against xsockd.
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <functional>
#include <string>

#include "libintercept/front_socket.h"
#include "tests/intercept/fake_backend.h"
#include "tests/programs/sandbox_filter.h"

namespace xsock::intercept {
namespace {

using testing::FakeBackend;
using testing::RandomBytes;

constexpr uint32_t kOrder = kMinRingOrder;  // 4 KiB rings
constexpr size_t kRing = size_t{1} << kOrder;

struct App {
  FrontSocketPool pool;
  int fd;
  FrontSocket* s;

  App(FakeBackend& b, bool nonblocking) {
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
  ssize_t Read(void* p, size_t n) {
    iovec v = {p, n};
    return ToLibc(s->Recv(fd, &v, 1, 0));
  }
  ssize_t Write(const void* p, size_t n) {
    iovec v = {const_cast<void*>(p), n};
    return ToLibc(s->Send(fd, &v, 1, 0));
  }
};

// Forks; the child refreshes the O_NONBLOCK cache and enters restricted mode (the hook's
// order), installs the filter, runs `body` and exits 0 iff it returned true. Returns the
// child's wait status; a child still running after 10 s is killed (SIGKILL).
int RunConfined(App& app, const std::function<bool()>& body) {
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    app.s->RefreshNonBlocking(app.fd);
    EnterRestrictedMode();
    // Allowed besides the OpenSSH-like list: what a sanitizer runtime (build-asan) may
    // call for itself in the child; none of them is a channel call.
    std::vector<sock_filter> f = testprog::SandboxFilter(
        {__NR_mprotect, __NR_sched_yield, __NR_sigaltstack, __NR_rt_sigaction});
    sock_fprog prog = {static_cast<unsigned short>(f.size()), f.data()};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) _exit(3);
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) _exit(4);
    _exit(body() ? 0 : 1);
  }
  int status = 0;
  for (int i = 0; i < 1000; ++i) {  // 10 s
    const pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) return status;
    usleep(10000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return status;
}

void ExpectCleanExit(int status) {
  INFO("wait status " << status);
  CHECK_FALSE((WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS));  // forbidden call
  CHECK_FALSE((WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL));  // stalled
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

}  // namespace

TEST_CASE("restricted mode: a confined blocking child reads then writes 3 rings' worth",
          "[front_socket][restricted]") {
  FakeBackend b({.order = kOrder});
  App app(b, /*nonblocking=*/false);
  const std::string down = RandomBytes(3 * kRing + 17, 31);
  const std::string up = RandomBytes(3 * kRing + 5, 32);
  b.Send(down);
  const int status = RunConfined(app, [&] {
    // Waits for tokens (poll + read), wakes for room (write), then fills `out` past its
    // size: stuffing with write(), waiting for POLLOUT with poll().
    std::string got(down.size(), '\0');
    size_t off = 0;
    for (int i = 0; i < 100000 && off < got.size(); ++i) {
      const ssize_t r = app.Read(got.data() + off, std::min<size_t>(1000, got.size() - off));
      if (r <= 0) return false;
      off += static_cast<size_t>(r);
    }
    if (got != down) return false;
    off = 0;
    for (int i = 0; i < 100000 && off < up.size(); ++i) {
      const ssize_t r = app.Write(up.data() + off, std::min<size_t>(1500, up.size() - off));
      if (r <= 0) return false;
      off += static_cast<size_t>(r);
    }
    return off == up.size();
  });
  ExpectCleanExit(status);
  REQUIRE(b.WaitReceived(up.size(), 5000));
  CHECK(b.Received() == up);
}

TEST_CASE("restricted mode: O_NONBLOCK comes from the cache; a full out stuffs the channel",
          "[front_socket][restricted]") {
  FakeBackend b({.order = kOrder});
  App app(b, /*nonblocking=*/true);
  b.PauseConsuming(true);
  const std::string up = RandomBytes(2 * kRing, 33);
  const int status = RunConfined(app, [&] {
    char c;
    // Nothing to read: EAGAIN at once, without fcntl (a blocking wait would be killed).
    if (app.Read(&c, 1) != -1 || errno != EAGAIN) return false;
    // `out` takes one ring's worth, then EAGAIN; the channel is stuffed (unwritable).
    size_t sent = 0;
    for (int i = 0; i < 100; ++i) {
      const ssize_t r = app.Write(up.data() + sent, up.size() - sent);
      if (r < 0) break;
      sent += static_cast<size_t>(r);
    }
    if (sent != kRing || errno != EAGAIN) return false;
    pollfd p = {app.fd, POLLOUT, 0};
    return poll(&p, 1, 0) == 0;
  });
  ExpectCleanExit(status);
  b.PauseConsuming(false);
  REQUIRE(b.WaitReceived(kRing, 5000));
  CHECK(b.Received() == up.substr(0, kRing));
}

}  // namespace xsock::intercept
