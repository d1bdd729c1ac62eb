// Packet I/O with descriptors (shared/unix_io.h) over real AF_UNIX SOCK_SEQPACKET pairs.
#include "shared/unix_io.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <cstring>
#include <vector>

#include "shared/protocol.h"

namespace xsock {
namespace {

using Bytes = std::vector<uint8_t>;

// Open descriptors of this process; the test runner is single-threaded, so a change in
// this count between two points is our doing.
int OpenFdCount() {
  DIR* d = opendir("/proc/self/fd");
  REQUIRE(d != nullptr);
  int n = 0;
  while (readdir(d) != nullptr) ++n;
  closedir(d);
  return n;
}

struct SeqPacketPair {
  int a = -1;
  int b = -1;
  SeqPacketPair() {
    int sv[2];
    REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) == 0);
    a = sv[0];
    b = sv[1];
  }
  ~SeqPacketPair() {
    if (a >= 0) close(a);
    if (b >= 0) close(b);
  }
  void CloseA() {
    close(a);
    a = -1;
  }
};

struct Fd {
  int fd;
  explicit Fd(int f) : fd(f) { REQUIRE(fd >= 0); }
  ~Fd() { close(fd); }
};

struct FileId {
  dev_t dev;
  ino_t ino;
  bool operator==(const FileId&) const = default;
};
FileId IdOf(int fd) {
  struct stat st;
  REQUIRE(fstat(fd, &st) == 0);
  return {st.st_dev, st.st_ino};
}

void CloseAll(std::vector<int>& fds) {
  for (int fd : fds) close(fd);
  fds.clear();
}

Bytes Pattern(size_t n) {
  Bytes b(n);
  for (size_t i = 0; i < n; ++i) b[i] = static_cast<uint8_t>(i * 7 + 1);
  return b;
}

