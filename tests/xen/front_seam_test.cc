// The host-stack seam (backend/host_stack.h) that `xsockd --front xen` is built on: a
// stack installed with InstallHostStack() really carries a routed socket's host side
// (the test stack forwards to the kernel and counts), and what it says about an EOF
// (EofError) is what the app sees.
#include <sys/socket.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <map>
#include <mutex>
#include <string>

#include "backend/host_stack.h"
#include "backend/unix_diag.h"
#include "tests/backend/test_client.h"

namespace xsock::testing {
namespace {

using backend::HostStack;
using backend::KernelHostStack;

class CountingStack final : public HostStack {
 public:
  int eof_error = 0;  // what EofError reports

  int Count(const std::string& call) {
    std::lock_guard lock(mu_);
    return calls_[call];
  }
  int Socket(int domain) override { return Note("socket"), kernel().Socket(domain); }
  int Connect(int fd, const sockaddr* a, socklen_t l) override {
    return Note("connect"), kernel().Connect(fd, a, l);
  }
  int Bind(int fd, const sockaddr* a, socklen_t l) override {
    return Note("bind"), kernel().Bind(fd, a, l);
  }
  int Listen(int fd, int backlog) override { return Note("listen"), kernel().Listen(fd, backlog); }
  int Accept(int fd) override { return Note("accept"), kernel().Accept(fd); }
  int GetSockName(int fd, sockaddr* a, socklen_t* l) override {
    return Note("getsockname"), kernel().GetSockName(fd, a, l);
  }
  int GetPeerName(int fd, sockaddr* a, socklen_t* l) override {
    return Note("getpeername"), kernel().GetPeerName(fd, a, l);
  }
  int Shutdown(int fd, int how) override { return Note("shutdown"), kernel().Shutdown(fd, how); }
  int SetSockOpt(int fd, int level, int name, const void* v, socklen_t l) override {
    return Note("setsockopt"), kernel().SetSockOpt(fd, level, name, v, l);
  }
  int GetSockOpt(int fd, int level, int name, void* v, socklen_t* l) override {
    return Note(level == SOL_SOCKET && name == SO_ERROR ? "so_error" : "getsockopt"),
           kernel().GetSockOpt(fd, level, name, v, l);
  }
  int EofError(int) override { return Note("eof"), eof_error; }

 private:
  static HostStack& kernel() { return KernelHostStack(); }
  void Note(const char* call) {
    std::lock_guard lock(mu_);
    ++calls_[call];
  }
  std::mutex mu_;
  std::map<std::string, int> calls_;
};

// Installed for one test, removed (back to the kernel) after the server is gone.
struct Installed {
  explicit Installed(HostStack* s) { backend::InstallHostStack(s); }
  ~Installed() { backend::InstallHostStack(nullptr); }
};

TEST_CASE("a routed connection's host side goes through the installed stack", "[seam]") {
  CountingStack stack;
  Installed installed(&stack);
  {
    TestServer server;
    Control ctl(server.path());
    ctl.Hello();
    auto listener = TcpListener::Open(AF_INET);
    auto app = AppSocket::Create(ctl, AF_INET, 0);
    const int err = app->Connect(ctl, listener.Addr());
    REQUIRE((err == 0 || err == EINPROGRESS));
    REQUIRE(app->WaitConnectDone() == SocketState::kConnected);
    UniqueFd peer = listener.Accept();
    REQUIRE(peer.valid());
    const std::vector<uint8_t> data = Pattern(100000, 3);
    REQUIRE(app->WriteAll(data.data(), data.size()));
    std::vector<uint8_t> got(data.size());
    REQUIRE(RecvExactly(peer.get(), got));
    CHECK(Diff(got, data) == "");
  }
  CHECK(stack.Count("socket") == 1);
  CHECK(stack.Count("connect") == 1);
  // A nonblocking loopback connect may finish at once (no SO_ERROR) or later (one).
  CHECK(stack.Count("so_error") <= 1);
}

TEST_CASE("an orderly host EOF the stack reports as a reset reaches the app as ECONNRESET",
          "[seam]") {
  CountingStack stack;
  stack.eof_error = ECONNRESET;
  Installed installed(&stack);
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  auto app = AppSocket::Create(ctl, AF_INET, 0);
  const int err = app->Connect(ctl, listener.Addr());
  REQUIRE((err == 0 || err == EINPROGRESS));
  REQUIRE(app->WaitConnectDone() == SocketState::kConnected);
  UniqueFd peer = listener.Accept();
  REQUIRE(peer.valid());
  shutdown(peer.get(), SHUT_WR);  // a FIN, not a reset
  char b;
  CHECK(app->Read(&b, 1) == -ECONNRESET);
  CHECK(app->page()->so_error.load() == ECONNRESET);
  CHECK(stack.Count("eof") >= 1);
}

TEST_CASE("with the kernel stack the same EOF stays an end of stream", "[seam]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  auto app = AppSocket::Create(ctl, AF_INET, 0);
  const int err = app->Connect(ctl, listener.Addr());
  REQUIRE((err == 0 || err == EINPROGRESS));
  REQUIRE(app->WaitConnectDone() == SocketState::kConnected);
  UniqueFd peer = listener.Accept();
  REQUIRE(peer.valid());
  shutdown(peer.get(), SHUT_WR);
  char b;
  CHECK(app->Read(&b, 1) == 0);
}

// The front and the server ask whether the app's end of a socketpair still exists. Both
// lookups must say "alive" for an end that is only half-closed (a minimal guest kernel
// without unix_diag answered -ENOENT for everything, which read as "gone" and dropped the
// rest of a half-closed connection's reply), and "gone" once it is closed.
TEST_CASE("unix socket presence: alive while half-closed, gone after close, both lookups") {
  int pair[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0);
  UniqueFd a(pair[0]), b(pair[1]);
  struct stat st;
  REQUIRE(fstat(a.get(), &st) == 0);
  REQUIRE(shutdown(a.get(), SHUT_WR) == 0);
  uint64_t cookie = 0;
  CHECK(backend::LookUpUnixSocket(st.st_ino, &cookie) == backend::UnixPresence::kAlive);
  CHECK(backend::LookUpUnixSocketInProc(st.st_ino) == backend::UnixPresence::kAlive);
  a.reset();
  CHECK(backend::LookUpUnixSocket(st.st_ino, &cookie) == backend::UnixPresence::kGone);
  CHECK(backend::LookUpUnixSocketInProc(st.st_ino) == backend::UnixPresence::kGone);
}

}  // namespace
}  // namespace xsock::testing
