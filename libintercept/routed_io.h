// The read/write/send/recv family mapped onto FrontSocket::Recv/Send: each libc shape
// becomes an iovec array and a flags word, with the stream-socket details of the
// kernel (no source address, no control data, addresses ignored by sendto).
#pragma once

#include <fcntl.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "libintercept/front_socket.h"
#include "libintercept/result.h"

struct timespec;

extern "C" [[noreturn]] void __chk_fail(void);

namespace xsock::intercept::io {

inline Result Read(FrontSocket& s, int fd, void* buf, size_t n) {
  iovec v = {buf, n};
  return s.Recv(fd, &v, 1, 0);
}

inline Result Write(FrontSocket& s, int fd, const void* buf, size_t n) {
  iovec v = {const_cast<void*>(buf), n};
  return s.Send(fd, &v, 1, 0);
}

inline Result Recv(FrontSocket& s, int fd, void* buf, size_t n, int flags) {
  iovec v = {buf, n};
  return s.Recv(fd, &v, 1, flags);
}

// send() and sendto(): a connected stream socket ignores the destination.
inline Result Send(FrontSocket& s, int fd, const void* buf, size_t n, int flags) {
  iovec v = {const_cast<void*>(buf), n};
  return s.Send(fd, &v, 1, flags);
}

inline Result RecvFrom(FrontSocket& s, int fd, void* buf, size_t n, int flags, sockaddr* from,
                       socklen_t* fromlen) {
  const Result r = Recv(s, fd, buf, n, flags);
  if (r.ok() && from != nullptr && fromlen != nullptr) *fromlen = 0;  // as TCP reports
  return r;
}

inline Result RecvMsg(FrontSocket& s, int fd, msghdr* msg, int flags) {
  if (msg == nullptr) return Result::Err(EFAULT);
  if (msg->msg_iovlen > IOV_MAX) return Result::Err(EMSGSIZE);
  const Result r = s.Recv(fd, msg->msg_iov, static_cast<int>(msg->msg_iovlen), flags);
  if (r.ok()) {
    msg->msg_namelen = 0;
    msg->msg_controllen = 0;
    msg->msg_flags = 0;
  }
  return r;
}

inline Result SendMsg(FrontSocket& s, int fd, const msghdr* msg, int flags) {
  if (msg == nullptr) return Result::Err(EFAULT);
  if (msg->msg_iovlen > IOV_MAX) return Result::Err(EMSGSIZE);
  return s.Send(fd, msg->msg_iov, static_cast<int>(msg->msg_iovlen), flags);
}

// sendfile() to a routed socket. The kernel would write the file into the channel, where
// xsockd takes every byte for a wake-up; the bytes go through the ring instead. in_fd
// must be seekable (sendfile requires that too). As the kernel's: with `offset` the file
// position stays and *offset moves, without it the file position moves; a count beyond
// the end of the file sends up to the end; a short count when the socket takes no more
// (nonblocking, or a signal after some bytes); count is capped at MAX_RW_COUNT.
inline Result SendFile(FrontSocket& s, int fd, int in_fd, off_t* offset, size_t count) {
  constexpr size_t kMaxRwCount = INT_MAX & ~size_t{4095};  // MAX_RW_COUNT
  if (offset != nullptr && *offset < 0) return Result::Err(EINVAL);
  if (count > kMaxRwCount) count = kMaxRwCount;
  const off_t start = offset != nullptr ? *offset : lseek(in_fd, 0, SEEK_CUR);
  if (start < 0) return Result::Err(errno == ESPIPE ? EINVAL : errno);
  char buf[16384];
  size_t done = 0;
  while (done < count) {
    const size_t want = count - done < sizeof(buf) ? count - done : sizeof(buf);
    const ssize_t r = pread(in_fd, buf, want, start + static_cast<off_t>(done));
    if (r < 0 && done == 0) return Result::Err(errno);
    if (r <= 0) break;
    iovec v = {buf, static_cast<size_t>(r)};
    const Result w = s.Send(fd, &v, 1, 0);
    if (!w.ok() && done == 0) return w;
    if (!w.ok()) break;
    done += static_cast<size_t>(w.value());
    if (w.value() < r) break;  // nonblocking and `out` is full, or interrupted
  }
  const off_t end = start + static_cast<off_t>(done);
  if (offset != nullptr) {
    *offset = end;
  } else {
    lseek(in_fd, end, SEEK_SET);
  }
  return Result::Ok(static_cast<ssize_t>(done));
}

// recvmmsg() / sendmmsg() on a stream socket: one recvmsg/sendmsg per entry, with the
// kernel's batch rules (vlen capped at 1024, MSG_WAITFORONE, the timeout checked between
// messages, a count as soon as one message went through, later errors dropped).
Result RecvMmsg(FrontSocket& s, int fd, mmsghdr* vec, unsigned vlen, int flags,
                timespec* timeout);
Result SendMmsg(FrontSocket& s, int fd, mmsghdr* vec, unsigned vlen, int flags);

// splice() with at least one routed socket (the other's FrontSocket, if routed, passed
// too): between a routed socket and a pipe, through FrontSocket's splice halves; with
// the kernel's argument checks (no pipe: EINVAL; an offset on the pipe: ESPIPE, on the
// socket: EINVAL).
Result Splice(FrontSocket* in_sock, int fd_in, loff_t* off_in, FrontSocket* out_sock,
              int fd_out, loff_t* off_out, size_t len, unsigned flags);

// The _FORTIFY_SOURCE variants check the destination's size first, as glibc's do.
inline void* Checked(void* buf, size_t n, size_t buflen) {
  if (n > buflen) __chk_fail();
  return buf;
}

}  // namespace xsock::intercept::io
