// xsock-process-check: one routed TCP connection to an echo server, carried through the
// process events a real server goes through: fork, exec (also with a scrubbed
// environment), closefrom/close_range in the middle of a session, an inetd-style child
// with the socket as stdin/stdout, and SCM_RIGHTS to another process. Each check moves
// seeded pseudo-random data and verifies the echo byte for byte (order-sensitive hash).
//
//   fork ADDR PORT BYTES         parent sends the first half, then closes; the child (a
//                                duplicate of the descriptor, the original closed) sends
//                                the second half and reads the whole echo, then EOF
//   exec ADDR PORT BYTES MODE    connect, keep a duplicate at 50 (and a close-on-exec one
//                                at 60), exec this program again, which streams BYTES on
//                                50. MODE: environ (execv), scrub (execve with {NULL}),
//                                execle (execle with {NULL}), clearenv (clearenv, execv)
//   closefrom ADDR PORT          closefrom/close_range around a live routed socket, a
//                                raw close of the library's control descriptor, new
//                                connections after each
//   inetd ADDR PORT [--raw-exec] -- CMD...
//                                the child runs CMD with the socket as stdin and stdout;
//                                --raw-exec execs it with a raw system call and without
//                                LD_PRELOAD (to show what a program without xsock sees)
//   scm ADDR PORT BYTES          pass the routed descriptor to a freshly exec'd process
//                                with SCM_RIGHTS; it streams BYTES on it
//   listen-exec ADDR BYTES       bind ADDR port 0 (routed: xsockd listens on the host),
//                                listen, print the port, exec itself with an empty
//                                environment; the new image accepts one connection on
//                                the inherited listener and streams BYTES to it (the
//                                peer must echo)
//
// Prints "ok ..." lines and exits 0 on success; "error: ..." and 1 otherwise; 2 usage.
#include <fcntl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "libintercept/raw_syscall.h"
#include "tests/programs/common.h"

extern char** environ;

namespace {

using xsock::testprog::ByteStream;
using xsock::testprog::Endpoint;
using xsock::testprog::ErrnoName;

constexpr uint64_t kSeed = 77;
constexpr int kTimeoutMs = 30000;
const char* g_self = nullptr;

[[noreturn]] void Die(const std::string& what) {
  std::printf("error: %s\n", what.c_str());
  std::fflush(stdout);
  std::exit(1);
}

[[noreturn]] void DieErrno(const std::string& what) { Die(what + ": " + ErrnoName(errno)); }

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

int Connect(const char* host, const char* port_text) {
  const auto port = xsock::testprog::ParsePort(port_text);
  if (!port) Die(std::string("bad port ") + port_text);
  const auto ep = xsock::testprog::ParseEndpoint(host, *port);
  if (!ep) Die(std::string("bad address ") + host);
  const int fd = socket(ep->family(), SOCK_STREAM, 0);
  if (fd < 0) DieErrno("socket");
  if (connect(fd, ep->addr(), ep->len) != 0) DieErrno("connect");
  return fd;
}

// The peer port of `fd` (getpeername, forwarded to xsockd for a routed socket).
int PeerPort(int fd) {
  sockaddr_storage ss = {};
  socklen_t len = sizeof(ss);
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) DieErrno("getpeername");
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port);
  Die("getpeername: family " + std::to_string(ss.ss_family) + " is not an IP socket's");
}

