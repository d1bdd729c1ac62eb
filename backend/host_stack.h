// The host-stack seam: the few calls xsockd makes on a routed socket's *host* side (the
// socket the app's connection really runs on). By default they go to this machine's
// kernel; `xsockd --front xen` (backend/xen/FRONT.md) installs an implementation that
// carries them to dom0 over PVCalls instead, so the rest of the backend (channels, rings,
// pumps) is the same in both.
//
// Conventions: calls return 0 or a positive errno (the backend's style), Socket and
// Accept a descriptor or a negated errno. Every descriptor a HostStack hands out is an
// ordinary nonblocking, close-on-exec stream descriptor the backend may poll, read,
// write and close itself; readiness (EPOLLOUT at connect completion, EPOLLIN on a
// listener with a connection waiting) follows the kernel's rules.
#pragma once

#include <sys/socket.h>

namespace xsock::backend {

class HostStack {
 public:
  virtual ~HostStack() = default;
  // A new nonblocking, close-on-exec TCP socket of `domain`.
  virtual int Socket(int domain) = 0;
  // connect(2): 0, EINPROGRESS (completion: EPOLLOUT, then SO_ERROR) or the errno.
  virtual int Connect(int fd, const sockaddr* addr, socklen_t len) = 0;
  virtual int Bind(int fd, const sockaddr* addr, socklen_t len) = 0;
  virtual int Listen(int fd, int backlog) = 0;
  // accept4(2) with SOCK_NONBLOCK | SOCK_CLOEXEC.
  virtual int Accept(int fd) = 0;
  virtual int GetSockName(int fd, sockaddr* addr, socklen_t* len) = 0;
  virtual int GetPeerName(int fd, sockaddr* addr, socklen_t* len) = 0;
  virtual int Shutdown(int fd, int how) = 0;
  virtual int SetSockOpt(int fd, int level, int name, const void* value, socklen_t len) = 0;
  // Also SO_ERROR, which is how connect completion is learnt.
  virtual int GetSockOpt(int fd, int level, int name, void* value, socklen_t* len) = 0;
  // A read returned end of file: the error the connection ended with (ECONNRESET...),
  // or 0 for an orderly FIN. The kernel reports errors through the read itself: 0.
  virtual int EofError(int fd) = 0;
};

// The kernel's own calls.
HostStack& KernelHostStack();

// The stack every routed socket created from now on uses (KernelHostStack() unless
// InstallHostStack was called). Process-wide because it is a property of where xsockd
// runs (a host, or a Xen guest forwarding to dom0); install it before the server starts
// and keep it alive until the server is gone.
HostStack& CurrentHostStack();
void InstallHostStack(HostStack* stack);  // nullptr: back to the kernel

}  // namespace xsock::backend
