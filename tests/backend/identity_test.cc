// Client identity from the kernel (backend/identity.h): SO_PEERCRED and /proc, compared
// with what this process knows about itself; a pid that is gone; a v1-only cgroup file.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <string>

#include "backend/identity.h"
#include "fmt/format.h"
#include "test_client.h"

namespace xsock::testing {
namespace {

std::string SelfExe() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf));
  REQUIRE(n > 0);
  return std::string(buf, static_cast<size_t>(n));
}

std::string SelfCgroupV2() {
  std::ifstream in("/proc/self/cgroup");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("0::", 0) == 0) return line.substr(3);
  }
  return "";
}

TEST_CASE("the peer identity of a connection is this process's, as the kernel reports it",
          "[backend][identity]") {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
  UniqueFd a(sv[0]), b(sv[1]);
  const backend::ClientIdentity id = backend::PeerIdentity(a.get());
  CHECK(id.proc_read);
  CHECK(id.pid == getpid());
  CHECK(id.uid == getuid());
  CHECK(id.gid == getgid());
  CHECK(id.exe == SelfExe());
  struct stat ns;
  REQUIRE(stat("/proc/self/ns/net", &ns) == 0);
  CHECK(id.netns == ns.st_ino);
  CHECK(id.netns != 0);
  const std::string cg = SelfCgroupV2();
  if (!cg.empty()) CHECK(id.cgroup == cg);
  CHECK_FALSE(id.cgroup.empty());
}

TEST_CASE("a pid that has exited leaves only the SO_PEERCRED fields", "[backend][identity]") {
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) _exit(0);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);  // reaped: /proc/<child> is gone
  backend::ClientIdentity id;
  id.pid = child;
  id.uid = 1234;
  id.gid = 5678;
  id.exe = "stale";
  backend::ReadProcIdentity(&id);
  CHECK_FALSE(id.proc_read);
  CHECK(id.pid == child);
  CHECK(id.uid == 1234);
  CHECK(id.gid == 5678);
  CHECK(id.netns == 0);
  // What was there before is not trusted either, but ReadProcIdentity only fills on
  // success; PeerIdentity starts from an empty identity.
  backend::ClientIdentity fresh;
  fresh.pid = child;
  backend::ReadProcIdentity(&fresh);
  CHECK(fresh.exe.empty());
  CHECK(fresh.cgroup.empty());
}

TEST_CASE("on a cgroup v1 host the first hierarchy's path is the cgroup", "[backend][identity]") {
  TempDir dir;
  const std::string p = dir.path() + "/77";
  REQUIRE(mkdir(p.c_str(), 0755) == 0);
  REQUIRE(mkdir((p + "/ns").c_str(), 0755) == 0);
  { std::ofstream(p + "/ns/net") << ""; }
  REQUIRE(symlink("/usr/bin/some program", (p + "/exe").c_str()) == 0);
  { std::ofstream(p + "/cgroup") << "12:cpu,cpuacct:/system.slice/a.service\n1:name=systemd:/x\n"; }
  backend::ClientIdentity id;
  id.pid = 77;
  backend::ReadProcIdentity(&id, dir.path());
  CHECK(id.proc_read);
  CHECK(id.exe == "/usr/bin/some program");
  CHECK(id.cgroup == "/system.slice/a.service");
  struct stat st;
  REQUIRE(stat((p + "/ns/net").c_str(), &st) == 0);
  CHECK(id.netns == st.st_ino);

  { std::ofstream(p + "/cgroup") << "1:name=systemd:/x\n0::/user.slice/u.scope\n"; }
  backend::ReadProcIdentity(&id, dir.path());
  CHECK(id.cgroup == "/user.slice/u.scope");
}

TEST_CASE("client_connect and socket lines carry the client's identity", "[backend][identity]") {
  LogCapture log;
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  const std::string exe = SelfExe();
  const std::string line = log.WaitFor({"event=client_connect", fmt::format("pid={}", getpid()),
                                        fmt::format("uid={}", getuid()),
                                        fmt::format("gid={}", getgid()), "netns=", "cgroup="});
  REQUIRE_FALSE(line.empty());
  CHECK(line.find("exe=" + backend::Quoted(exe)) != std::string::npos);
  auto app = AppSocket::Create(ctl, AF_INET);
  const std::string created =
      log.WaitFor({"event=socket_create", fmt::format("socket={}", app->id()),
                   fmt::format("pid={}", getpid()), fmt::format("uid={}", getuid())});
  REQUIRE_FALSE(created.empty());
  CHECK(created.find("exe=" + backend::Quoted(exe)) != std::string::npos);
}

}  // namespace
}  // namespace xsock::testing