// Sends `send` bytes of `out` and receives `recv` bytes, each checked against `expect`,
// with MSG_DONTWAIT and poll (never changing the descriptor's flags, which a forked
// peer shares). Bounded by kTimeoutMs.
void Exchange(int fd, ByteStream& out, uint64_t send, ByteStream& expect, uint64_t recv,
              const char* who) {
  std::vector<unsigned char> obuf(65536), ibuf(65536), want(65536);
  size_t opos = 0, olen = 0;
  uint64_t sent = 0, got = 0;
  const int64_t deadline = NowMs() + kTimeoutMs;
  while (sent < send || got < recv) {
    if (NowMs() > deadline) {
      Die(std::string(who) + ": timed out, sent " + std::to_string(sent) + " of " +
          std::to_string(send) + ", received " + std::to_string(got) + " of " +
          std::to_string(recv));
    }
    if (sent < send && opos == olen) {
      olen = static_cast<size_t>(std::min<uint64_t>(obuf.size(), send - sent));
      out.Fill(obuf.data(), olen);
      opos = 0;
    }
    pollfd p = {fd, static_cast<short>((got < recv ? POLLIN : 0) | (sent < send ? POLLOUT : 0)), 0};
    if (poll(&p, 1, 1000) < 0 && errno != EINTR) DieErrno("poll");
    if (sent < send) {
      const ssize_t n = ::send(fd, obuf.data() + opos, olen - opos, MSG_DONTWAIT | MSG_NOSIGNAL);
      if (n > 0) {
        opos += static_cast<size_t>(n);
        sent += static_cast<uint64_t>(n);
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        DieErrno(std::string(who) + ": send");
      }
    }
    if (got < recv) {
      const size_t room = static_cast<size_t>(std::min<uint64_t>(ibuf.size(), recv - got));
      const ssize_t n = ::recv(fd, ibuf.data(), room, MSG_DONTWAIT);
      if (n == 0) Die(std::string(who) + ": EOF after " + std::to_string(got) + " bytes");
      if (n < 0 && errno != EAGAIN && errno != EINTR) DieErrno(std::string(who) + ": recv");
      if (n > 0) {
        expect.Fill(want.data(), static_cast<size_t>(n));
        if (std::memcmp(want.data(), ibuf.data(), static_cast<size_t>(n)) != 0) {
          Die(std::string(who) + ": wrong data in the echo at offset about " + std::to_string(got));
        }
        got += static_cast<uint64_t>(n);
      }
    }
  }
}

// Half-closes and expects the echo server's FIN next.
void ExpectEof(int fd, const char* who) {
  if (shutdown(fd, SHUT_WR) != 0) DieErrno(std::string(who) + ": shutdown");
  const int64_t deadline = NowMs() + kTimeoutMs;
  for (;;) {
    if (NowMs() > deadline) Die(std::string(who) + ": no EOF");
    pollfd p = {fd, POLLIN, 0};
    poll(&p, 1, 1000);
    char b;
    const ssize_t n = ::recv(fd, &b, 1, MSG_DONTWAIT);
    if (n == 0) return;
    if (n > 0) Die(std::string(who) + ": a byte after the echo");
    if (errno != EAGAIN && errno != EINTR) DieErrno(std::string(who) + ": recv at the end");
  }
}

void Skip(ByteStream& s, uint64_t n) {
  std::vector<unsigned char> b(65536);
  while (n > 0) {
    const size_t k = static_cast<size_t>(std::min<uint64_t>(b.size(), n));
    s.Fill(b.data(), k);
    n -= k;
  }
}

uint64_t Size(const char* text) {
  const auto v = xsock::testprog::ParseSize(text);
  if (!v || *v == 0) Die(std::string("bad size ") + text);
  return *v;
}

