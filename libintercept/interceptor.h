// The routed implementation behind the hooks: the connect-time routing decision and
// the swap of a kernel socket for a channel, the fd-table bookkeeping of close/dup, and
// the calls forwarded to xsockd (options, names, shutdown). Data calls go straight to
// FrontSocket (see routed_io.h).
//
// Nothing here depends on being preloaded: the system calls, the fd table, the socket
// path, the routes and the diagnostics sink are injected, and tests drive it directly.
#pragma once

#include <sys/socket.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "libintercept/control_client.h"
#include "libintercept/epoll_shadow.h"
#include "libintercept/fd_table.h"
#include "libintercept/front_socket.h"
#include "libintercept/policy.h"
#include "libintercept/result.h"
#include "libintercept/route.h"
#include "shared/syscalls.h"

namespace xsock::intercept {

inline constexpr char kDefaultSocketPath[] = "/run/xsock/xsockd.sock";

struct InterceptorConfig {
  std::string socket_path = kDefaultSocketPath;  // XSOCK_SOCKET
  bool socket_path_set = false;                  // else the profile's `socket` applies
  std::string route;  // XSOCK_ROUTE, when `policy_source` is not given (tests)
  // Where the routing policy comes from (policy.h); unset: `route` alone.
  std::optional<PolicySource> policy_source;
  uint32_t ring_order = 0;  // 0: the profile's ring_size, else xsockd's default
  // Receives one diagnostic line (no newline). libxsock.so writes it to stderr.
  std::function<void(absl::string_view)> log;

  // XSOCK_SOCKET, and the policy from XSOCK_ROUTE or the configuration file.
  static InterceptorConfig FromEnvironment();
};

class Interceptor {
 public:
  Interceptor(const Syscalls& sys, FdTable& table, InterceptorConfig config);
  Interceptor(const Interceptor&) = delete;
  Interceptor& operator=(const Interceptor&) = delete;

  // ---- Calls on any descriptor ----

  // connect(): a routed socket's state machine, a new route, or the kernel's connect.
  Result Connect(int fd, const sockaddr* addr, socklen_t len);
  // bind(): an address XSOCK_ROUTE selects is bound by xsockd on the host (the socket is
  // routed from here on); anything else is the kernel's bind.
  Result Bind(int fd, const sockaddr* addr, socklen_t len);
  // An inherited descriptor (after exec, or received with SCM_RIGHTS) that may be an
  // xsock channel: attaches it through xsockd and routes it. Error if it is not one of
  // xsockd's sockets (EBADF from xsockd) or xsockd cannot be reached.
  Result AdoptInherited(int fd);
  // close(): forgets `fd`, then closes it; the socket is unmapped with its last descriptor.
  Result Close(int fd);
  // After a successful dup/dup2/dup3/F_DUPFD: `newfd` now refers to what `oldfd` does.
  void AfterDup(int oldfd, int newfd);
  // Before dup2/dup3 replace `newfd` (only matters if it is the control connection).
  void BeforeReplace(int newfd);
  // Before close_range(): forgets the descriptors it is about to close.
  void BeforeCloseRange(unsigned first, unsigned last, int flags);
  // A call that creates descriptors returned `fd`: whatever we knew about that number
  // was closed behind our back (e.g. by libc internally) and is stale.
  void AfterNewDescriptor(int fd);
  // socket() made `fd`, an AF_INET/AF_INET6 SOCK_STREAM socket: connect() may swap it,
  // so its epoll registrations are remembered (see epoll_shadow.h).
  void AfterTcpSocket(int fd);
  // A successful epoll_ctl().
  void AfterEpollCtl(int epfd, int op, int fd, const epoll_event* ev) {
    epoll_.AfterEpollCtl(epfd, op, fd, ev);
  }

  // ---- Calls on a routed socket `s` (fd refers to it) ----

  // listen(): xsockd listens on the host; the listener channel replaces the descriptor.
  Result Listen(FrontSocket& s, int fd, int backlog);
  // accept()/accept4() on a routed listening socket: the new descriptor.
  Result Accept(FrontSocket& s, int fd, sockaddr* addr, socklen_t* len, int flags);

