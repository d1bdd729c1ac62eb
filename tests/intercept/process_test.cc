// Process life in the core: the environment an exec gets back (exec_env.h), the ranges
// close_range/closefrom may close around the library's own descriptor (own_fds.h), the
// control connection kept out of the application's way (control_client.h), and the
// recognition of inherited channels (inherited.h).
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "libintercept/control_client.h"
#include "libintercept/exec_env.h"
#include "libintercept/inherited.h"
#include "libintercept/own_fds.h"
#include "tests/intercept/fake_xsockd.h"

namespace xsock::intercept {
namespace {

using execenv::BuildRestored;
using execenv::PlanRestore;
using execenv::RestorePlan;
using execenv::SavedEnv;

// An envp built from strings, kept alive with it.
struct Env {
  explicit Env(std::vector<std::string> v) : entries(std::move(v)) {
    for (auto& e : entries) ptrs.push_back(e.c_str());
    ptrs.push_back(nullptr);
  }
  const char* const* get() const { return ptrs.data(); }
  std::vector<std::string> entries;
  std::vector<const char*> ptrs;
};

const SavedEnv& Saved() {
  static const SavedEnv s = [] {
    Env start({"PATH=/bin", "XSOCK_SOCKET=/run/x.sock", "XSOCK_ROUTE=127.0.0.0/8",
               "XSOCK_ROUTE=ignored-second", "LD_PRELOAD=/opt/xsock/libxsock.so", "HOME=/"});
    return SavedEnv::Capture(start.get(), "/opt/xsock/libxsock.so");
  }();
  return s;
}

// Restores `envp` and returns the result as strings (empty optional-like flag if unchanged).
std::vector<std::string> Restore(const char* const* envp, bool* changed) {
  const RestorePlan plan = PlanRestore(envp, Saved());
  *changed = plan.needed;
  std::vector<const char*> out(plan.entries);
  std::vector<char> scratch(plan.scratch + 1);
  std::vector<std::string> result;
  if (!plan.needed) {
    for (const char* const* e = envp; e != nullptr && *e != nullptr; ++e) result.emplace_back(*e);
    return result;
  }
  char* const* built = BuildRestored(envp, Saved(), plan, out.data(), scratch.data());
  size_t n = 0;
  for (; built[n] != nullptr; ++n) result.emplace_back(built[n]);
  CHECK(n + 1 == plan.entries);
  return result;
}

std::set<std::string> Names(const std::vector<std::string>& env) {
  std::set<std::string> names;
  for (const auto& e : env) {
    const std::string name = e.substr(0, e.find('='));
    CHECK(names.insert(name).second);  // every name once
  }
  return names;
}

TEST_CASE("start-up capture keeps the library path and the first of each XSOCK_ name",
          "[exec_env]") {
  CHECK(Saved().preload_entry() == "LD_PRELOAD=/opt/xsock/libxsock.so");
  CHECK(Saved().xsock_entries() ==
        std::vector<std::string>{"XSOCK_SOCKET=/run/x.sock", "XSOCK_ROUTE=127.0.0.0/8"});
}

TEST_CASE("a scrubbed environment gets LD_PRELOAD and the XSOCK_ variables back", "[exec_env]") {
  bool changed = false;
  SECTION("empty array") {
    Env empty({});
    const auto env = Restore(empty.get(), &changed);
    CHECK(changed);
    CHECK(env == std::vector<std::string>{"LD_PRELOAD=/opt/xsock/libxsock.so",
                                          "XSOCK_SOCKET=/run/x.sock", "XSOCK_ROUTE=127.0.0.0/8"});
  }
  SECTION("null envp, which the kernel takes as empty") {
    const auto env = Restore(nullptr, &changed);
    CHECK(changed);
    CHECK(env.size() == 3);
  }
  SECTION("a fresh environment built by the program keeps its own entries first") {
    Env fresh({"USER=alice", "PATH=/usr/bin"});
    const auto env = Restore(fresh.get(), &changed);
    CHECK(changed);
    REQUIRE(env.size() == 5);
    CHECK(env[0] == "USER=alice");
    CHECK(env[1] == "PATH=/usr/bin");
    Names(env);
  }
  SECTION("only the XSOCK_ variables were dropped") {
    Env partial({"LD_PRELOAD=/opt/xsock/libxsock.so", "XSOCK_ROUTE=10.0.0.0/8"});
    const auto env = Restore(partial.get(), &changed);
    CHECK(changed);
    // The program's own XSOCK_ROUTE value wins; only the missing name is added.
    CHECK(env == std::vector<std::string>{"LD_PRELOAD=/opt/xsock/libxsock.so",
                                          "XSOCK_ROUTE=10.0.0.0/8", "XSOCK_SOCKET=/run/x.sock"});
  }
}

TEST_CASE("an environment that has everything is passed unchanged, never duplicated",
          "[exec_env]") {
  bool changed = true;
  SECTION("same path") {
    Env full({"XSOCK_SOCKET=/other.sock", "LD_PRELOAD=/opt/xsock/libxsock.so",
              "XSOCK_ROUTE=127.0.0.0/8", "A=b"});
    const auto env = Restore(full.get(), &changed);
    CHECK_FALSE(changed);
  }
  SECTION("our library under another directory, among others, space separated") {
    Env full({"LD_PRELOAD=/usr/lib/libfoo.so /build/libintercept/libxsock.so", "XSOCK_SOCKET=/x",
              "XSOCK_ROUTE=1.2.3.4"});
    Restore(full.get(), &changed);
    CHECK_FALSE(changed);
  }
}

TEST_CASE("LD_PRELOAD without our library gets it appended; an empty one is replaced",
          "[exec_env]") {
  bool changed = false;
  SECTION("other libraries") {
    Env other({"LD_PRELOAD=/usr/lib/libfoo.so", "XSOCK_SOCKET=/x", "XSOCK_ROUTE=r"});
    const auto env = Restore(other.get(), &changed);
    CHECK(changed);
    CHECK(env == std::vector<std::string>{"LD_PRELOAD=/usr/lib/libfoo.so:/opt/xsock/libxsock.so",
                                          "XSOCK_SOCKET=/x", "XSOCK_ROUTE=r"});
  }
  SECTION("a name that merely contains ours is not ours") {
    Env other({"LD_PRELOAD=/lib/libxsock.so.old", "XSOCK_SOCKET=/x", "XSOCK_ROUTE=r"});
    const auto env = Restore(other.get(), &changed);
    CHECK(changed);
    CHECK(env[0] == "LD_PRELOAD=/lib/libxsock.so.old:/opt/xsock/libxsock.so");
  }
  SECTION("empty") {
    Env empty({"LD_PRELOAD=", "HOME=/"});
    const auto env = Restore(empty.get(), &changed);
    CHECK(changed);
    CHECK(env == std::vector<std::string>{"LD_PRELOAD=/opt/xsock/libxsock.so", "HOME=/",
                                          "XSOCK_SOCKET=/run/x.sock", "XSOCK_ROUTE=127.0.0.0/8"});
  }
}

TEST_CASE("a library started without a path restores nothing", "[exec_env]") {
  const SavedEnv none;
  Env empty({});
  CHECK_FALSE(PlanRestore(empty.get(), none).needed);
}

// A file in a fresh temporary directory, removed with it.
struct TempDir {
  TempDir() {
    char tmpl[] = "/tmp/xsock-exec-env.XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    path = tmpl;
  }
  ~TempDir() {
    for (const auto& f : files) unlink(f.c_str());
    for (auto it = dirs.rbegin(); it != dirs.rend(); ++it) rmdir(it->c_str());
    rmdir(path.c_str());
  }
  std::string File(const std::string& name, mode_t mode) {
    const std::string p = path + "/" + name;
    const int fd = open(p.c_str(), O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0600);
    REQUIRE(fd >= 0);
    close(fd);
    REQUIRE(chmod(p.c_str(), mode) == 0);  // after creation: the umask does not apply
    files.push_back(p);
    return p;
  }
  std::string Dir(const std::string& name) {
    const std::string p = path + "/" + name;
    REQUIRE(mkdir(p.c_str(), 0700) == 0);
    dirs.push_back(p);
    return p;
  }
  std::string path;
  std::vector<std::string> files, dirs;
};

bool SetId(const std::string& p) {
  struct stat st;
  REQUIRE(stat(p.c_str(), &st) == 0);
  return execenv::IsSetIdProgram(st);
}

TEST_CASE("set-user-ID and set-group-ID programs are recognised", "[exec_env]") {
  TempDir d;
  CHECK(SetId(d.File("suid", 04755)));
  CHECK(SetId(d.File("sgid", 02755)));
  CHECK_FALSE(SetId(d.File("plain", 0755)));
  CHECK_FALSE(SetId(d.path));  // a directory with no such bits
  const std::string sgid_dir = d.Dir("sgid-dir");
  REQUIRE(chmod(sgid_dir.c_str(), 02755) == 0);
  CHECK_FALSE(SetId(sgid_dir));  // set-group-ID on a directory means inheritance, not exec
}

TEST_CASE("the exec path search finds what execvp would run", "[exec_env]") {
  TempDir d;
  const std::string a = d.Dir("a"), b = d.Dir("b");
  d.File("a/tool", 0644);  // not executable: skipped
  const std::string tool = d.File("b/tool", 04755);
  char out[4096];
  const std::string path = a + "::" + b;  // the empty element is the current directory
  REQUIRE(execenv::ResolveExecPath("tool", path.c_str(), out, sizeof(out)));
  CHECK(std::string(out) == tool);
  CHECK(SetId(out));
  CHECK_FALSE(execenv::ResolveExecPath("missing", path.c_str(), out, sizeof(out)));
  REQUIRE(execenv::ResolveExecPath("./x/y", path.c_str(), out, sizeof(out)));
  CHECK(std::string(out) == "./x/y");                                   // a slash: taken as is
  CHECK_FALSE(execenv::ResolveExecPath("tool", path.c_str(), out, 8));  // does not fit
}

// ---- close_range / closefrom around our own descriptors ----

std::vector<std::pair<unsigned, unsigned>> Split(unsigned first, unsigned last,
                                                 std::vector<int> skip) {
  std::vector<std::pair<unsigned, unsigned>> ranges;
  const int r = ForEachRangeSkipping(first, last, skip, [&](unsigned a, unsigned b) {
    ranges.emplace_back(a, b);
    return 0;
  });
  CHECK(r == 0);
  return ranges;
}

using Ranges = std::vector<std::pair<unsigned, unsigned>>;

TEST_CASE("close ranges are split around the library's descriptors", "[own_fds]") {
  CHECK(Split(3, ~0u, {}) == Ranges{{3, ~0u}});
  CHECK(Split(3, ~0u, {1000}) == Ranges{{3, 999}, {1001, ~0u}});
  CHECK(Split(3, 10, {1000}) == Ranges{{3, 10}});  // outside the range
  CHECK(Split(3, 10, {2, 3}) == Ranges{{4, 10}});  // at the start
  CHECK(Split(3, 10, {10}) == Ranges{{3, 9}});     // at the end
  CHECK(Split(5, 5, {5}).empty());                 // nothing left to close
  CHECK(Split(0, 20, {4, 5, 9}) == Ranges{{0, 3}, {6, 8}, {10, 20}});
  CHECK(Split(0, ~0u, {-1, 7}) == Ranges{{0, 6}, {8, ~0u}});
}

TEST_CASE("a failing close stops the split and reports its result", "[own_fds]") {
  int calls = 0;
  const std::vector<int> skip = {5};
  const int r = ForEachRangeSkipping(0, 10, skip, [&](unsigned, unsigned) {
    ++calls;
    return -1;
  });
  CHECK(r == -1);
  CHECK(calls == 1);
}

TEST_CASE("own descriptors are registered and listed in order", "[own_fds]") {
  OwnFds::Add(900);
  OwnFds::Add(12);
  int out[OwnFds::kSlots];
  size_t n = OwnFds::Snapshot(out);
  std::vector<int> got(out, out + n);
  CHECK(std::find(got.begin(), got.end(), 900) != got.end());
  CHECK(std::is_sorted(got.begin(), got.end()));
  OwnFds::Remove(900);
  OwnFds::Remove(12);
  n = OwnFds::Snapshot(out);
  got.assign(out, out + n);
  CHECK(std::find(got.begin(), got.end(), 900) == got.end());
  CHECK(std::find(got.begin(), got.end(), 12) == got.end());
}

// ---- the control connection, out of the way ----

int ControlFd(const ControlClient& c) {
  for (int fd = 0; fd < 4096; ++fd) {
    if (c.IsOurs(fd)) return fd;
  }
  return -1;
}

bool Registered(int fd) {
  int out[OwnFds::kSlots];
  const size_t n = OwnFds::Snapshot(out);
  return std::find(out, out + n, fd) != out + n;
}

TEST_CASE("the control connection sits on a high, close-on-exec, registered descriptor",
          "[control_client]") {
  testing::FakeXsockd xsockd({});
  ControlClient c(LibcSyscalls(), xsockd.path());
  REQUIRE(c.Call(proto::StatsRequest{}).ok());
  const int fd = ControlFd(c);
  REQUIRE(fd >= 0);
  if (ControlClient::HighFdFloor() > 0) CHECK(fd >= ControlClient::HighFdFloor());
  CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);
  CHECK(Registered(fd));
  auto pid = c.ServerPid();
  REQUIRE(pid.ok());
  CHECK(*pid == getpid());  // the fake xsockd is a thread of this process
  c.ForgetIfOurs(fd);
  CHECK_FALSE(Registered(fd));
  close(fd);
}

TEST_CASE("a control descriptor closed behind our back and reused by the app is left alone",
          "[control_client]") {
  testing::FakeXsockd xsockd({});
  ControlClient c(LibcSyscalls(), xsockd.path());
  REQUIRE(c.Call(proto::StatsRequest{}).ok());
  const int fd = ControlFd(c);
  REQUIRE(fd >= 0);
  // A raw close (no hook sees it), then the application's own socket on that number.
  REQUIRE(syscall(SYS_close, fd) == 0);
  int pair[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) == 0);
  REQUIRE(dup2(pair[0], fd) == fd);
  close(pair[0]);