TEST_CASE("a packet and its descriptors arrive together and refer to the same files", "[unix_io]") {
  SeqPacketPair p;
  const Fd memfd(memfd_create("unix_io_test", MFD_CLOEXEC));
  int pipe_fds[2];
  REQUIRE(pipe2(pipe_fds, O_CLOEXEC) == 0);
  const Fd pipe_r(pipe_fds[0]);
  const Fd pipe_w(pipe_fds[1]);

  const Bytes msg = proto::EncodeReply(5, proto::SocketReply{.ring_order = 12, .socket_id = 3});
  const int send_fds[] = {memfd.fd, pipe_w.fd};
  REQUIRE(SendPacket(LibcSyscalls(), p.a, msg, send_fds) == 0);

  Bytes buf;
  std::vector<int> fds;
  REQUIRE(RecvPacket(LibcSyscalls(), p.b, buf, proto::kMaxMessageSize, fds) ==
          static_cast<ssize_t>(msg.size()));
  CHECK(buf == msg);
  REQUIRE(fds.size() == 2);
  CHECK(IdOf(fds[0]) == IdOf(memfd.fd));
  CHECK(IdOf(fds[1]) == IdOf(pipe_w.fd));
  CHECK(fds[0] != memfd.fd);
  for (int fd : fds) CHECK((fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0);  // MSG_CMSG_CLOEXEC

  // The received pipe end really is the write end of our pipe.
  REQUIRE(write(fds[1], "z", 1) == 1);
  char c = 0;
  REQUIRE(read(pipe_r.fd, &c, 1) == 1);
  CHECK(c == 'z');
  CloseAll(fds);
}

TEST_CASE("packets keep their boundaries and a packet without descriptors brings none",
          "[unix_io]") {
  SeqPacketPair p;
  const Bytes first = Pattern(100);
  const Bytes second = Pattern(3);
  REQUIRE(SendPacket(LibcSyscalls(), p.a, first, {}) == 0);
  REQUIRE(SendPacket(LibcSyscalls(), p.a, second, {}) == 0);
  Bytes buf;
  std::vector<int> fds = {-1};  // stale content must be cleared
  REQUIRE(RecvPacket(LibcSyscalls(), p.b, buf, 512, fds) == 100);
  CHECK(buf == first);
  CHECK(fds.empty());
  REQUIRE(RecvPacket(LibcSyscalls(), p.b, buf, 512, fds) == 3);
  CHECK(buf == second);
}

TEST_CASE("a packet of exactly max_len bytes is accepted", "[unix_io]") {
  SeqPacketPair p;
  const Bytes msg = Pattern(64);
  REQUIRE(SendPacket(LibcSyscalls(), p.a, msg, {}) == 0);
  Bytes buf;
  std::vector<int> fds;
  CHECK(RecvPacket(LibcSyscalls(), p.b, buf, 64, fds) == 64);
  CHECK(buf == msg);
}

TEST_CASE("an oversized packet gives EMSGSIZE and closes the descriptors it brought", "[unix_io]") {
  for (size_t size : {size_t{65}, size_t{4000}}) {  // one byte over; far over (MSG_TRUNC)
    INFO("packet of " << size << " bytes, limit 64");
    SeqPacketPair p;
    const Fd memfd(memfd_create("oversized", MFD_CLOEXEC));
    const int send_fds[] = {memfd.fd, memfd.fd, memfd.fd};
    const int before = OpenFdCount();
    REQUIRE(SendPacket(LibcSyscalls(), p.a, Pattern(size), send_fds) == 0);
    Bytes buf;
    std::vector<int> fds;
    CHECK(RecvPacket(LibcSyscalls(), p.b, buf, 64, fds) == -EMSGSIZE);
    CHECK(fds.empty());
    CHECK(buf.empty());
    CHECK(OpenFdCount() == before);
    // The bad packet is consumed; the next one is read normally.
    REQUIRE(SendPacket(LibcSyscalls(), p.a, Pattern(8), {}) == 0);
    CHECK(RecvPacket(LibcSyscalls(), p.b, buf, 64, fds) == 8);
  }
}

TEST_CASE("more descriptors than a message may carry give EMSGSIZE without a leak", "[unix_io]") {
  SeqPacketPair p;
  const Fd memfd(memfd_create("too_many", MFD_CLOEXEC));
  constexpr int kCount = kMaxFdsPerMessage + 4;
  const int before = OpenFdCount();
  // SendPacket refuses this, so a hostile peer's sendmsg is written out by hand.
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kCount)] = {};
  char byte = 'x';
  iovec iov = {&byte, 1};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * kCount);
  for (int i = 0; i < kCount; ++i) std::memcpy(CMSG_DATA(c) + i * sizeof(int), &memfd.fd, 4);
  REQUIRE(sendmsg(p.a, &msg, 0) == 1);

  Bytes buf;
  std::vector<int> fds;
  CHECK(RecvPacket(LibcSyscalls(), p.b, buf, 64, fds) == -EMSGSIZE);
  CHECK(fds.empty());
  CHECK(OpenFdCount() == before);
}

TEST_CASE("SendPacket refuses more than kMaxFdsPerMessage descriptors", "[unix_io]") {
  SeqPacketPair p;
  const int many[kMaxFdsPerMessage + 1] = {0, 0, 0, 0, 0};
  CHECK(SendPacket(LibcSyscalls(), p.a, Pattern(4), many) == -EINVAL);
  Bytes buf;
  std::vector<int> fds;
  CHECK(RecvPacket(LibcSyscalls(), p.b, buf, 64, fds, MSG_DONTWAIT) == -EAGAIN);
}

TEST_CASE("RecvPacket returns 0 when the peer has closed", "[unix_io]") {
  SeqPacketPair p;
  p.CloseA();
  Bytes buf = Pattern(5);
  std::vector<int> fds;
  CHECK(RecvPacket(LibcSyscalls(), p.b, buf, 64, fds) == 0);
  CHECK(buf.empty());
  CHECK(fds.empty());
}

