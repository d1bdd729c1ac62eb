// libxsock.so itself, preloaded into preload_probe (a plain socket program) and routed
// to a fake xsockd in this process: the generated hooks, start-up, the environment, and
// the promise that an unrouted process sees no trace of the library.
// meson passes the paths in XSOCK_TEST_LIB and XSOCK_TEST_PROBE.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <thread>
#include <vector>

#include "tests/intercept/fake_xsockd.h"

extern char** environ;

namespace xsock::testing {
namespace {

struct Outcome {
  int status = -1;  // exit status, or -1 if killed for taking too long
  std::string err;  // what it wrote on stderr
};

// Runs the probe with LD_PRELOAD and `vars` (NAME=value) on top of a clean environment,
// while `service` runs here; kills it after timeout_ms.
Outcome RunProbe(const std::vector<std::string>& args, const std::vector<std::string>& vars,
                 const std::function<void()>& service = {}, int timeout_ms = 20000) {
  const char* lib = getenv("XSOCK_TEST_LIB");
  const char* probe = getenv("XSOCK_TEST_PROBE");
  REQUIRE(lib != nullptr);
  REQUIRE(probe != nullptr);
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string s = *e;
    if (s.rfind("LD_PRELOAD=", 0) != 0 && s.rfind("XSOCK_", 0) != 0) env.push_back(s);
  }
  env.push_back(std::string("LD_PRELOAD=") + lib);
  env.insert(env.end(), vars.begin(), vars.end());
  std::vector<char*> envp, argv = {const_cast<char*>(probe)};
  for (auto& s : env) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::vector<std::string> args_copy = args;
  for (auto& a : args_copy) argv.push_back(a.data());
  argv.push_back(nullptr);

  int err_pipe[2];
  REQUIRE(pipe2(err_pipe, O_CLOEXEC) == 0);
  const pid_t pid = fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    dup2(err_pipe[1], STDERR_FILENO);
    execve(probe, argv.data(), envp.data());
    _exit(127);
  }
  close(err_pipe[1]);
  if (service) service();
  Outcome out;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  int status = 0;
  while (waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      status = -1;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  if (status != -1 && WIFEXITED(status)) out.status = WEXITSTATUS(status);
  char buf[4096];
  for (ssize_t n; (n = read(err_pipe[0], buf, sizeof(buf))) > 0;) out.err.append(buf, n);
  close(err_pipe[0]);
  return out;
}

// Waits for socket `id` to exist on the fake xsockd.
FakeBackend* AwaitBackend(FakeXsockd& x, uint64_t id) {
  for (int i = 0; i < 1000; ++i) {
    if (FakeBackend* b = x.backend(id)) return b;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return nullptr;
}

bool Logged(FakeXsockd& x, const std::string& line) {
  const auto log = x.Log();
  return std::find(log.begin(), log.end(), line) != log.end();
}

}  // namespace

TEST_CASE("preloaded, a routed connect goes through xsockd and every hooked call works",
          "[preload]") {
  FakeXsockd xsockd({});
  const Outcome out =
      RunProbe({"routed", "9"}, {"XSOCK_SOCKET=" + xsockd.path(), "XSOCK_ROUTE=127.0.0.0/8"}, [&] {
        FakeBackend* b = AwaitBackend(xsockd, 1);
        REQUIRE(b != nullptr);
        REQUIRE(b->WaitReceived(5, 10000));
        CHECK(b->Received() == "hello");
        b->Send("world");
        REQUIRE(b->WaitReceived(6, 10000));
        b->Send("bye");
      });
  INFO(out.err);
  CHECK(out.status == 0);
  CHECK(out.err.empty());
  CHECK(Logged(xsockd, "connect 1 127.0.0.1:9"));
  CHECK(Logged(xsockd, "getpeername 1"));
  CHECK(Logged(xsockd, "shutdown 1 1"));
  for (const auto& line : xsockd.Log()) CHECK(line.rfind("getsockopt", 0) != 0);  // all local
}

TEST_CASE("preloaded, epoll registered before a nonblocking connect sees its completion",
          "[preload]") {
  FakeXsockd xsockd({.connect = FakeXsockd::ConnectMode::kInProgress, .complete_after_ms = 50});
  const Outcome out =
      RunProbe({"epoll", "9"}, {"XSOCK_SOCKET=" + xsockd.path(), "XSOCK_ROUTE=127.0.0.0/8"}, [&] {
        FakeBackend* b = AwaitBackend(xsockd, 1);
        REQUIRE(b != nullptr);
        CHECK(b->WaitReceived(5, 10000));
      });
  INFO(out.err);
  CHECK(out.status == 0);
}

TEST_CASE("preloaded, an unrouted connection leaves no trace of the library", "[preload]") {
  FakeXsockd xsockd({});
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(bind(listener, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0);
  REQUIRE(listen(listener, 4) == 0);
  socklen_t len = sizeof(a);
  getsockname(listener, reinterpret_cast<sockaddr*>(&a), &len);
  const std::string port = std::to_string(ntohs(a.sin_port));
  auto echo_once = [&] {
    const int c = accept(listener, nullptr, nullptr);
    char buf[4];
    if (c >= 0 && recv(c, buf, 4, MSG_WAITALL) == 4) send(c, buf, 4, 0);
    if (c >= 0) close(c);
  };
  for (const char* route : {"XSOCK_ROUTE=10.0.0.0/8", "XSOCK_ROUTE=", "XSOCK_UNSET=1"}) {
    INFO(route);
    const Outcome out =
        RunProbe({"plain", port}, {"XSOCK_SOCKET=" + xsockd.path(), route}, echo_once);
    INFO(out.err);
    CHECK(out.status == 0);
    CHECK(out.err.empty());
  }
  CHECK(xsockd.connections() == 0);
  close(listener);
}

TEST_CASE("preloaded, an unreachable xsockd refuses with exactly one line on stderr", "[preload]") {
  const Outcome out = RunProbe({"refused", "9"},
                               {"XSOCK_SOCKET=/nonexistent/xsockd.sock", "XSOCK_ROUTE=127.0.0.1"});
  CHECK(out.status == 0);
  CHECK(out.err ==
        "xsock: cannot reach xsockd at /nonexistent/xsockd.sock (ENOENT); routed connections "
        "fail with ECONNREFUSED\n");
}

}  // namespace xsock::testing