  auto r = c.Call(proto::StatsRequest{});
  REQUIRE(r.ok());
  CHECK(xsockd.connections() == 2);
  // Not one protocol byte went into the application's socket.
  char b;
  CHECK(recv(pair[1], &b, 1, MSG_DONTWAIT) == -1);
  CHECK(errno == EAGAIN);
  CHECK(ControlFd(c) != fd);
  // And the application's descriptor is still open.
  CHECK(fcntl(fd, F_GETFD) >= 0);
  close(fd);
  close(pair[1]);
}

// ---- inherited channels ----

// Sends `fd` over `sock` with SCM_RIGHTS; receives one the same way.
void SendFd(int sock, int fd) {
  char byte = 'x';
  iovec iov = {&byte, 1};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  msghdr m = {};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof(ctl);
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int));
  std::memcpy(CMSG_DATA(c), &fd, sizeof(int));
  REQUIRE(sendmsg(sock, &m, 0) == 1);
}

int RecvFd(int sock) {
  char byte;
  iovec iov = {&byte, 1};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  msghdr m = {};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof(ctl);
  REQUIRE(recvmsg(sock, &m, MSG_CMSG_CLOEXEC) == 1);
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  REQUIRE(c != nullptr);
  int fd;
  std::memcpy(&fd, CMSG_DATA(c), sizeof(int));
  return fd;
}