int WaitChild(pid_t pid) {
  int status = 0;
  if (waitpid(pid, &status, 0) != pid) DieErrno("waitpid");
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

// ---- fork ----

int Fork(const char* host, const char* port, uint64_t bytes) {
  const int fd = Connect(host, port);
  const int peer_port = PeerPort(fd);
  const uint64_t half = bytes / 2;
  const pid_t child = fork();
  if (child < 0) DieErrno("fork");
  if (child == 0) {
    // Closing one duplicate leaves the socket open.
    const int mine = dup(fd);
    if (mine < 0) DieErrno("child: dup");
    if (close(fd) != 0) DieErrno("child: close");
    // A control call from the child: it attaches the socket on its own connection.
    if (PeerPort(mine) != peer_port) Die("child: getpeername disagrees with the parent");
    ByteStream expect(kSeed), none(kSeed), out(kSeed);
    // The echo of the parent's half proves the parent has written it all.
    Exchange(mine, none, 0, expect, half, "child (parent's half)");
    Skip(out, half);
    Exchange(mine, out, bytes - half, expect, bytes - half, "child (own half)");
    ExpectEof(mine, "child");
    if (close(mine) != 0) DieErrno("child: close");
    std::printf("ok child: sent %llu, received and verified %llu bytes, then EOF\n",
                static_cast<unsigned long long>(bytes - half),
                static_cast<unsigned long long>(bytes));
    std::fflush(stdout);
    std::_Exit(0);
  }
  ByteStream out(kSeed), none(kSeed);
  Exchange(fd, out, half, none, 0, "parent");
  if (PeerPort(fd) != peer_port) Die("parent: getpeername changed after fork");
  if (close(fd) != 0) DieErrno("parent: close");
  const int rc = WaitChild(child);
  if (rc != 0) Die("child exited with " + std::to_string(rc));
  std::printf("ok parent: sent %llu bytes, child verified the whole echo\n",
              static_cast<unsigned long long>(half));
  return 0;
}

// ---- exec ----

constexpr int kExecFd = 50;
constexpr int kCloexecFd = 60;

int Exec(const char* host, const char* port, const char* bytes_text, const std::string& mode) {
  const int fd = Connect(host, port);
  const std::string peer = std::to_string(PeerPort(fd));
  if (dup2(fd, kExecFd) != kExecFd) DieErrno("dup2");
  if (fcntl(fd, F_DUPFD_CLOEXEC, kCloexecFd) != kCloexecFd) DieErrno("F_DUPFD_CLOEXEC");
  if (close(fd) != 0) DieErrno("close");
  std::fflush(stdout);
  char* argv[] = {const_cast<char*>(g_self), const_cast<char*>("exec-stage2"),
                  const_cast<char*>(bytes_text), const_cast<char*>(peer.c_str()), nullptr};
  char* empty[] = {nullptr};
  if (mode == "environ") {
    execv(g_self, argv);
  } else if (mode == "scrub") {
    execve(g_self, argv, empty);
  } else if (mode == "execle") {
    execle(g_self, argv[0], argv[1], argv[2], argv[3], static_cast<char*>(nullptr), empty);
  } else if (mode == "clearenv") {
    clearenv();
    execv(g_self, argv);
  } else {
    Die("unknown exec mode " + mode);
  }
  DieErrno("exec");
}

int ExecStage2(uint64_t bytes, int peer_port) {
  const char* preload = getenv("LD_PRELOAD");
  std::printf("new image: LD_PRELOAD=%s XSOCK_SOCKET=%s\n", preload ? preload : "(unset)",
              getenv("XSOCK_SOCKET") ? getenv("XSOCK_SOCKET") : "(unset)");
  if (fcntl(kCloexecFd, F_GETFD) != -1 || errno != EBADF) {
    Die("the close-on-exec duplicate survived exec");
  }
  if (PeerPort(kExecFd) != peer_port) Die("getpeername after exec disagrees");
  ByteStream out(kSeed), expect(kSeed);
  Exchange(kExecFd, out, bytes, expect, bytes, "after exec");
  ExpectEof(kExecFd, "after exec");
  close(kExecFd);
  std::printf("ok after exec: %llu bytes echoed and verified, then EOF\n",
              static_cast<unsigned long long>(bytes));
  return 0;
}

// ---- closefrom / close_range ----

// The library's control connection: an AF_UNIX seqpacket socket whose peer is named.
int FindControlFd() {
  int found = -1;
  for (int fd = 3; fd < 4096; ++fd) {
    int type = 0, domain = 0;
    socklen_t len = sizeof(type);
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) != 0) continue;
    len = sizeof(domain);
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) != 0) continue;
    if (domain != AF_UNIX || type != SOCK_SEQPACKET) continue;
    sockaddr_un un = {};
    len = sizeof(un);
    if (getpeername(fd, reinterpret_cast<sockaddr*>(&un), &len) == 0 && len > sizeof(sa_family_t)) {
      if (found >= 0) Die("two candidate control descriptors");
      found = fd;
    }
  }
  return found;
}

void RoundTrip(int fd, uint64_t bytes, uint64_t seed, const char* who) {
  ByteStream out(seed), expect(seed);
  Exchange(fd, out, bytes, expect, bytes, who);
}