TEST_CASE("a queued packet is still delivered after the peer closes", "[unix_io]") {
  SeqPacketPair p;
  REQUIRE(SendPacket(LibcSyscalls(), p.a, Pattern(10), {}) == 0);
  p.CloseA();
  Bytes buf;
  std::vector<int> fds;
  CHECK(RecvPacket(LibcSyscalls(), p.b, buf, 64, fds) == 10);
  CHECK(RecvPacket(LibcSyscalls(), p.b, buf, 64, fds) == 0);
}

// Linux raises SIGPIPE only for stream sockets (a SEQPACKET send to a closed peer fails
// quietly), so this uses a stream pair to see that MSG_NOSIGNAL is really passed.
TEST_CASE("sending to a closed peer gives EPIPE without raising SIGPIPE", "[unix_io]") {
  int sv[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
  const Fd a(sv[0]);
  close(sv[1]);
  // Block SIGPIPE so that one raised by the send stays pending where we can see it
  // (the runner may also have inherited SIG_IGN, which would hide it).
  sigset_t pipe_only, old_mask;
  sigemptyset(&pipe_only);
  sigaddset(&pipe_only, SIGPIPE);
  REQUIRE(pthread_sigmask(SIG_BLOCK, &pipe_only, &old_mask) == 0);
  const int rc = SendPacket(LibcSyscalls(), a.fd, Pattern(4), {});
  sigset_t pending;
  sigpending(&pending);
  const bool raised = sigismember(&pending, SIGPIPE) == 1;
  if (raised) {
    const timespec zero = {};
    sigtimedwait(&pipe_only, nullptr, &zero);
  }
  pthread_sigmask(SIG_SETMASK, &old_mask, nullptr);
  CHECK(rc == -EPIPE);
  CHECK_FALSE(raised);
}

TEST_CASE("an empty nonblocking receive gives EAGAIN", "[unix_io]") {
  SeqPacketPair p;
  Bytes buf;
  std::vector<int> fds;
  CHECK(RecvPacket(LibcSyscalls(), p.b, buf, 64, fds, MSG_DONTWAIT) == -EAGAIN);
  CHECK(buf.empty());
}

// Fault injection through the syscall table: each fake fails its first `interrupts` calls
// with EINTR, then forwards to libc.
int g_interrupts = 0;
int g_calls = 0;
ssize_t InterruptedSendmsg(int fd, const msghdr* m, int flags) {
  ++g_calls;
  if (g_interrupts > 0) {
    --g_interrupts;
    errno = EINTR;
    return -1;
  }
  return sendmsg(fd, m, flags);
}
ssize_t InterruptedRecvmsg(int fd, msghdr* m, int flags) {
  ++g_calls;
  if (g_interrupts > 0) {
    --g_interrupts;
    errno = EINTR;
    return -1;
  }
  return recvmsg(fd, m, flags);
}
ssize_t ShortSendmsg(int fd, const msghdr* m, int flags) {
  const ssize_t n = sendmsg(fd, m, flags);
  return n > 0 ? n - 1 : n;
}

TEST_CASE("EINTR is retried on both send and receive", "[unix_io]") {
  SeqPacketPair p;
  Syscalls sys = LibcSyscalls();
  sys.sendmsg = InterruptedSendmsg;
  sys.recvmsg = InterruptedRecvmsg;
  g_interrupts = 3;
  g_calls = 0;
  const Bytes msg = Pattern(30);
  REQUIRE(SendPacket(sys, p.a, msg, {}) == 0);
  CHECK(g_calls == 4);
  g_interrupts = 2;
  g_calls = 0;
  Bytes buf;
  std::vector<int> fds;
  CHECK(RecvPacket(sys, p.b, buf, 64, fds) == 30);
  CHECK(g_calls == 3);
  CHECK(buf == msg);
}

TEST_CASE("a short send is reported as EMSGSIZE", "[unix_io]") {
  SeqPacketPair p;
  Syscalls sys = LibcSyscalls();
  sys.sendmsg = ShortSendmsg;
  CHECK(SendPacket(sys, p.a, Pattern(16), {}) == -EMSGSIZE);
}

}  // namespace
}  // namespace xsock
