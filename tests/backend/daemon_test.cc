// The xsockd binary: start-up, refusal when another xsockd is live, bad options, and a
// clean SIGTERM. XSOCKD names the binary (set by meson).
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "test_client.h"

namespace xsock::testing {
namespace {

struct Process {
  pid_t pid = -1;
  std::string err_path;  // its standard error
};

std::string Binary() {
  const char* bin = std::getenv("XSOCKD");
  REQUIRE(bin != nullptr);
  return bin;
}

Process Spawn(const std::vector<std::string>& args, const std::string& err_path,
              const char* env_socket = nullptr) {
  Process p;
  p.err_path = err_path;
  const std::string bin = Binary();
  p.pid = fork();
  REQUIRE(p.pid >= 0);
  if (p.pid == 0) {
    const int fd = open(err_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    dup2(fd, STDERR_FILENO);
    dup2(fd, STDOUT_FILENO);
    if (env_socket != nullptr) {
      setenv("XSOCK_SOCKET", env_socket, 1);
    } else {
      unsetenv("XSOCK_SOCKET");
    }
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>(bin.c_str()));
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execv(bin.c_str(), argv.data());
    _exit(127);
  }
  return p;
}

// Waits for exit; returns the exit status, or -1 on timeout (the process is then killed).
int WaitExit(pid_t pid, int timeout_ms = kTimeoutMs) {
  int status = 0;
  const bool done = Eventually([&] { return waitpid(pid, &status, WNOHANG) == pid; }, timeout_ms);
  if (!done) {
    kill(pid, SIGKILL);
    waitpid(pid, &status, 0);
    return -1;
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

int CountLines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}

TEST_CASE("SIGTERM stops xsockd with exit 0, a log line and the socket file removed",
          "[backend][daemon]") {
  TempDir dir;
  const std::string path = dir.path() + "/run/xsockd.sock";
  Process p = Spawn({"--socket", path}, dir.path() + "/err");
  REQUIRE(Eventually([&] { return access(path.c_str(), F_OK) == 0; }));
  {
    // A client and a socket are open when the signal comes.
    Control ctl(path);
    ctl.Hello();
    auto app = AppSocket::Create(ctl, AF_INET);
    REQUIRE(kill(p.pid, SIGTERM) == 0);
    CHECK(WaitExit(p.pid) == 0);
    CHECK(ctl.WaitDisconnected());
  }
  CHECK(access(path.c_str(), F_OK) != 0);
  const std::string err = ReadFile(p.err_path);
  CHECK_THAT(err, Catch::Contains("event=listening"));
  CHECK_THAT(err, Catch::Contains("event=client_connect"));
  CHECK_THAT(err, Catch::Contains("event=shutdown reason=SIGTERM clients=1 sockets=1"));
}

TEST_CASE("SIGINT stops xsockd like SIGTERM", "[backend][daemon]") {
  TempDir dir;
  const std::string path = dir.path() + "/xsockd.sock";
  Process p = Spawn({"--socket", path, "-q"}, dir.path() + "/err");
  REQUIRE(Eventually([&] { return access(path.c_str(), F_OK) == 0; }));
  REQUIRE(kill(p.pid, SIGINT) == 0);
  CHECK(WaitExit(p.pid) == 0);
  CHECK(access(path.c_str(), F_OK) != 0);
  CHECK(ReadFile(p.err_path).empty());  // -q: only errors
}

TEST_CASE("a second xsockd on a live socket exits 1 with one error line", "[backend][daemon]") {
  TempDir dir;
  const std::string path = dir.path() + "/xsockd.sock";
  Process first = Spawn({}, dir.path() + "/err1", path.c_str());  // path from XSOCK_SOCKET
  REQUIRE(Eventually([&] { return access(path.c_str(), F_OK) == 0; }));
  Process second = Spawn({"--socket", path}, dir.path() + "/err2");
  CHECK(WaitExit(second.pid) == 1);
  const std::string err = ReadFile(second.err_path);
  CHECK(err == "xsockd: another xsockd is already listening on " + path + "\n");
  CHECK(CountLines(err) == 1);
  // The first one is unharmed.
  Control ctl(path);
  ctl.Hello();
  kill(first.pid, SIGTERM);
  CHECK(WaitExit(first.pid) == 0);
}

TEST_CASE("xsockd replaces a stale socket file left by a killed xsockd", "[backend][daemon]") {
  TempDir dir;
  const std::string path = dir.path() + "/xsockd.sock";
  Process first = Spawn({"--socket", path}, dir.path() + "/err1");
  REQUIRE(Eventually([&] { return access(path.c_str(), F_OK) == 0; }));
  kill(first.pid, SIGKILL);
  WaitExit(first.pid);
  REQUIRE(access(path.c_str(), F_OK) == 0);  // left behind
  Process second = Spawn({"--socket", path}, dir.path() + "/err2");
  REQUIRE(Eventually(
      [&] { return ReadFile(second.err_path).find("event=listening") != std::string::npos; }));
  CHECK_THAT(ReadFile(second.err_path), Catch::Contains("event=stale_socket_removed"));
  Control ctl(path);
  ctl.Hello();
  kill(second.pid, SIGTERM);
  CHECK(WaitExit(second.pid) == 0);
}

TEST_CASE("bad options exit 2 with a message naming the option", "[backend][daemon]") {
  TempDir dir;
  Process p = Spawn({"--ring-order", "99"}, dir.path() + "/err");
  CHECK(WaitExit(p.pid) == 2);
  CHECK_THAT(
      ReadFile(p.err_path),
      Catch::StartsWith("xsockd: option '--ring-order': '99' is not an integer in 12..24\n"));
  Process q = Spawn({"--no-such-option"}, dir.path() + "/err2");
  CHECK(WaitExit(q.pid) == 2);
  CHECK_THAT(ReadFile(q.err_path), Catch::Contains("unknown option '--no-such-option'"));
}

TEST_CASE("--help and --version print and exit 0", "[backend][daemon]") {
  TempDir dir;
  Process h = Spawn({"--help"}, dir.path() + "/help");
  CHECK(WaitExit(h.pid) == 0);
  CHECK_THAT(ReadFile(h.err_path), Catch::Contains("EXIT STATUS"));
  Process v = Spawn({"--version"}, dir.path() + "/version");
  CHECK(WaitExit(v.pid) == 0);
  CHECK_THAT(ReadFile(v.err_path), Catch::StartsWith("xsockd 0."));
}

TEST_CASE("an unusable socket directory is a one-line error and exit 1", "[backend][daemon]") {
  TempDir dir;
  REQUIRE(symlink("/tmp", (dir.path() + "/link").c_str()) == 0);
  Process p = Spawn({"--socket", dir.path() + "/link/xsockd.sock"}, dir.path() + "/err");
  CHECK(WaitExit(p.pid) == 1);
  const std::string err = ReadFile(p.err_path);
  CHECK_THAT(err, Catch::Contains("is a symbolic link; refusing to follow it"));
  CHECK(CountLines(err) == 1);
}

}  // namespace
}  // namespace xsock::testing
