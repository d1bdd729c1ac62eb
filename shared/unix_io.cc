#include "shared/unix_io.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace xsock {

int SendPacket(const Syscalls& sys, int fd, std::span<const uint8_t> bytes,
               std::span<const int> fds, int flags) {
  if (fds.size() > kMaxFdsPerMessage) return -EINVAL;
  iovec iov = {const_cast<uint8_t*>(bytes.data()), bytes.size()};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)] = {};
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  for (;;) {
    const ssize_t n = sys.sendmsg(fd, &msg, flags | MSG_NOSIGNAL);
    if (n >= 0) return static_cast<size_t>(n) == bytes.size() ? 0 : -EMSGSIZE;
    if (errno != EINTR) return -errno;
  }
}

namespace {
void CloseAll(const Syscalls& sys, std::vector<int>& fds) {
  for (int fd : fds) sys.close(fd);
  fds.clear();
}
}  // namespace

ssize_t RecvPacket(const Syscalls& sys, int fd, std::vector<uint8_t>& buf, size_t max_len,
                   std::vector<int>& fds, int flags) {
  fds.clear();
  // One byte more than allowed, so an oversized packet shows as MSG_TRUNC or as too long.
  buf.resize(max_len + 1);
  iovec iov = {buf.data(), buf.size()};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxFdsPerMessage)] = {};
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n;
  do {
    n = sys.recvmsg(fd, &msg, flags | MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) {
    buf.clear();
    return -errno;
  }
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int received;
      std::memcpy(&received, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds.push_back(received);
    }
  }
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || static_cast<size_t>(n) > max_len) {
    CloseAll(sys, fds);
    buf.clear();
    return -EMSGSIZE;
  }
  buf.resize(static_cast<size_t>(n));
  return n;
}

}  // namespace xsock
