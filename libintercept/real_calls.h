// The real libc functions behind every hook, and how libxsock.so finds them.
//
// Start-up is staged: until ResolveRealCalls() has run, each entry of the table is a
// raw-syscall stand-in, so a hook called before our constructor, or from inside dlsym
// (which may allocate, and an allocator may read files), still does the right thing.
// ResolveRealCalls() then swaps in dlsym(RTLD_NEXT) results. The core never calls the
// hooked libc functions itself: it gets RealSyscalls().
#pragma once

#include <spawn.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>

#include "shared/syscalls.h"

namespace xsock::intercept {

// One atomic function pointer per hooked call, named after it (hooks.def).
struct RealCalls {
#define XSOCK_FD_HOOK(ret, name, params, args, sys, routed) std::atomic<ret(*) params> name;
#define XSOCK_OWN_HOOK(ret, name, params, args, sys) std::atomic<ret(*) params> name;
#include "libintercept/hooks.def"
#undef XSOCK_FD_HOOK
#undef XSOCK_OWN_HOOK
};

extern RealCalls g_real;

// The real function for a hooked call, e.g. XSOCK_REAL(read)(fd, buf, n).
#define XSOCK_REAL(name) (::xsock::intercept::g_real.name.load(std::memory_order_relaxed))

// Replaces the stand-ins with the next definitions after libxsock.so. Safe to call from
// any thread and re-entrantly (a nested call returns at once; the stand-ins serve).
void ResolveRealCalls();

// The Syscalls table of the real functions (resolving them first).
const Syscalls& RealSyscalls();

}  // namespace xsock::intercept
