// The hooks of process life: exec (the environment that keeps the library loaded in the
// new image), start-up adoption of inherited channels, SCM_RIGHTS reception, and the
// mass closes (close_range, closefrom) that must step around the library's own
// descriptor. The logic lives in exec_env.cc, inherited.cc and own_fds.h; these are the
// thin exported wrappers.

#include <dlfcn.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/close_range.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <alloca.h>
#include <atomic>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "libintercept/control_client.h"
#include "libintercept/exec_env.h"
#include "libintercept/hooks_internal.h"
#include "libintercept/inherited.h"
#include "libintercept/own_fds.h"
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

// ---- What exec restores -----------------------------------------------------------------

// Set once by the constructor, never freed (exec hooks run until the last instruction).
std::atomic<const execenv::SavedEnv*> g_saved{nullptr};

std::string LibraryPath() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&LibraryPath), &info) == 0 || info.dli_fname == nullptr) {
    return {};
  }
  // LD_PRELOAD may have named us relatively; the new image may start elsewhere.
  char buf[PATH_MAX];
  if (realpath(info.dli_fname, buf) != nullptr) return buf;
  return info.dli_fname[0] == '/' ? info.dli_fname : "";
}

void WriteStderr(const char* const* parts) {
  char line[512];
  size_t n = 0;
  for (const char* const* p = parts; *p != nullptr; ++p) {
    for (const char* c = *p; *c != '\0' && n < sizeof(line) - 1; ++c) line[n++] = *c;
  }
  line[n++] = '\n';
  XSOCK_REAL(write)(STDERR_FILENO, line, n);
}

std::atomic<bool> g_setid_warned{false};

void WarnSetIdOnce(const char* what) {
  if (g_setid_warned.exchange(true)) return;
  const char* parts[] = {"libxsock: ", what != nullptr ? what : "(program)",
                         " is set-user-ID or set-group-ID: the loader ignores LD_PRELOAD "
                         "there, so it runs without xsock",
                         nullptr};
  WriteStderr(parts);
}

bool SetIdPath(const char* path) {
  struct stat st;
  return path != nullptr && stat(path, &st) == 0 && execenv::IsSetIdProgram(st);
}

// The file execvp()/posix_spawnp() would run: they search the caller's PATH.
bool SetIdSearched(const char* file, char (&buf)[PATH_MAX]) {
  return execenv::ResolveExecPath(file, getenv("PATH"), buf, sizeof(buf)) && SetIdPath(buf);
}

constexpr size_t kMaxEnvEntries = size_t{1} << 17;  // beyond ARG_MAX anyway
constexpr size_t kStackBytes = 16384;

// Runs call(env) with `envp`, or with a copy that has what the program scrubbed put back
// (exec_env.h). No allocation: small arrays live on the stack, big ones in an anonymous
// mapping. `set_id()` says whether the target ignores LD_PRELOAD anyway.
template <class SetId, class Call>
int WithRestoredEnv(char* const* envp, const char* what, SetId&& set_id, Call&& call) {
  const execenv::SavedEnv* saved = g_saved.load(std::memory_order_acquire);
  if (saved == nullptr) return call(envp);
  const auto* in = const_cast<const char* const*>(envp);
  const execenv::RestorePlan plan = execenv::PlanRestore(in, *saved);
  if (!plan.needed || plan.entries > kMaxEnvEntries) return call(envp);
  if (set_id()) {
    WarnSetIdOnce(what);
    return call(envp);
  }
  const size_t bytes = plan.entries * sizeof(char*) + plan.scratch;
  const bool mapped = bytes > kStackBytes;
  void* mem = mapped
                  ? mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                  : alloca(bytes);
  if (mem == MAP_FAILED) return call(envp);
  auto** out = static_cast<const char**>(mem);
  char* scratch = reinterpret_cast<char*>(out + plan.entries);
  const int r = call(execenv::BuildRestored(in, *saved, plan, out, scratch));
  if (mapped) {
    const int e = errno;
    munmap(mem, bytes);
    errno = e;
  }
  return r;
}

