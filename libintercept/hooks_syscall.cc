// syscall(2): some runtimes and libraries reach sockets through libc's generic syscall()
// instead of the named wrappers. On a routed descriptor the call would act on the
// channel (a write would become wake bytes that xsockd discards, a read would take a
// readiness token), so the socket numbers are handed to the same hooks the named
// wrappers have; every other number goes straight to the kernel. The library's own raw
// calls use RawSyscall (raw_syscall.h) and never come here.
//
// Code that issues the instruction itself (Go's runtime, static binaries) is not seen.

#include "libintercept/raw_syscall.h"

#if XSOCK_HAVE_RAW_SYSCALL

#include <fcntl.h>
#include <linux/seccomp.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cstdarg>

#define XSOCK_EXPORT __attribute__((visibility("default")))

extern "C" {
int close_range(unsigned first, unsigned last, int flags) noexcept;
}

namespace xsock::intercept {

void BeforeSeccompFilter();  // hooks_seccomp.cc

namespace {

template <class T>
T* P(long v) {
  return reinterpret_cast<T*>(v);
}
int I(long v) { return static_cast<int>(v); }
unsigned U(long v) { return static_cast<unsigned>(v); }
size_t Z(long v) { return static_cast<size_t>(v); }
socklen_t L(long v) { return static_cast<socklen_t>(v); }

// The hooked wrapper for a socket or descriptor system call, or the kernel.
long Dispatch(long nr, const long a[6]) noexcept {
  switch (nr) {
    case SYS_socket: return socket(I(a[0]), I(a[1]), I(a[2]));
    case SYS_connect: return connect(I(a[0]), P<const sockaddr>(a[1]), L(a[2]));
    case SYS_bind: return bind(I(a[0]), P<const sockaddr>(a[1]), L(a[2]));
    case SYS_listen: return listen(I(a[0]), I(a[1]));
#ifdef SYS_accept
    case SYS_accept: return accept(I(a[0]), P<sockaddr>(a[1]), P<socklen_t>(a[2]));
#endif
    case SYS_accept4: return accept4(I(a[0]), P<sockaddr>(a[1]), P<socklen_t>(a[2]), I(a[3]));
    case SYS_shutdown: return shutdown(I(a[0]), I(a[1]));
    case SYS_close: return close(I(a[0]));
#ifdef SYS_close_range
    case SYS_close_range: return close_range(U(a[0]), U(a[1]), I(a[2]));
#endif
    case SYS_dup: return dup(I(a[0]));
#ifdef SYS_dup2
    case SYS_dup2: return dup2(I(a[0]), I(a[1]));
#endif
    case SYS_dup3: return dup3(I(a[0]), I(a[1]), I(a[2]));
    case SYS_fcntl: return fcntl(I(a[0]), I(a[1]), a[2]);
    case SYS_ioctl: return ioctl(I(a[0]), static_cast<unsigned long>(a[1]), a[2]);
    case SYS_epoll_ctl: return epoll_ctl(I(a[0]), I(a[1]), I(a[2]), P<epoll_event>(a[3]));
    case SYS_read: return read(I(a[0]), P<void>(a[1]), Z(a[2]));
    case SYS_write: return write(I(a[0]), P<const void>(a[1]), Z(a[2]));
    case SYS_readv: return readv(I(a[0]), P<const iovec>(a[1]), I(a[2]));
    case SYS_writev: return writev(I(a[0]), P<const iovec>(a[1]), I(a[2]));
    case SYS_recvfrom:
      return recvfrom(I(a[0]), P<void>(a[1]), Z(a[2]), I(a[3]), P<sockaddr>(a[4]),
                      P<socklen_t>(a[5]));
    case SYS_sendto:
      return sendto(I(a[0]), P<const void>(a[1]), Z(a[2]), I(a[3]), P<const sockaddr>(a[4]),
                    L(a[5]));
    case SYS_recvmsg: return recvmsg(I(a[0]), P<msghdr>(a[1]), I(a[2]));
    case SYS_sendmsg: return sendmsg(I(a[0]), P<const msghdr>(a[1]), I(a[2]));
    case SYS_recvmmsg:
      return recvmmsg(I(a[0]), P<mmsghdr>(a[1]), U(a[2]), I(a[3]), P<timespec>(a[4]));
    case SYS_sendmmsg: return sendmmsg(I(a[0]), P<mmsghdr>(a[1]), U(a[2]), I(a[3]));
    case SYS_sendfile: return sendfile(I(a[0]), I(a[1]), P<off_t>(a[2]), Z(a[3]));
    case SYS_splice:
      return splice(I(a[0]), P<loff_t>(a[1]), I(a[2]), P<loff_t>(a[3]), Z(a[4]), U(a[5]));
    case SYS_getsockopt:
      return getsockopt(I(a[0]), I(a[1]), I(a[2]), P<void>(a[3]), P<socklen_t>(a[4]));
    case SYS_setsockopt:
      return setsockopt(I(a[0]), I(a[1]), I(a[2]), P<const void>(a[3]), L(a[4]));
    case SYS_getsockname: return getsockname(I(a[0]), P<sockaddr>(a[1]), P<socklen_t>(a[2]));
    case SYS_getpeername: return getpeername(I(a[0]), P<sockaddr>(a[1]), P<socklen_t>(a[2]));
    case SYS_execve:
      return execve(P<const char>(a[0]), P<char* const>(a[1]), P<char* const>(a[2]));
    case SYS_chroot: return chroot(P<const char>(a[0]));
    case SYS_prctl:
      if (I(a[0]) == PR_SET_SECCOMP) BeforeSeccompFilter();
      break;
    case SYS_seccomp:
      if (U(a[0]) == SECCOMP_SET_MODE_FILTER || U(a[0]) == SECCOMP_SET_MODE_STRICT) {
        BeforeSeccompFilter();
      }
      break;
    default: break;
  }
  return RawSyscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

}  // namespace
}  // namespace xsock::intercept

// glibc: long syscall(long number, ...); the kernel takes up to six machine words, which
// are read whatever the number (as glibc's own syscall() does).
extern "C" XSOCK_EXPORT long syscall(long nr, ...) noexcept {
  va_list ap;
  va_start(ap, nr);
  long a[6];
  for (long& v : a) v = va_arg(ap, long);
  va_end(ap);
  return xsock::intercept::Dispatch(nr, a);
}

#endif  // XSOCK_HAVE_RAW_SYSCALL