int CloseFrom(const char* host, const char* port) {
  const int a = Connect(host, port);
  RoundTrip(a, 65536, 1, "A before");
  const int ctl = FindControlFd();
  if (ctl < 0) Die("no control connection found after a routed connect");
  std::printf("control descriptor at %d\n", ctl);

  // closefrom above A: junk goes, A and the control connection stay.
  int junk[2];
  if (pipe(junk) != 0) DieErrno("pipe");
  if (junk[0] < a || junk[1] < a) Die("pipe numbers below A");
  closefrom(a + 1);
  if (fcntl(junk[0], F_GETFD) != -1 || fcntl(junk[1], F_GETFD) != -1) Die("closefrom left a pipe");
  if (FindControlFd() != ctl) Die("closefrom closed or moved the control connection");
  RoundTrip(a, 65536, 2, "A after closefrom");
  PeerPort(a);
  const int b = Connect(host, port);
  RoundTrip(b, 65536, 3, "B after closefrom");
  std::printf("ok closefrom(%d): A works, control connection kept, B connected\n", a + 1);

  // close_range over B and everything above.
  if (close_range(static_cast<unsigned>(b), ~0u, 0) != 0) DieErrno("close_range");
  if (fcntl(b, F_GETFD) != -1) Die("close_range left B open");
  if (FindControlFd() != ctl) Die("close_range closed the control connection");
  RoundTrip(a, 65536, 4, "A after close_range");
  const int c = Connect(host, port);
  RoundTrip(c, 65536, 5, "C after close_range");
  std::printf("ok close_range(%d, ~0): A works, control connection kept, C connected\n", b);

  // A raw close the library cannot see, and the number reused by the application.
  if (syscall(SYS_close, ctl) != 0) DieErrno("raw close");
  int p[2];
  if (pipe(p) != 0) DieErrno("pipe");
  if (dup2(p[1], ctl) != ctl) DieErrno("dup2 over the old control number");
  close(p[1]);
  const int d = Connect(host, port);
  RoundTrip(d, 65536, 6, "D after a raw close of the control connection");
  if (PeerPort(a) <= 0) Die("A's getpeername");
  close(ctl);  // the application's pipe: nothing may have been written into it
  char buf[16];
  const ssize_t leaked = read(p[0], buf, sizeof(buf));
  if (leaked != 0)
    Die("the library wrote " + std::to_string(leaked) + " bytes into the app's pipe");
  std::printf("ok raw close of the control connection: reconnected, app's descriptor untouched\n");
  for (int fd : {a, c, d}) {
    ExpectEof(fd, "end");
    close(fd);
  }
  return 0;
}

// ---- inetd ----

int Inetd(const char* host, const char* port, bool raw, char** cmd) {
  const int fd = Connect(host, port);
  std::fflush(stdout);
  const pid_t child = fork();
  if (child < 0) DieErrno("fork");
  if (child == 0) {
    if (dup2(fd, 0) != 0 || dup2(fd, 1) != 1) _exit(126);
    close(fd);
    if (raw) {
      // What a program sees without the library: no LD_PRELOAD, and the system call
      // instruction itself, so that neither the exec hooks nor the syscall() hook can put
      // it back.
      std::vector<char*> env;
      for (char** e = environ; *e != nullptr; ++e) {
        if (std::strncmp(*e, "LD_PRELOAD=", 11) != 0) env.push_back(*e);
      }
      env.push_back(nullptr);
      char path[4096];
      const char* p = cmd[0];
      if (std::strchr(p, '/') == nullptr) {
        std::snprintf(path, sizeof(path), "/usr/bin/%s", cmd[0]);
        p = path;
      }
      xsock::intercept::RawSyscall(SYS_execve, p, cmd, env.data());
      _exit(127);
    }
    execvp(cmd[0], cmd);
    _exit(127);
  }
  close(fd);
  const int rc = WaitChild(child);
  std::printf("child %s exited with %d\n", cmd[0], rc);
  return rc == 0 ? 0 : 1;
}

// ---- SCM_RIGHTS ----

