// Hand-written data-path hooks: the calls that name two descriptors (splice), which the
// one-descriptor X-macro of hooks.def cannot express. Thin wrappers over routed_io.h.
//
// Not interposed, on purpose (docs/channel.md, "Calls that bypass libc's wrappers"):
// syscall(2), vmsplice/tee (pipes only, EINVAL on any socket), copy_file_range (EINVAL
// on sockets).

#include <fcntl.h>
#include <sys/types.h>

#include "libintercept/hooks_internal.h"
#include "libintercept/real_calls.h"
#include "libintercept/routed_io.h"

#define XSOCK_EXPORT __attribute__((visibility("default")))
// A definition must repeat its declaration's exception specification (see hooks.cc).
#define XSOCK_SAME_SPEC(name, args) noexcept(noexcept(::name args))

namespace xsock::intercept {
namespace {

template <class F>
auto Guard(F&& f) noexcept -> decltype(f()) {
  return f();
}

}  // namespace

// splice() between a routed socket and a pipe. The kernel would splice into (or out of)
// the channel, where every byte is a wake-up or a readiness token; the bytes go between
// the pipe and the rings instead.
extern "C" XSOCK_EXPORT ssize_t splice(int fd_in, loff_t* off_in, int fd_out, loff_t* off_out,
                                       size_t len, unsigned int flags)
    XSOCK_SAME_SPEC(splice, (fd_in, off_in, fd_out, off_out, len, flags)) {
  FdRef in = HookTable().Find(fd_in);
  FdRef out = HookTable().Find(fd_out);
  if (!in && !out) return XSOCK_REAL(splice)(fd_in, off_in, fd_out, off_out, len, flags);
  return Guard([&] {
    return ToLibc<ssize_t>(io::Splice(in.as<FrontSocket>(), fd_in, off_in, out.as<FrontSocket>(),
                                      fd_out, off_out, len, flags));
  });
}

}  // namespace xsock::intercept
