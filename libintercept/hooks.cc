// The exported hooks of libxsock.so. Each one looks the descriptor up (one load on the
// hot path) and calls the routed core or the real libc function; no exception and no
// errno convention other than libc's crosses this file. The descriptor hooks are
// generated from hooks.def; the ones that create, replace or close descriptors, and the
// variadic ones, are written out below.

// This file defines both the plain names (fcntl, sendfile) and the *64 ones; under
// _FILE_OFFSET_BITS=64 (meson's default) glibc's headers would rename the former to the
// latter. On x86_64 and the other LP64 targets the two are the same functions anyway.
#undef _FILE_OFFSET_BITS

#include <dlfcn.h>
#include <fcntl.h>
#include <linux/close_range.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdarg>
#include <string>
#include <string_view>
#include <type_traits>

#include "libintercept/fd_table.h"
#include "libintercept/front_socket.h"
#include "libintercept/hooks_internal.h"
#include "libintercept/interceptor.h"
#include "libintercept/real_calls.h"
#include "libintercept/routed_io.h"

// Hooked functions that no header declares here (the _chk variants are declared only under
// _FORTIFY_SOURCE; <sys/sendfile.h> would rename sendfile to sendfile64 under
// _FILE_OFFSET_BITS=64), declared as glibc declares them.
extern "C" {
ssize_t __read_chk(int fd, void* buf, size_t n, size_t buflen);
ssize_t __recv_chk(int fd, void* buf, size_t n, size_t buflen, int flags);
ssize_t __recvfrom_chk(int fd, void* buf, size_t n, size_t buflen, int flags, sockaddr* from,
                       socklen_t* fromlen);
ssize_t sendfile(int fd, int in_fd, off_t* offset, size_t count) noexcept;
ssize_t sendfile64(int fd, int in_fd, off64_t* offset, size_t count) noexcept;
}

#define XSOCK_EXPORT __attribute__((visibility("default")))

