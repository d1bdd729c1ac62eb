// The control socket's place in the filesystem (backend/listener.h).
#include "backend/listener.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <string>

#include "test_client.h"

namespace xsock::testing {
namespace {

using backend::Listener;

std::string Message(const absl::Status& s) { return std::string(s.message()); }

// A bound AF_UNIX SEQPACKET socket file at path with nothing listening (as after a crash).
void MakeStaleSocket(const std::string& path) {
  UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  path.copy(addr.sun_path, path.size());
  REQUIRE(bind(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
}

TEST_CASE("listener creates a missing directory 0755 and the socket 0666", "[backend][listener]") {
  TempDir dir;
  const std::string path = dir.path() + "/run/xsockd.sock";
  const mode_t old = umask(077);
  auto l = Listener::Open(path);
  umask(old);
  REQUIRE(l.ok());
  struct stat st;
  REQUIRE(lstat((dir.path() + "/run").c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0755);
  REQUIRE(lstat(path.c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 0777) == 0666);
  l->Close();
  CHECK(access(path.c_str(), F_OK) != 0);
}

TEST_CASE("listener refuses a symlinked directory", "[backend][listener]") {
  TempDir dir;
  REQUIRE(mkdir((dir.path() + "/real").c_str(), 0755) == 0);
  REQUIRE(symlink((dir.path() + "/real").c_str(), (dir.path() + "/link").c_str()) == 0);
  auto l = Listener::Open(dir.path() + "/link/xsockd.sock");
  REQUIRE_FALSE(l.ok());
  CHECK_THAT(Message(l.status()), Catch::Contains("symbolic link"));
  CHECK(access((dir.path() + "/real/xsockd.sock").c_str(), F_OK) != 0);
}

TEST_CASE("listener refuses a directory others may write to", "[backend][listener]") {
  TempDir dir;
  const std::string sub = dir.path() + "/open";
  REQUIRE(mkdir(sub.c_str(), 0755) == 0);
  REQUIRE(chmod(sub.c_str(), 0777) == 0);
  auto l = Listener::Open(sub + "/xsockd.sock");
  REQUIRE_FALSE(l.ok());
  CHECK_THAT(Message(l.status()), Catch::Contains("writable by group or others"));
  // Sticky, like /tmp: accepted.
  REQUIRE(chmod(sub.c_str(), 01777) == 0);
  CHECK(Listener::Open(sub + "/xsockd.sock").ok());
}

TEST_CASE("listener refuses to remove a file that is not a socket", "[backend][listener]") {
  TempDir dir;
  const std::string path = dir.path() + "/xsockd.sock";
  {
    UniqueFd f(open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
    REQUIRE(f.valid());
  }
  auto l = Listener::Open(path);
  REQUIRE_FALSE(l.ok());
  CHECK_THAT(Message(l.status()), Catch::Contains("is not a socket"));
  CHECK(access(path.c_str(), F_OK) == 0);
}

TEST_CASE("listener replaces a stale socket file nothing answers on", "[backend][listener]") {
  TempDir dir;
  const std::string path = dir.path() + "/xsockd.sock";
  MakeStaleSocket(path);
  auto l = Listener::Open(path);
  INFO(l.status().ToString());
  REQUIRE(l.ok());
  Control ctl(path);  // it answers now
}

TEST_CASE("listener refuses to start while another server answers on the path",
          "[backend][listener]") {
  TempDir dir;
  const std::string path = dir.path() + "/xsockd.sock";
  auto first = Listener::Open(path);
  REQUIRE(first.ok());
  auto second = Listener::Open(path);
  REQUIRE_FALSE(second.ok());
  CHECK(Message(second.status()) == "another xsockd is already listening on " + path);
  // The live one keeps its file.
  Control ctl(path);
}

TEST_CASE("listener removes the socket file on close only if it is still its own",
          "[backend][listener]") {
  TempDir dir;
  const std::string path = dir.path() + "/xsockd.sock";
  auto l = Listener::Open(path);
  REQUIRE(l.ok());
  REQUIRE(unlink(path.c_str()) == 0);
  MakeStaleSocket(path);  // a successor's file
  l->Close();
  CHECK(access(path.c_str(), F_OK) == 0);
}

TEST_CASE("listener rejects a path longer than sun_path", "[backend][listener]") {
  auto l = Listener::Open("/tmp/" + std::string(200, 'x'));
  REQUIRE_FALSE(l.ok());
  CHECK_THAT(Message(l.status()), Catch::Contains("the limit is 107"));
}

}  // namespace
}  // namespace xsock::testing
