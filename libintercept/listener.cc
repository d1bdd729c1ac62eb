#include "libintercept/listener.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "shared/socket_page.h"

namespace xsock::intercept {
namespace {

// Room for more descriptors than a record carries, so that extra ones are seen (and
// closed) rather than silently left in the kernel.
constexpr int kFdRoom = proto::kFdsWithAcceptRecord + 4;

void CloseAll(const Syscalls& sys, const std::vector<int>& fds) {
  for (int fd : fds) sys.close(fd);
}

}  // namespace

Result ReceiveAccepted(const Syscalls& sys, int fd, AcceptedConnection* out) {
  uint8_t buf[proto::kAcceptRecordSize + 1];
  iovec iov = {buf, sizeof(buf)};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kFdRoom)];
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  const ssize_t n = sys.recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
  if (n < 0) return Result::Err(errno);

  std::vector<int> fds;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < count; ++i) {
      int v;
      std::memcpy(&v, CMSG_DATA(c) + i * sizeof(int), sizeof(v));
      fds.push_back(v);
    }
  }
  // End of the channel: the listener was shut down (shutdown(SHUT_RD) on a listening TCP
  // socket makes accept() fail with EINVAL), or xsockd went away.
  if (n == 0 && fds.empty()) return Result::Err(EINVAL);
  if (msg.msg_flags & MSG_CTRUNC) {
    CloseAll(sys, fds);
    return Result::Err(EMFILE);
  }
  auto record = proto::DecodeAcceptRecord({buf, static_cast<size_t>(n)});
  if ((msg.msg_flags & MSG_TRUNC) || !record.ok() ||
      fds.size() != static_cast<size_t>(proto::kFdsWithAcceptRecord) ||
      record->ring_order < kMinRingOrder || record->ring_order > kMaxRingOrder) {
    CloseAll(sys, fds);
    return Result::Err(ECONNABORTED);
  }
  out->channel = fds[0];
  out->memfd = fds[1];
  out->record = *record;
  return Result::Ok(0);
}

int MakeUnwritable(const Syscalls& sys, int fd) {
  const int one = 1;
  if (sys.setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &one, sizeof(one)) != 0) return -errno;
  static const char kFill[256] = {};
  iovec iov = {const_cast<char*>(kFill), sizeof(kFill)};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  // A few packets fill the minimum send buffer; the bound guards against a channel whose
  // buffer someone enlarged.
  for (int i = 0; i < 256; ++i) {
    if (sys.sendmsg(fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) continue;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
    return -errno;
  }
  return 0;
}

}  // namespace xsock::intercept
