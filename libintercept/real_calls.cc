#include "libintercept/real_calls.h"
#include "libintercept/raw_syscall.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/syscall.h>

#include <cstdarg>

namespace xsock::intercept {
namespace {

// ---- Raw-syscall stand-ins, one per hooked call ----

long Dup2Syscall(int fd, int newfd) {
#ifdef SYS_dup2
  return RawSyscall(SYS_dup2, fd, newfd);
#else
  if (fd == newfd) return RawSyscall(SYS_fcntl, fd, F_GETFD) < 0 ? -1 : newfd;
  return RawSyscall(SYS_dup3, fd, newfd, 0);
#endif
}

#define XSOCK_SYSCALL(nr, ...) RawSyscall(nr, __VA_ARGS__)
#define XSOCK_DUP2_SYSCALL(fd, newfd) Dup2Syscall(fd, newfd)
// fcntl/ioctl: the optional third argument travels as one machine word, as in glibc.
#define XSOCK_VA_SYSCALL(nr, fd, last)                     \
  ({                                                       \
    va_list ap_;                                           \
    va_start(ap_, last);                                   \
    const unsigned long arg_ = va_arg(ap_, unsigned long); \
    va_end(ap_);                                           \
    RawSyscall(nr, fd, last, arg_);                           \
  })
// The _chk variants' buffer size has no system call counterpart.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter"
#define XSOCK_FD_HOOK(ret, name, params, args, sys, routed) \
  ret Sys_##name params noexcept { return static_cast<ret>(sys); }
#define XSOCK_OWN_HOOK(ret, name, params, args, sys) \
  ret Sys_##name params noexcept { return static_cast<ret>(sys); }
#include "libintercept/hooks.def"
#undef XSOCK_FD_HOOK
#undef XSOCK_OWN_HOOK
#pragma GCC diagnostic pop

// Set while this thread runs dlsym, so a hook it triggers uses the stand-ins.
thread_local bool t_resolving __attribute__((tls_model("initial-exec"))) = false;
std::atomic<int> g_state{0};  // 0: stand-ins, 1: resolving, 2: resolved

}  // namespace

constinit RealCalls g_real = {
#define XSOCK_FD_HOOK(ret, name, params, args, sys, routed) {&Sys_##name},
#define XSOCK_OWN_HOOK(ret, name, params, args, sys) {&Sys_##name},
#include "libintercept/hooks.def"
#undef XSOCK_FD_HOOK
#undef XSOCK_OWN_HOOK
};

void ResolveRealCalls() {
  if (g_state.load(std::memory_order_acquire) == 2 || t_resolving) return;
  int expected = 0;
  if (!g_state.compare_exchange_strong(expected, 1, std::memory_order_acq_rel)) {
    // Another thread is resolving: wait for it, it takes microseconds.
    while (g_state.load(std::memory_order_acquire) != 2) {
    }
    return;
  }
  t_resolving = true;
  // A name libc does not have (an old glibc without close_range) keeps its stand-in.
#define XSOCK_RESOLVE(name)                                              \
  if (void* p = dlsym(RTLD_NEXT, #name)) {                               \
    g_real.name.store(reinterpret_cast<decltype(g_real.name.load())>(p), \
                      std::memory_order_release);                        \
  }
#define XSOCK_FD_HOOK(ret, name, params, args, sys, routed) XSOCK_RESOLVE(name)
#define XSOCK_OWN_HOOK(ret, name, params, args, sys) XSOCK_RESOLVE(name)
#include "libintercept/hooks.def"
#undef XSOCK_FD_HOOK
#undef XSOCK_OWN_HOOK
#undef XSOCK_RESOLVE
  t_resolving = false;
  g_state.store(2, std::memory_order_release);
}

const Syscalls& RealSyscalls() {
  static const Syscalls table = [] {
    ResolveRealCalls();
    return Syscalls{
        .socket = XSOCK_REAL(socket),
        .connect = XSOCK_REAL(connect),
        .close = XSOCK_REAL(close),
        .sendmsg = XSOCK_REAL(sendmsg),
        .recvmsg = XSOCK_REAL(recvmsg),
        .poll = ::poll,  // not hooked
        .fcntl = XSOCK_REAL(fcntl),
        .getsockopt = XSOCK_REAL(getsockopt),
        .setsockopt = XSOCK_REAL(setsockopt),
        .dup3 = XSOCK_REAL(dup3),
        .epoll_ctl = XSOCK_REAL(epoll_ctl),
        .bind = XSOCK_REAL(bind),
        .listen = XSOCK_REAL(listen),
        .accept4 = XSOCK_REAL(accept4),
    };
  }();
  return table;
}

}  // namespace xsock::intercept