// The argument list of execl/execle/execlp as an argv array. Small lists live in `small`;
// long ones in an anonymous mapping (released by the destructor, i.e. after a failed exec).
class VarArgv {
 public:
  // Reads arguments after `arg` up to the terminating null; leaves `ap` just past it.
  VarArgv(const char* arg, va_list& ap) {
    va_list count;
    va_copy(count, ap);
    size_t n = 1;
    while (va_arg(count, const char*) != nullptr) ++n;
    va_end(count);
    size_ = n + 1;
    argv_ = small_;
    if (size_ > std::size(small_)) {
      void* m = mmap(nullptr, size_ * sizeof(char*), PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (m == MAP_FAILED) {
        argv_ = nullptr;
        return;
      }
      argv_ = static_cast<const char**>(m);
      mapped_ = true;
    }
    argv_[0] = arg;
    for (size_t i = 1; i < n; ++i) argv_[i] = va_arg(ap, const char*);
    (void)va_arg(ap, const char*);  // the terminating null
    argv_[n] = nullptr;
  }
  ~VarArgv() {
    if (mapped_) munmap(argv_, size_ * sizeof(char*));
  }
  VarArgv(const VarArgv&) = delete;
  VarArgv& operator=(const VarArgv&) = delete;
  char* const* get() const { return const_cast<char* const*>(argv_); }

 private:
  const char* small_[256];
  const char** argv_ = nullptr;
  size_t size_ = 0;
  bool mapped_ = false;
};

int Execve(const char* path, char* const argv[], char* const envp[]) {
  return WithRestoredEnv(
      envp, path, [&] { return SetIdPath(path); },
      [&](char* const* e) { return XSOCK_REAL(execve)(path, argv, e); });
}

int Execvpe(const char* file, char* const argv[], char* const envp[]) {
  char buf[PATH_MAX];
  return WithRestoredEnv(
      envp, file, [&] { return SetIdSearched(file, buf); },
      [&](char* const* e) { return XSOCK_REAL(execvpe)(file, argv, e); });
}

// ---- Descriptors inherited or received ------------------------------------------------

// xsockd's pid as seen here: from the core's control connection if the core exists, else
// from a short-lived connection of its own (this runs only when a candidate exists).
// Cached while that process lives (a restarted xsockd has another pid), so a program
// that keeps receiving other programs' socketpairs asks once, not per message.
std::atomic<pid_t> g_server_pid{0};

Result ServerPid() {
  const pid_t cached = g_server_pid.load(std::memory_order_relaxed);
  if (cached > 0 && (kill(cached, 0) == 0 || errno == EPERM)) return Result::Ok(cached);
  // A process that already talks to xsockd asks on that connection: after chroot() the
  // socket path may be out of reach (vsftpd's session receives its data sockets there).
  if (Interceptor* core = HookCoreIfCreated()) {
    if (auto pid = core->ServerPid(); pid.ok() && *pid > 0) {
      g_server_pid.store(*pid, std::memory_order_relaxed);
      return Result::Ok(*pid);
    }
  }
  ControlClient probe(RealSyscalls(), InterceptorConfig::FromEnvironment().socket_path);
  auto pid = probe.ServerPid();
  if (!pid.ok() || *pid <= 0) return Result::Err(ECONNREFUSED);
  g_server_pid.store(*pid, std::memory_order_relaxed);
  return Result::Ok(*pid);
}

AdoptOps CoreAdoptOps() {
  return AdoptOps{
      .server_pid = [] { return ServerPid(); },
      .adopt = [](int fd) { return HookCore().AdoptInherited(fd); },
      .alias = [](int first, int dup) { HookCore().AfterDup(first, dup); },
  };
}

// Channels inherited across exec: the library's memory is gone, the descriptors are not.
void AdoptInheritedAtStart() {
  ChannelCandidate found[64];
  const size_t n = FindChannelCandidates(RealSyscalls(), found);
  if (n == 0) return;
  AdoptChannels(std::span<const ChannelCandidate>(found, n), CoreAdoptOps());
}

// Descriptors that arrived with SCM_RIGHTS on an unrouted socket.
void AdoptReceived(const msghdr* msg) {
  ChannelCandidate found[16];
  size_t n = 0;
  for (const cmsghdr* c = CMSG_FIRSTHDR(msg); c != nullptr;
       c = CMSG_NXTHDR(const_cast<msghdr*>(msg), const_cast<cmsghdr*>(c))) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    const auto* data = reinterpret_cast<const unsigned char*>(CMSG_DATA(c));
    for (size_t i = 0; i < count && n < std::size(found); ++i) {
      int fd;
      std::memcpy(&fd, data + i * sizeof(int), sizeof(fd));
      // A number the table already routes would be stale: the kernel just handed it out.
      if (Interceptor* core = HookCoreIfCreated()) core->AfterNewDescriptor(fd);
      if (ProbeChannelCandidate(RealSyscalls(), fd, &found[n])) ++n;
    }
  }
  if (n == 0) return;
  AdoptChannels(std::span<const ChannelCandidate>(found, n), CoreAdoptOps());
}

