// The app side of a listener channel (libintercept/listener.h): what ReceiveAccepted does
// with good records, with malformed ones (xsockd is trusted to send well-formed records,
// but the library must never leak descriptors or misread one), and MakeUnwritable.
#include "libintercept/listener.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <vector>

#include "shared/socket_page.h"

namespace xsock::intercept {
namespace {

struct Pair {
  int fds[2] = {-1, -1};
  int& app = fds[0];
  int& backend = fds[1];
  Pair() { REQUIRE(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, fds) == 0); }
  ~Pair() {
    close(app);
    close(backend);
  }
};

// Sends `bytes` with `fds` as one packet from the backend end.
void SendRecord(int fd, const std::vector<uint8_t>& bytes, const std::vector<int>& fds) {
  iovec iov = {const_cast<uint8_t*>(bytes.data()), bytes.size()};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  std::vector<char> control(CMSG_SPACE(sizeof(int) * (fds.empty() ? 1 : fds.size())));
  if (!fds.empty()) {
    msg.msg_control = control.data();
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  REQUIRE(sendmsg(fd, &msg, 0) == static_cast<ssize_t>(bytes.size()));
}

proto::AcceptRecord GoodRecord() {
  proto::AcceptRecord r;
  r.socket_id = 42;
  r.ring_order = kMinRingOrder;
  r.local.family = AF_INET;
  r.local.port = 80;
  r.local.addr[0] = 127;
  r.local.addr[3] = 1;
  r.peer = r.local;
  r.peer.port = 40000;
  return r;
}

int OpenFds() {
  int n = 0;
  for (int fd = 0; fd < 1024; ++fd) n += fcntl(fd, F_GETFD) >= 0;
  return n;
}

TEST_CASE("ReceiveAccepted takes one record with its channel and memfd") {
  Pair p;
  int chan[2];
  REQUIRE(socketpair(AF_UNIX, SOCK_STREAM, 0, chan) == 0);
  const int mem = memfd_create("t", 0);
  SendRecord(p.backend, proto::EncodeAcceptRecord(GoodRecord()), {chan[0], mem});
  AcceptedConnection c;
  REQUIRE(ReceiveAccepted(LibcSyscalls(), p.app, &c).ok());
  CHECK(c.record == GoodRecord());
  CHECK(c.channel >= 0);
  CHECK(c.memfd >= 0);
  CHECK((fcntl(c.channel, F_GETFD) & FD_CLOEXEC) != 0);  // MSG_CMSG_CLOEXEC
  CHECK((fcntl(c.memfd, F_GETFD) & FD_CLOEXEC) != 0);
  for (int fd : {c.channel, c.memfd, chan[0], chan[1], mem}) close(fd);
}

TEST_CASE("ReceiveAccepted drops malformed records and closes what came with them") {
  Pair p;
  const int before = OpenFds();
  auto bad = [&](std::vector<uint8_t> bytes, int nfds, int want) {
    std::vector<int> fds;
    for (int i = 0; i < nfds; ++i) fds.push_back(memfd_create("t", 0));
    SendRecord(p.backend, bytes, fds);
    for (int fd : fds) close(fd);
    AcceptedConnection c;
    const Result r = ReceiveAccepted(LibcSyscalls(), p.app, &c);
    CHECK(r.error() == want);
    CHECK(OpenFds() == before);
  };
  const std::vector<uint8_t> good = proto::EncodeAcceptRecord(GoodRecord());
  SECTION("no descriptors") { bad(good, 0, ECONNABORTED); }
  SECTION("one descriptor") { bad(good, 1, ECONNABORTED); }
  SECTION("three descriptors") { bad(good, 3, ECONNABORTED); }
  SECTION("short record") { bad({good.begin(), good.end() - 1}, 2, ECONNABORTED); }
  SECTION("long record") {
    std::vector<uint8_t> longer = good;
    longer.push_back(0);
    bad(longer, 2, ECONNABORTED);
  }
  SECTION("bad magic") {
    std::vector<uint8_t> b = good;
    b[0] ^= 1;
    bad(b, 2, ECONNABORTED);
  }
}

TEST_CASE("ReceiveAccepted: nonblocking empty channel is EAGAIN, a closed one EINVAL") {
  Pair p;
  fcntl(p.app, F_SETFL, O_NONBLOCK);
  AcceptedConnection c;
  CHECK(ReceiveAccepted(LibcSyscalls(), p.app, &c).error() == EAGAIN);
  shutdown(p.backend, SHUT_WR);
  CHECK(ReceiveAccepted(LibcSyscalls(), p.app, &c).error() == EINVAL);
}

TEST_CASE("MakeUnwritable leaves a listener channel neither readable nor writable") {
  Pair p;
  REQUIRE(MakeUnwritable(LibcSyscalls(), p.app) == 0);
  pollfd pf = {p.app, POLLIN | POLLOUT, 0};
  CHECK(poll(&pf, 1, 0) == 0);
}

}  // namespace
}  // namespace xsock::intercept