int Scm(const char* host, const char* port, const char* bytes_text) {
  int sp[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) DieErrno("socketpair");
  std::fflush(stdout);
  const pid_t child = fork();
  if (child < 0) DieErrno("fork");
  if (child == 0) {
    // A new image that never had the routed socket: it can only learn of it by receiving.
    if (dup2(sp[1], 3) != 3) _exit(126);
    char* argv[] = {const_cast<char*>(g_self), const_cast<char*>("scm-recv"),
                    const_cast<char*>(bytes_text), nullptr};
    execv(g_self, argv);
    _exit(127);
  }
  close(sp[1]);
  const int fd = Connect(host, port);
  char byte = 'f';
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
  if (sendmsg(sp[0], &m, 0) != 1) DieErrno("sendmsg SCM_RIGHTS");
  close(fd);  // the receiver holds the only descriptor now
  const int rc = WaitChild(child);
  if (rc != 0) Die("receiver exited with " + std::to_string(rc));
  std::printf("ok sender: the receiver used the socket\n");
  return 0;
}

int ScmRecv(uint64_t bytes) {
  char byte;
  iovec iov = {&byte, 1};
  alignas(cmsghdr) char ctl[CMSG_SPACE(sizeof(int))] = {};
  msghdr m = {};
  m.msg_iov = &iov;
  m.msg_iovlen = 1;
  m.msg_control = ctl;
  m.msg_controllen = sizeof(ctl);
  if (recvmsg(3, &m, MSG_CMSG_CLOEXEC) != 1) DieErrno("recvmsg");
  cmsghdr* c = CMSG_FIRSTHDR(&m);
  if (c == nullptr || c->cmsg_type != SCM_RIGHTS) Die("no descriptor received");
  int fd;
  std::memcpy(&fd, CMSG_DATA(c), sizeof(int));
  if (PeerPort(fd) <= 0) Die("received socket's getpeername");
  ByteStream out(kSeed), expect(kSeed);
  Exchange(fd, out, bytes, expect, bytes, "receiver");
  ExpectEof(fd, "receiver");
  close(fd);
  std::printf("ok receiver: %llu bytes echoed and verified on the received socket\n",
              static_cast<unsigned long long>(bytes));
  return 0;
}

// ---- a listening socket across exec (sshd re-exec, prefork servers) ----

int ListenExec(const char* host, const char* bytes_text) {
  const auto ep = xsock::testprog::ParseEndpoint(host, 0);
  if (!ep) Die(std::string("bad address ") + host);
  const int fd = socket(ep->family(), SOCK_STREAM, 0);
  if (fd < 0) DieErrno("socket");
  if (bind(fd, ep->addr(), ep->len) != 0) DieErrno("bind");
  if (listen(fd, 4) != 0) DieErrno("listen");
  sockaddr_storage ss = {};
  socklen_t len = sizeof(ss);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) DieErrno("getsockname");
  const int port = ss.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port)
                                            : ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
  if (dup2(fd, kExecFd) != kExecFd) DieErrno("dup2");
  close(fd);
  std::printf("listening on port %d\n", port);
  std::fflush(stdout);
  char* argv[] = {const_cast<char*>(g_self), const_cast<char*>("listen-stage2"),
                  const_cast<char*>(bytes_text), nullptr};
  char* empty[] = {nullptr};
  execve(g_self, argv, empty);  // scrubbed, as sshd's re-exec may be
  DieErrno("execve");
}

int ListenStage2(uint64_t bytes) {
  const int c = accept(kExecFd, nullptr, nullptr);
  if (c < 0) DieErrno("accept on the inherited listener");
  ByteStream out(kSeed), expect(kSeed);
  Exchange(c, out, bytes, expect, bytes, "accepted after exec");
  ExpectEof(c, "accepted after exec");
  close(c);
  close(kExecFd);
  std::printf("ok after exec: accepted on the inherited listener, %llu bytes verified\n",
              static_cast<unsigned long long>(bytes));
  return 0;
}

void Usage() {
  std::fprintf(stderr,
               "usage: xsock-process-check fork ADDR PORT BYTES\n"
               "       xsock-process-check exec ADDR PORT BYTES environ|scrub|execle|clearenv\n"
               "       xsock-process-check closefrom ADDR PORT\n"
               "       xsock-process-check inetd ADDR PORT [--raw-exec] -- CMD...\n"
               "       xsock-process-check scm ADDR PORT BYTES\n"
               "       xsock-process-check listen-exec ADDR BYTES\n"
               "       xsock-process-check listen-dead ADDR\n");
  std::exit(2);
}