namespace xsock::intercept {
namespace {

// Never destroyed: hooks run until the process's last instruction (atexit handlers,
// other libraries' destructors), so the table must outlive every static destructor.
union TableHolder {
  constexpr TableHolder() : table() {}
  ~TableHolder() {}
  FdTable table;
};
constinit TableHolder g_table_holder;

inline FdTable& Table() { return g_table_holder.table; }

std::atomic<Interceptor*> g_core{nullptr};

void LogToStderr(absl::string_view line) {
  std::string s(line);
  s.push_back('\n');
  XSOCK_REAL(write)(STDERR_FILENO, s.data(), s.size());
}

void AfterForkInChild() {
  if (Interceptor* c = g_core.load(std::memory_order_acquire)) c->AfterForkChild();
}

// Created on the first socket() or connect() of an AF_INET/AF_INET6 TCP socket, never
// destroyed.
Interceptor& Core() {
  if (Interceptor* c = g_core.load(std::memory_order_acquire)) return *c;
  static Interceptor* const created = [] {
    InterceptorConfig config = InterceptorConfig::FromEnvironment();
    config.log = LogToStderr;
    auto* c = new Interceptor(RealSyscalls(), Table(), std::move(config));
    pthread_atfork(nullptr, nullptr, AfterForkInChild);
    g_core.store(c, std::memory_order_release);
    return c;
  }();
  return *created;
}

// The core if anything was ever routed (or tried); nullptr keeps the fast path.
inline Interceptor* CoreIfCreated() { return g_core.load(std::memory_order_acquire); }

int Fcntl(int (*real)(int, int, ...), int fd, int cmd, void* arg) noexcept {
  const int r = real(fd, cmd, arg);
  if (r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) {
    if (Interceptor* core = CoreIfCreated()) core->AfterDup(fd, r);
  }
  return r;
}

int Dup2(int fd, int newfd, int flags, bool is_dup3) noexcept {
  Interceptor* core = CoreIfCreated();
  if (core != nullptr && fd != newfd) core->BeforeReplace(newfd);
  const int r = is_dup3 ? XSOCK_REAL(dup3)(fd, newfd, flags) : XSOCK_REAL(dup2)(fd, newfd);
  if (r >= 0 && core != nullptr) core->AfterDup(fd, newfd);
  return r;
}

__attribute__((constructor)) void ResolveAtLoad() { ResolveRealCalls(); }

}  // namespace

// glibc declares some hooked functions noexcept (__THROW) and others not (the
// cancellation points: connect, close, read, ...); a definition must repeat its
// declaration's specification, which clang enforces. Whatever the specification, no
// exception may reach the host program: every call into the core runs through Guard(),
// which is noexcept (an exception there terminates instead of unwinding into libc).
#define XSOCK_SAME_SPEC(name, args) noexcept(noexcept(::name args))

template <class F>
auto Guard(F&& f) noexcept -> decltype(f()) {
  return f();
}

// A listening socket has no data path: the hooks answer data calls on it as the kernel's
// TCP does (recv: ENOTCONN; send: EPIPE), so they never reach the rings. Everything
// else (options, names, shutdown) goes to the core.
constexpr bool IsDataCall(std::string_view name) {
  return name != "getsockopt" && name != "setsockopt" && name != "getsockname" &&
         name != "getpeername" && name != "shutdown";
}
constexpr bool IsReceiveCall(std::string_view name) {
  return name.starts_with("read") || name.starts_with("recv") || name.starts_with("__read") ||
         name.starts_with("__recv");
}
template <class T>
constexpr int FlagsArg(T v) {
  if constexpr (std::is_integral_v<T>) {
    return static_cast<int>(v);
  } else {
    return 0;
  }
}
// The flags argument of a send call (MSG_NOSIGNAL decides SIGPIPE); write(), writev()
// and sendfile() have none.
template <class... A>
int SendFlags(std::string_view name, A... a) {
  const int at = name == "sendmsg" ? 2
                 : (name == "send" || name == "sendto" || name == "sendmmsg") ? 3
                                                                                 : -1;
  int i = 0, flags = 0;
  ((flags = (i++ == at ? FlagsArg(a) : flags)), ...);
  return flags;
}
// tcp_sendmsg() on a listener: EPIPE and SIGPIPE, as on any unconnected stream.
inline Result OnListener(bool receive, int send_flags) {
  return receive ? Result::Err(ENOTCONN) : FrontSocket::PipeError(send_flags);
}

// ---- Generated: one call on one descriptor ----

#define XSOCK_FD_HOOK(ret, name, params, args, sys, routed)             \
  extern "C" XSOCK_EXPORT ret name params XSOCK_SAME_SPEC(name, args) { \
    if (FdRef ref = Table().Find(fd)) {                                 \
      FrontSocket& s = *ref.as<FrontSocket>();                          \
      if constexpr (IsDataCall(#name)) {                                \
        if (s.state() == SocketState::kListening) {                     \
          const int send_flags_ =                                       \
              [](auto... a) { return SendFlags(#name, a...); } args;    \
          return ToLibc<ret>(OnListener(IsReceiveCall(#name), send_flags_)); \
        }                                                               \
      }                                                                 \
      return Guard([&] { return ToLibc<ret>(routed); });                \
    }                                                                   \
    return XSOCK_REAL(name) args;                                       \
  }
#define XSOCK_OWN_HOOK(ret, name, params, args, sys)
#include "libintercept/hooks.def"
#undef XSOCK_FD_HOOK
#undef XSOCK_OWN_HOOK

// ---- Written out ----

extern "C" XSOCK_EXPORT int socket(int domain, int type, int protocol)
    XSOCK_SAME_SPEC(socket, (domain, type, protocol)) {
  const int fd = XSOCK_REAL(socket)(domain, type, protocol);
  if (fd < 0) return fd;
  const bool tcp = (domain == AF_INET || domain == AF_INET6) &&
                   (type & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) == SOCK_STREAM;
  if (tcp) {
    Guard([&] { Core().AfterTcpSocket(fd); });
  } else if (Interceptor* core = CoreIfCreated()) {
    Guard([&] { core->AfterNewDescriptor(fd); });
  }
  return fd;
}

extern "C" XSOCK_EXPORT int epoll_ctl(int epfd, int op, int fd, epoll_event* ev)
    XSOCK_SAME_SPEC(epoll_ctl, (epfd, op, fd, ev)) {
  const int r = XSOCK_REAL(epoll_ctl)(epfd, op, fd, ev);
  if (r == 0) {
    if (Interceptor* core = CoreIfCreated()) Guard([&] { core->AfterEpollCtl(epfd, op, fd, ev); });
  }
  return r;
}

extern "C" XSOCK_EXPORT int connect(int fd, const sockaddr* addr, socklen_t len)
    XSOCK_SAME_SPEC(connect, (fd, addr, len)) {
  const bool inet = addr != nullptr && len >= static_cast<socklen_t>(sizeof(sa_family_t)) &&
                    (addr->sa_family == AF_INET || addr->sa_family == AF_INET6);
  if (!inet && !Table().Contains(fd)) return XSOCK_REAL(connect)(fd, addr, len);
  return ToLibc<int>(Guard([&] { return Core().Connect(fd, addr, len); }));
}

extern "C" XSOCK_EXPORT int bind(int fd, const sockaddr* addr, socklen_t len)
    XSOCK_SAME_SPEC(bind, (fd, addr, len)) {
  const bool inet = addr != nullptr && len >= static_cast<socklen_t>(sizeof(sa_family_t)) &&
                    (addr->sa_family == AF_INET || addr->sa_family == AF_INET6);
  if (!inet && !Table().Contains(fd)) return XSOCK_REAL(bind)(fd, addr, len);
  return ToLibc<int>(Guard([&] { return Core().Bind(fd, addr, len); }));
}

extern "C" XSOCK_EXPORT int listen(int fd, int backlog) XSOCK_SAME_SPEC(listen, (fd, backlog)) {
  if (FdRef ref = Table().Find(fd)) {
    return ToLibc<int>(Guard([&] { return Core().Listen(*ref.as<FrontSocket>(), fd, backlog); }));
  }
  return XSOCK_REAL(listen)(fd, backlog);
}

namespace {
int Accept(int fd, sockaddr* addr, socklen_t* len, int flags, bool is_accept4) noexcept {
  if (FdRef ref = Table().Find(fd)) {
    FrontSocket& s = *ref.as<FrontSocket>();
    if (s.state() != SocketState::kListening) {
      errno = EINVAL;  // as accept() on a TCP socket that is not listening
      return -1;
    }
    return ToLibc<int>(Guard([&] { return Core().Accept(s, fd, addr, len, flags); }));
  }
  const int r =
      is_accept4 ? XSOCK_REAL(accept4)(fd, addr, len, flags) : XSOCK_REAL(accept)(fd, addr, len);
  if (r >= 0) {
    if (Interceptor* core = CoreIfCreated()) Guard([&] { core->AfterNewDescriptor(r); });
  }
  return r;
}
}  // namespace

extern "C" XSOCK_EXPORT int accept(int fd, sockaddr* addr, socklen_t* len)
    XSOCK_SAME_SPEC(accept, (fd, addr, len)) {
  return Accept(fd, addr, len, 0, /*is_accept4=*/false);
}

extern "C" XSOCK_EXPORT int accept4(int fd, sockaddr* addr, socklen_t* len, int flags)
    XSOCK_SAME_SPEC(accept4, (fd, addr, len, flags)) {
  return Accept(fd, addr, len, flags, /*is_accept4=*/true);
}

extern "C" XSOCK_EXPORT int chroot(const char* path) XSOCK_SAME_SPEC(chroot, (path)) {
  if (Interceptor* core = CoreIfCreated()) Guard([&] { core->BeforeChroot(); });
  return XSOCK_REAL(chroot)(path);
}

extern "C" XSOCK_EXPORT int close(int fd) XSOCK_SAME_SPEC(close, (fd)) {
  if (Interceptor* core = CoreIfCreated())
    return ToLibc<int>(Guard([&] { return core->Close(fd); }));
  return XSOCK_REAL(close)(fd);
}

extern "C" XSOCK_EXPORT int dup(int fd) XSOCK_SAME_SPEC(dup, (fd)) {
  const int r = XSOCK_REAL(dup)(fd);
  if (r >= 0) {
    if (Interceptor* core = CoreIfCreated()) Guard([&] { core->AfterDup(fd, r); });
  }
  return r;
}

extern "C" XSOCK_EXPORT int dup2(int fd, int newfd) XSOCK_SAME_SPEC(dup2, (fd, newfd)) {
  return Dup2(fd, newfd, 0, false);
}

extern "C" XSOCK_EXPORT int dup3(int fd, int newfd, int flags)
    XSOCK_SAME_SPEC(dup3, (fd, newfd, flags)) {
  return Dup2(fd, newfd, flags, true);
}

// close_range, closefrom, exec*, posix_spawn*, recvmsg: hooks_process.cc.

extern "C" XSOCK_EXPORT int fcntl(int fd, int cmd, ...) XSOCK_SAME_SPEC(fcntl, (fd, cmd)) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return Fcntl(XSOCK_REAL(fcntl), fd, cmd, arg);
}

extern "C" XSOCK_EXPORT int fcntl64(int fd, int cmd, ...) XSOCK_SAME_SPEC(fcntl64, (fd, cmd)) {
  va_list ap;
  va_start(ap, cmd);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  return Fcntl(XSOCK_REAL(fcntl64), fd, cmd, arg);
}

extern "C" XSOCK_EXPORT int ioctl(int fd, unsigned long request, ...)
    XSOCK_SAME_SPEC(ioctl, (fd, request)) {
  va_list ap;
  va_start(ap, request);
  void* arg = va_arg(ap, void*);
  va_end(ap);
  if (FdRef ref = Table().Find(fd)) {
    Result r = Result::Ok(0);
    if (Guard([&] { return Core().Ioctl(*ref.as<FrontSocket>(), fd, request, arg, &r); }))
      return ToLibc<int>(r);
  }
  return XSOCK_REAL(ioctl)(fd, request, arg);
}

// For the hooks in other files (hooks_internal.h).
FdTable& HookTable() { return Table(); }
Interceptor& HookCore() { return Core(); }
Interceptor* HookCoreIfCreated() { return CoreIfCreated(); }

}  // namespace xsock::intercept