// One end of a socketpair of `type` made by a child process (so its peer is another
// process, as a channel's peer is xsockd); *maker is the child's pid (already reaped).
int ForeignPairEnd(int type, pid_t* maker) {
  int link[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, link) == 0);
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    int pair[2];
    if (socketpair(AF_UNIX, type, 0, pair) != 0) _exit(1);
    SendFd(link[1], pair[0]);
    _exit(0);
  }
  const int fd = RecvFd(link[0]);
  int status = 0;
  REQUIRE(waitpid(child, &status, 0) == child);
  close(link[0]);
  close(link[1]);
  *maker = child;
  return fd;
}

TEST_CASE("socketpair ends made by another process are channel candidates", "[inherited]") {
  pid_t maker = 0;
  const int stream = ForeignPairEnd(SOCK_STREAM, &maker);
  ChannelCandidate c;
  REQUIRE(ProbeChannelCandidate(LibcSyscalls(), stream, &c));
  CHECK(c.fd == stream);
  CHECK(c.peer_pid == maker);
  struct stat st;
  REQUIRE(fstat(stream, &st) == 0);
  CHECK(c.ino == st.st_ino);

  const int seqpacket = ForeignPairEnd(SOCK_SEQPACKET, &maker);
  CHECK(ProbeChannelCandidate(LibcSyscalls(), seqpacket, &c));
  const int dgram = ForeignPairEnd(SOCK_DGRAM, &maker);
  CHECK_FALSE(ProbeChannelCandidate(LibcSyscalls(), dgram, &c));

  ChannelCandidate found[64];
  const size_t n = FindChannelCandidates(LibcSyscalls(), found);
  std::set<int> fds;
  for (size_t i = 0; i < n; ++i) fds.insert(found[i].fd);
  CHECK(fds.count(stream) == 1);
  CHECK(fds.count(seqpacket) == 1);
  CHECK(fds.count(dgram) == 0);
  close(stream);
  close(seqpacket);
  close(dgram);
}