// ---- stdio on an adopted stdin/stdout/stderr ----
//
// An inetd-style child gets the routed socket as descriptors 0 and 1, and many such
// programs (sha256sum, most filters) use stdio, whose reads and writes are libc-internal
// system calls no hook sees: they would read and write the channel itself. So when a
// standard descriptor was adopted at start-up, its FILE is replaced by a cookie stream
// over the hooks' routed path. Its _fileno is set to the descriptor, so fileno(),
// isatty() and fstat() on it keep answering as before. Limits: only at start-up (a later
// dup2 over 0/1/2 keeps the old FILE), and C++ iostreams bound to the old FILE at their
// initialisation (before ours) still bypass it.

ssize_t CookieRead(void* cookie, char* buf, size_t n) {
  const int fd = static_cast<int>(reinterpret_cast<intptr_t>(cookie));
  if (FdRef ref = HookTable().Find(fd)) {
    return ToLibc<ssize_t>(io::Read(*ref.as<FrontSocket>(), fd, buf, n));
  }
  return XSOCK_REAL(read)(fd, buf, n);
}

ssize_t CookieWrite(void* cookie, const char* buf, size_t n) {
  const int fd = static_cast<int>(reinterpret_cast<intptr_t>(cookie));
  size_t done = 0;
  // stdio counts a short write as an error: write it all, as a blocking write does.
  while (done < n) {
    ssize_t r;
    if (FdRef ref = HookTable().Find(fd)) {
      r = ToLibc<ssize_t>(io::Write(*ref.as<FrontSocket>(), fd, buf + done, n - done));
    } else {
      r = XSOCK_REAL(write)(fd, buf + done, n - done);
    }
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return done > 0 ? static_cast<ssize_t>(done) : -1;
    done += static_cast<size_t>(r);
  }
  return static_cast<ssize_t>(done);
}

int CookieClose(void* cookie) {
  const int fd = static_cast<int>(reinterpret_cast<intptr_t>(cookie));
  if (Interceptor* core = HookCoreIfCreated()) return ToLibc<int>(core->Close(fd));
  return XSOCK_REAL(close)(fd);
}

void RouteStdStream(FILE** stream, int fd, const char* mode, int buffering) {
  if (*stream == nullptr || fileno(*stream) != fd || !HookTable().Contains(fd)) return;
  const cookie_io_functions_t io = {CookieRead, CookieWrite, nullptr, CookieClose};
  FILE* f = fopencookie(reinterpret_cast<void*>(static_cast<intptr_t>(fd)), mode, io);
  if (f == nullptr) return;
  f->_fileno = fd;
  if (buffering == _IONBF) setvbuf(f, nullptr, _IONBF, 0);
  *stream = f;
}

__attribute__((constructor)) void ProcessStart() {
  ResolveRealCalls();
  g_saved.store(new execenv::SavedEnv(execenv::SavedEnv::Capture(
                    const_cast<const char* const*>(environ), LibraryPath())),
                std::memory_order_release);
  AdoptInheritedAtStart();
  RouteStdStream(&stdin, STDIN_FILENO, "r", _IOFBF);
  RouteStdStream(&stdout, STDOUT_FILENO, "w", _IOFBF);
  RouteStdStream(&stderr, STDERR_FILENO, "w", _IONBF);
}

