// Runs under LD_PRELOAD=libxsock.so, started by preload_test.cc, to exercise the real
// hooks (hooks.cc, real_calls.cc) rather than the core alone. Plain libc calls only.
//   preload_probe routed PORT     connect to 127.0.0.1:PORT (routed to a fake xsockd),
//                                 send "hello", expect "world", use every hooked call
//   preload_probe plain PORT      connect to a real listener (not routed); the library
//                                 must leave no trace: no extra descriptor, no mapping
//   preload_probe epoll PORT      routed, registered with epoll (edge triggered) before a
//                                 nonblocking connect: the EPOLLOUT of completion arrives
//   preload_probe refused PORT    routed, xsockd unreachable: ECONNREFUSED
// Exit status 0 on success; otherwise one line on stderr says what failed.
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

namespace {

int Fail(const char* what) {
  std::fprintf(stderr, "preload_probe: %s (errno %d %s)\n", what, errno, std::strerror(errno));
  return 1;
}

#define EXPECT(cond)                 \
  do {                               \
    if (!(cond)) return Fail(#cond); \
  } while (0)

int ConnectTo(uint16_t port, int flags = 0) {
  const int fd = socket(AF_INET, SOCK_STREAM | flags, 0);
  if (fd < 0) return -1;
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    const int e = errno;
    close(fd);
    errno = e;
    return -1;
  }
  return fd;
}

int CountFds() {
  int n = 0;
  DIR* d = opendir("/proc/self/fd");
  while (dirent* e = readdir(d)) n += e->d_name[0] != '.';
  closedir(d);
  return n - 1;  // the directory itself
}

bool MapsMention(const char* what) {
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    if (line.find(what) != std::string::npos) return true;
  }
  return false;
}

int Routed(uint16_t port) {
  const int fd = ConnectTo(port);
  EXPECT(fd >= 0);
  int domain = -1;
  socklen_t len = sizeof(domain);
  EXPECT(getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0);
  EXPECT(domain == AF_INET);  // answered by the library, not the AF_UNIX channel
  sockaddr_in peer = {};
  len = sizeof(peer);
  EXPECT(getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &len) == 0);
  EXPECT(ntohs(peer.sin_port) == 9);  // what the fake xsockd answers

  EXPECT(write(fd, "he", 2) == 2);
  iovec iov[2] = {{const_cast<char*>("l"), 1}, {const_cast<char*>("lo"), 2}};
  EXPECT(writev(fd, iov, 2) == 3);
  char buf[16] = {};
  EXPECT(recv(fd, buf, 5, MSG_WAITALL) == 5);
  EXPECT(std::memcmp(buf, "world", 5) == 0);

  // Nonblocking through fcntl: nothing more to read.
  const int fl = fcntl(fd, F_GETFL);
  EXPECT(fcntl(fd, F_SETFL, fl | O_NONBLOCK) == 0);
  EXPECT(read(fd, buf, sizeof(buf)) == -1 && errno == EAGAIN);
  int avail = -1;
  EXPECT(ioctl(fd, FIONREAD, &avail) == 0 && avail == 0);

  // A duplicate refers to the same socket; closing the original keeps it working.
  const int copy = fcntl(fd, F_DUPFD_CLOEXEC, 100);
  EXPECT(copy >= 100);
  EXPECT(close(fd) == 0);
  EXPECT(send(copy, "!", 1, MSG_NOSIGNAL) == 1);
  pollfd p = {copy, POLLIN, 0};
  EXPECT(poll(&p, 1, 5000) == 1);  // the fake answers "bye" to "!"
  msghdr msg = {};
  iovec in = {buf, sizeof(buf)};
  msg.msg_iov = &in;
  msg.msg_iovlen = 1;
  EXPECT(recvmsg(copy, &msg, 0) == 3);
  EXPECT(std::memcmp(buf, "bye", 3) == 0);
  EXPECT(shutdown(copy, SHUT_WR) == 0);
  EXPECT(close(copy) == 0);
  return 0;
}

int Plain(uint16_t port) {
  const int before = CountFds();
  const int fd = ConnectTo(port);
  EXPECT(fd >= 0);
  EXPECT(CountFds() == before + 1);  // no control connection, nothing else
  EXPECT(write(fd, "ping", 4) == 4);
  char buf[4];
  EXPECT(recv(fd, buf, 4, MSG_WAITALL) == 4);
  int domain = -1;
  socklen_t len = sizeof(domain);
  EXPECT(getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len) == 0 && domain == AF_INET);
  EXPECT(close(fd) == 0);
  EXPECT(CountFds() == before);
  EXPECT(!MapsMention("memfd:"));
  return 0;
}

int EpollBeforeConnect(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  EXPECT(fd >= 0);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev = {};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLET;
  ev.data.fd = fd;
  EXPECT(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) == 0);
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  EXPECT(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == -1 && errno == EINPROGRESS);
  epoll_event out = {};
  EXPECT(epoll_wait(ep, &out, 1, 10000) == 1);
  EXPECT(out.data.fd == fd && (out.events & EPOLLOUT));
  int err = -1;
  socklen_t len = sizeof(err);
  EXPECT(getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == 0);
  EXPECT(send(fd, "hello", 5, 0) == 5);
  close(ep);
  close(fd);
  return 0;
}

int Refused(uint16_t port) {
  EXPECT(ConnectTo(port) == -1);
  EXPECT(errno == ECONNREFUSED);
  EXPECT(ConnectTo(port, SOCK_NONBLOCK) == -1);
  EXPECT(errno == ECONNREFUSED);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) return Fail("usage: preload_probe routed|plain|refused PORT");
  const std::string mode = argv[1];
  const auto port = static_cast<uint16_t>(std::atoi(argv[2]));
  if (mode == "routed") return Routed(port);
  if (mode == "plain") return Plain(port);
  if (mode == "epoll") return EpollBeforeConnect(port);
  if (mode == "refused") return Refused(port);
  return Fail("unknown mode");
}