TEST_CASE("pipes, files, our own socketpairs and named connections are not candidates",
          "[inherited]") {
  ChannelCandidate c;
  int p[2];
  REQUIRE(pipe2(p, O_CLOEXEC) == 0);
  CHECK_FALSE(ProbeChannelCandidate(LibcSyscalls(), p[0], &c));
  int own[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, own) == 0);
  CHECK_FALSE(ProbeChannelCandidate(LibcSyscalls(), own[0], &c));  // the peer is us
  const int tcp = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK_FALSE(ProbeChannelCandidate(LibcSyscalls(), tcp, &c));
  // A connection to a listening AF_UNIX socket (journald, D-Bus, ...): its peer is named.
  testing::FakeXsockd server({});
  const int named = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, server.path().c_str(), sizeof(addr.sun_path) - 1);
  REQUIRE(connect(named, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
  CHECK_FALSE(ProbeChannelCandidate(LibcSyscalls(), named, &c));
  for (int fd : {p[0], p[1], own[0], own[1], tcp, named}) close(fd);
}

TEST_CASE("only candidates whose peer is xsockd are adopted, duplicates become aliases",
          "[inherited]") {
  std::vector<std::string> log;
  int asked = 0;
  AdoptOps ops{
      .server_pid =
          [&] {
            ++asked;
            return Result::Ok(100);
          },
      .adopt =
          [&](int fd) {
            log.push_back("adopt " + std::to_string(fd));
            return fd == 7 ? Result::Err(EBADF) : Result::Ok(0);
          },
      .alias =
          [&](int first, int dup) {
            log.push_back("alias " + std::to_string(first) + " " + std::to_string(dup));
          },
  };
  SECTION("no candidate: xsockd is never asked") {
    CHECK(AdoptChannels({}, ops) == 0);
    CHECK(asked == 0);
  }
  SECTION("stdin and stdout of an inetd-style child, a stranger, a refused one") {
    const ChannelCandidate c[] = {
        {0, 1, 50, 100}, {1, 1, 50, 100},  // one channel twice
        {4, 1, 60, 222},                   // some other program's socketpair
        {7, 1, 70, 100}, {8, 1, 70, 100},  // xsockd refuses 7: 8 is tried on its own
    };
    CHECK(AdoptChannels(c, ops) == 3);
    CHECK(asked == 1);
    CHECK(log == std::vector<std::string>{"adopt 0", "alias 0 1", "adopt 7", "adopt 8"});
  }
  SECTION("xsockd unreachable: nothing is adopted") {
    ops.server_pid = [] { return Result::Err(ECONNREFUSED); };
    const ChannelCandidate c[] = {{3, 1, 50, 100}};
    CHECK(AdoptChannels(c, ops) == 0);
    CHECK(log.empty());
  }
}

}  // namespace
}  // namespace xsock::intercept