// close_range over [first, last] except the library's own descriptors.
int CloseRangeSkippingOwn(unsigned first, unsigned last, int flags) {
  const int known = CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC;
  if (first > last || (flags & ~known) != 0) return XSOCK_REAL(close_range)(first, last, flags);
  int own[OwnFds::kSlots];
  const size_t n = OwnFds::Snapshot(own);
  Interceptor* core = HookCoreIfCreated();
  return ForEachRangeSkipping(first, last, std::span<const int>(own, n),
                              [&](unsigned a, unsigned b) {
                                // Forget first: the numbers are free the moment they close.
                                if (core != nullptr) core->BeforeCloseRange(a, b, flags);
                                return XSOCK_REAL(close_range)(a, b, flags);
                              });
}

}  // namespace

// ---- exec -------------------------------------------------------------------------------

extern "C" XSOCK_EXPORT int execve(const char* path, char* const argv[], char* const envp[])
    XSOCK_SAME_SPEC(execve, (path, argv, envp)) {
  return Guard([&] { return Execve(path, argv, envp); });
}

extern "C" XSOCK_EXPORT int execvpe(const char* file, char* const argv[], char* const envp[])
    XSOCK_SAME_SPEC(execvpe, (file, argv, envp)) {
  return Guard([&] { return Execvpe(file, argv, envp); });
}

// execv/execvp/execl/execlp pass `environ`, which we never change; it lacks our variables
// only if the program cleared it itself (clearenv()).
extern "C" XSOCK_EXPORT int execv(const char* path, char* const argv[])
    XSOCK_SAME_SPEC(execv, (path, argv)) {
  return Guard([&] {
    return WithRestoredEnv(
        environ, path, [&] { return SetIdPath(path); },
        [&](char* const* e) {
          return e == environ ? XSOCK_REAL(execv)(path, argv) : XSOCK_REAL(execve)(path, argv, e);
        });
  });
}

extern "C" XSOCK_EXPORT int execvp(const char* file, char* const argv[])
    XSOCK_SAME_SPEC(execvp, (file, argv)) {
  return Guard([&] {
    char buf[PATH_MAX];
    return WithRestoredEnv(
        environ, file, [&] { return SetIdSearched(file, buf); },
        [&](char* const* e) {
          return e == environ ? XSOCK_REAL(execvp)(file, argv) : XSOCK_REAL(execvpe)(file, argv, e);
        });
  });
}

extern "C" XSOCK_EXPORT int execl(const char* path, const char* arg, ...)
    XSOCK_SAME_SPEC(execl, (path, arg)) {
  va_list ap;
  va_start(ap, arg);
  VarArgv argv(arg, ap);
  va_end(ap);
  if (argv.get() == nullptr) {
    errno = ENOMEM;
    return -1;
  }
  return Guard([&] { return Execve(path, argv.get(), environ); });
}

extern "C" XSOCK_EXPORT int execle(const char* path, const char* arg, ...)
    XSOCK_SAME_SPEC(execle, (path, arg)) {
  va_list ap;
  va_start(ap, arg);
  VarArgv argv(arg, ap);
  char* const* envp = va_arg(ap, char* const*);
  va_end(ap);
  if (argv.get() == nullptr) {
    errno = ENOMEM;
    return -1;
  }
  return Guard([&] { return Execve(path, argv.get(), envp); });
}

extern "C" XSOCK_EXPORT int execlp(const char* file, const char* arg, ...)
    XSOCK_SAME_SPEC(execlp, (file, arg)) {
  va_list ap;
  va_start(ap, arg);
  VarArgv argv(arg, ap);
  va_end(ap);
  if (argv.get() == nullptr) {
    errno = ENOMEM;
    return -1;
  }
  return Guard([&] { return Execvpe(file, argv.get(), environ); });
}