  Result GetSockOpt(FrontSocket& s, int fd, int level, int name, void* value, socklen_t* len);
  Result SetSockOpt(FrontSocket& s, int fd, int level, int name, const void* value, socklen_t len);
  Result GetSockName(FrontSocket& s, int fd, sockaddr* addr, socklen_t* len);
  Result GetPeerName(FrontSocket& s, int fd, sockaddr* addr, socklen_t* len);
  Result Shutdown(FrontSocket& s, int fd, int how);
  // ioctl(): answers FIONREAD/SIOCINQ, SIOCOUTQ, SIOCOUTQNSD, SIOCATMARK. Returns false
  // for every other request, which then goes to the channel (FIONBIO, ...).
  bool Ioctl(FrontSocket& s, int fd, unsigned long request, void* arg, Result* out);

  // Before chroot(): xsockd's socket path may not be reachable afterwards, so a process
  // that routes (or may be handed routed sockets) connects now and keeps the connection.
  void BeforeChroot();
  // xsockd's pid, from this process's control connection (opened if needed).
  absl::StatusOr<pid_t> ServerPid() { return control_.ServerPid(); }

  // pthread_atfork child handler.
  void AfterForkChild();

  FdTable& table() { return table_; }
  const RoutingPolicy& policy() const { return *policy_; }

 private:
  Result ConnectRouted(FrontSocket& s, int fd, const sockaddr* addr, socklen_t len);
  // connect() of a routed socket that has not connected yet (made by bind()).
  Result ConnectIdle(FrontSocket& s, int fd, const proto::SockAddr& dest);
  bool IsRoutableSocket(int fd, const sockaddr* addr);
  // True if the kernel socket has a local port already (bind, or listen's autobind).
  bool IsBoundByKernel(int fd);
  Result Route(int fd, const sockaddr* addr, socklen_t len);
  // What a connect() that ended with `r` returns; a failed socket first goes back to
  // being an unconnected kernel socket (Disconnect), as TCP's tcp_disconnect leaves it.
  Result AfterConnectAttempt(FrontSocket& s, int fd, Result r);
  void Disconnect(FrontSocket& s, int fd);
  // After `fd` was given a new file in place of routed socket `old`: every other number
  // of this process that still refers to `old` (a dup made before) gets the same file and
  // table entry `now` (none: an unrouted kernel socket), as duplicates share one socket.
  void FollowDuplicates(const FrontSocket* old, int fd, FrontSocket* now);
  // xsockd went away under listener `s`: its channel would poll readable (end of file)
  // for good and event loops would spin on accept()'s error. `fd` becomes a socket that
  // never polls ready, and accept() waits on it as on a listener nobody connects to.
  void QuietDeadListener(FrontSocket& s, int fd);
  Result AcceptOnDead(int fd);
  // Gets a socket from xsockd and installs its channel over `fd` (flags kept, options
  // replayed). `unreachable` is the errno when xsockd cannot be asked. On success *out
  // is the routed socket (the table holds it; valid while `fd` is not closed).
  // *unavailable (when given) tells "xsockd cannot be reached" apart from other failures.
  Result Swap(int fd, const proto::SockAddr& dest, int unreachable, FrontSocket** out,
              bool* unavailable = nullptr);
  // The debug line for a routing decision (config log_level / XSOCK_LOG debug).
  void LogDecision(const std::string& line);
  int log_fd_ = -1;  // the configured log file, or -1: config_.log
  // A routed socket without rings, for a listening socket (created, accepted or adopted).
  FrontSocket* NewListener(uint64_t socket_id, int domain);
  // The new descriptor `fd`, a stream channel whose memory is `memfd`, becomes a routed
  // socket. Closes memfd; closes fd too on failure.
  Result InstallStream(int fd, int memfd, uint32_t order, uint64_t socket_id, int domain,
                       bool init_locks, uint64_t generation);
  // Options set on the kernel socket before connect(), to replay to xsockd; takes the
  // timeouts into `s`.
  std::vector<proto::SetSockOptRequest> OptionsToReplay(int fd, FrontSocket& s);
  Result Forward(FrontSocket& s, int fd, const proto::Request& req, proto::Reply* reply);
  Result GetName(FrontSocket& s, int fd, bool peer, sockaddr* addr, socklen_t* len);
  std::optional<bool> MappedKind(const FrontSocket& s) const;
  void Log(absl::string_view line);
  void LogUnreachableOnce(absl::string_view why);

  const Syscalls& sys_;
  FdTable& table_;
  InterceptorConfig config_;
  const std::unique_ptr<const RoutingPolicy> policy_;
  ControlClient control_;
  FrontSocketPool pool_;
  EpollShadow epoll_;
  std::atomic<bool> warned_unreachable_{false};
};

}  // namespace xsock::intercept
