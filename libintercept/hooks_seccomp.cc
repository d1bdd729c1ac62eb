// prctl(): a process that installs a seccomp filter (PR_SET_SECCOMP) may forbid every
// system call the channel protocol normally makes (OpenSSH's pre-authentication sandbox
// allows little more than read, write, poll and futex, and kills on the rest), so the
// library enters restricted mode first (front_socket.h). The filter applies from the
// moment the real prctl returns, hence before it: a failed prctl leaves the process in
// restricted mode, which only costs it the finer points (front_socket.h lists them).
// A filter installed with syscall(SYS_seccomp) or syscall(SYS_prctl) reaches the same
// switch through the syscall() hook (hooks_syscall.cc); one installed by the instruction
// itself (static or Go code) is not seen, and a program exec'd under an inherited filter
// starts in normal mode too.

#include <dlfcn.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdarg>

#include "libintercept/fd_table.h"
#include "libintercept/front_socket.h"
#include "libintercept/hooks_internal.h"
#include "libintercept/raw_syscall.h"

#define XSOCK_EXPORT __attribute__((visibility("default")))

namespace xsock::intercept {
namespace {

using PrctlFn = int (*)(int, ...);

// Resolved at load: once a filter is in place dlsym might need calls it forbids.
PrctlFn g_real_prctl = nullptr;

__attribute__((constructor)) void ResolvePrctl() {
  g_real_prctl = reinterpret_cast<PrctlFn>(dlsym(RTLD_NEXT, "prctl"));
}

// Restricted mode cannot call fcntl: it answers O_NONBLOCK from what each routed
// descriptor's socket saw last, read here for all of them while fcntl is still allowed.
void RefreshNonBlockingOfAll() {
  FdTable& table = HookTable();
  for (int fd = 0; fd < FdTable::kMaxFds; ++fd) {
    if (!table.Contains(fd)) continue;
    if (FdRef ref = table.Find(fd)) ref.as<FrontSocket>()->RefreshNonBlocking(fd);
  }
}

}  // namespace

void BeforeSeccompFilter() {
  if (InRestrictedMode()) return;
  RefreshNonBlockingOfAll();
  EnterRestrictedMode();
}

}  // namespace xsock::intercept

// glibc: int prctl(int option, ...), the kernel takes four more unsigned longs; they are
// passed through whatever the option (unused ones are ignored by the kernel).
extern "C" XSOCK_EXPORT int prctl(int option, ...) noexcept {
  va_list ap;
  va_start(ap, option);
  const unsigned long a2 = va_arg(ap, unsigned long);
  const unsigned long a3 = va_arg(ap, unsigned long);
  const unsigned long a4 = va_arg(ap, unsigned long);
  const unsigned long a5 = va_arg(ap, unsigned long);
  va_end(ap);
  if (option == PR_SET_SECCOMP) xsock::intercept::BeforeSeccompFilter();
  if (xsock::intercept::g_real_prctl != nullptr) {
    return xsock::intercept::g_real_prctl(option, a2, a3, a4, a5);
  }
  return static_cast<int>(xsock::intercept::RawSyscall(SYS_prctl, option, a2, a3, a4, a5));
}