extern "C" XSOCK_EXPORT int fexecve(int fd, char* const argv[], char* const envp[])
    XSOCK_SAME_SPEC(fexecve, (fd, argv, envp)) {
  return Guard([&] {
    return WithRestoredEnv(
        envp, "fexecve target",
        [&] {
          struct stat st;
          return fstat(fd, &st) == 0 && execenv::IsSetIdProgram(st);
        },
        [&](char* const* e) { return XSOCK_REAL(fexecve)(fd, argv, e); });
  });
}

extern "C" XSOCK_EXPORT int posix_spawn(pid_t* pid, const char* path,
                                        const posix_spawn_file_actions_t* actions,
                                        const posix_spawnattr_t* attr, char* const argv[],
                                        char* const envp[])
    XSOCK_SAME_SPEC(posix_spawn, (pid, path, actions, attr, argv, envp)) {
  return Guard([&] {
    return WithRestoredEnv(
        envp, path, [&] { return SetIdPath(path); },
        [&](char* const* e) { return XSOCK_REAL(posix_spawn)(pid, path, actions, attr, argv, e); });
  });
}

extern "C" XSOCK_EXPORT int posix_spawnp(pid_t* pid, const char* file,
                                         const posix_spawn_file_actions_t* actions,
                                         const posix_spawnattr_t* attr, char* const argv[],
                                         char* const envp[])
    XSOCK_SAME_SPEC(posix_spawnp, (pid, file, actions, attr, argv, envp)) {
  return Guard([&] {
    char buf[PATH_MAX];
    return WithRestoredEnv(
        envp, file, [&] { return SetIdSearched(file, buf); },
        [&](char* const* e) {
          return XSOCK_REAL(posix_spawnp)(pid, file, actions, attr, argv, e);
        });
  });
}

// ---- mass closes --------------------------------------------------------------------------

extern "C" XSOCK_EXPORT int close_range(unsigned first, unsigned last, int flags)
    XSOCK_SAME_SPEC(close_range, (first, last, flags)) {
  return Guard([&] { return CloseRangeSkippingOwn(first, last, flags); });
}

// glibc's closefrom() calls its internal close_range (not our hook), and without that
// system call (Linux < 5.9) closes what /proc/self/fd lists one by one: it needs its own
// hook.
extern "C" XSOCK_EXPORT void closefrom(int lowfd) XSOCK_SAME_SPEC(closefrom, (lowfd)) {
  const unsigned first = lowfd < 0 ? 0u : static_cast<unsigned>(lowfd);
  if (Guard([&] { return CloseRangeSkippingOwn(first, ~0u, 0); }) == 0) return;
  // No close_range: glibc's fallback closes ours too. Forget everything it will close
  // first; the control connection is reopened when next needed.
  if (Interceptor* core = HookCoreIfCreated()) {
    Guard([&] { core->BeforeCloseRange(first, ~0u, 0); });
  }
  XSOCK_REAL(closefrom)(lowfd);
}

// ---- SCM_RIGHTS -----------------------------------------------------------------------

extern "C" XSOCK_EXPORT ssize_t recvmsg(int fd, msghdr* msg, int flags)
    XSOCK_SAME_SPEC(recvmsg, (fd, msg, flags)) {
  if (FdRef ref = HookTable().Find(fd)) {
    FrontSocket& s = *ref.as<FrontSocket>();
    if (s.state() == SocketState::kListening) return ToLibc<ssize_t>(Result::Err(ENOTCONN));
    return Guard([&] { return ToLibc<ssize_t>(io::RecvMsg(s, fd, msg, flags)); });
  }
  const ssize_t r = XSOCK_REAL(recvmsg)(fd, msg, flags);
  // Only a message that carried control data can carry descriptors; the test is two loads.
  if (r >= 0 && msg != nullptr && msg->msg_control != nullptr &&
      msg->msg_controllen >= CMSG_LEN(sizeof(int))) {
    const int e = errno;
    Guard([&] { AdoptReceived(msg); });
    errno = e;
  }
  return r;
}

}  // namespace xsock::intercept
