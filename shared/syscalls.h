// The system calls that shared code and the library's core make, as a table of function
// pointers. xsockd and the tests use libc's own functions; libxsock.so fills the table
// with the next definitions after itself (dlsym(RTLD_NEXT)), so that its own work never
// re-enters its hooks. Tests may substitute any entry to inject faults.
#pragma once

#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>

namespace xsock {

struct Syscalls {
  int (*socket)(int, int, int);
  int (*connect)(int, const sockaddr*, socklen_t);
  int (*close)(int);
  ssize_t (*sendmsg)(int, const msghdr*, int);
  ssize_t (*recvmsg)(int, msghdr*, int);
  int (*poll)(pollfd*, nfds_t, int);
  int (*fcntl)(int, int, ...);
  int (*getsockopt)(int, int, int, void*, socklen_t*);
  int (*setsockopt)(int, int, int, const void*, socklen_t);
  int (*dup3)(int, int, int);
  int (*epoll_ctl)(int, int, int, epoll_event*);
  int (*bind)(int, const sockaddr*, socklen_t);
  int (*listen)(int, int);
  int (*accept4)(int, sockaddr*, socklen_t*, int);
};

// libc's functions, as linked into the calling binary.
const Syscalls& LibcSyscalls();

}  // namespace xsock