// A routed listener, registered in epoll, whose xsockd goes away while the program waits
// on stdin (the test kills xsockd, then writes a line): the descriptor must go quiet
// instead of polling readable for good, so that event loops do not spin on accept().
int ListenDead(const char* host) {
  const auto ep = xsock::testprog::ParseEndpoint(host, 0);
  if (!ep) Die(std::string("bad address ") + host);
  const int fd = socket(ep->family(), SOCK_STREAM | SOCK_NONBLOCK, 0);
  if (fd < 0) DieErrno("socket");
  if (bind(fd, ep->addr(), ep->len) != 0) DieErrno("bind");
  if (listen(fd, 4) != 0) DieErrno("listen");
  const int epfd = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev = {};
  ev.events = EPOLLIN;
  ev.data.fd = fd;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) DieErrno("epoll_ctl");
  std::printf("listening\n");
  std::fflush(stdout);
  char line[64];
  if (read(0, line, sizeof(line)) <= 0) Die("stdin closed before the go-ahead");
  auto events = [&] {
    epoll_event got[4];
    const int n = epoll_wait(epfd, got, 4, 300);
    return n < 0 ? "error " + ErrnoName(errno) : std::to_string(n);
  };
  auto ret = [](int r) { return r >= 0 ? std::to_string(r) : "-1 " + ErrnoName(errno); };
  std::printf("epoll events once xsockd is gone: %s\n", events().c_str());
  std::printf("accept: %s\n", ret(accept4(fd, nullptr, nullptr, SOCK_CLOEXEC)).c_str());
  std::printf("epoll events after accept: %s\n", events().c_str());
  pollfd p = {fd, POLLIN | POLLOUT, 0};
  const std::string polled = ret(poll(&p, 1, 300));
  std::printf("poll 300 ms: %s revents=%d\n", polled.c_str(), p.revents);
  if (fcntl(fd, F_SETFL, 0) != 0) DieErrno("fcntl");
  const timeval tv = {0, 200 * 1000};
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0) DieErrno("SO_RCVTIMEO");
  std::printf("blocking accept with SO_RCVTIMEO 200 ms: %s\n",
              ret(accept(fd, nullptr, nullptr)).c_str());
  std::printf("close: %s\n", ret(close(fd)).c_str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  setvbuf(stdout, nullptr, _IOLBF, 0);
  // The exec checks re-run this program by path.
  static char self[4096];
  const ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0) DieErrno("readlink /proc/self/exe");
  self[n] = '\0';
  g_self = self;
  if (argc < 2) Usage();
  const std::string cmd = argv[1];
  if (cmd == "fork" && argc == 5) return Fork(argv[2], argv[3], Size(argv[4]));
  if (cmd == "exec" && argc == 6) return Exec(argv[2], argv[3], argv[4], argv[5]);
  if (cmd == "exec-stage2" && argc == 4) return ExecStage2(Size(argv[2]), std::atoi(argv[3]));
  if (cmd == "closefrom" && argc == 4) return CloseFrom(argv[2], argv[3]);
  if (cmd == "listen-exec" && argc == 4) return ListenExec(argv[2], argv[3]);
  if (cmd == "listen-stage2" && argc == 3) return ListenStage2(Size(argv[2]));
  if (cmd == "listen-dead" && argc == 3) return ListenDead(argv[2]);
  if (cmd == "scm" && argc == 5) return Scm(argv[2], argv[3], argv[4]);
  if (cmd == "scm-recv" && argc == 3) return ScmRecv(Size(argv[2]));
  if (cmd == "inetd" && argc >= 6) {
    int i = 4;
    bool raw = false;
    if (std::strcmp(argv[i], "--raw-exec") == 0) {
      raw = true;
      ++i;
    }
    if (i >= argc || std::strcmp(argv[i], "--") != 0 || i + 1 >= argc) Usage();
    return Inetd(argv[2], argv[3], raw, argv + i + 1);
  }
  Usage();
}
