#include "libintercept/interceptor.h"

#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "libintercept/listener.h"
#include "libintercept/own_fds.h"
#include "libintercept/raw_syscall.h"
#include "shared/socket_page.h"

namespace xsock::intercept {
namespace {

int ErrOf(const proto::Reply& r) {
  return std::visit([](const auto& m) { return static_cast<int>(m.err); }, r);
}

// Copies `n` bytes of an option or address out the way the kernel does: truncated to
// the caller's room, with the full length reported back.
void CopyOut(void* dst, socklen_t* len, const void* src, size_t n) {
  const size_t room = static_cast<size_t>(*len);
  if (dst != nullptr) std::memcpy(dst, src, n < room ? n : room);
  *len = static_cast<socklen_t>(n < room ? n : room);
}

int GetIntOpt(const Syscalls& sys, int fd, int level, int name, int* value) {
  socklen_t len = sizeof(*value);
  return sys.getsockopt(fd, level, name, value, &len);
}

// Maps the socket memfd after checking it against our own records: its size follows
// from the ring order in the reply, and the page must carry the magic and version.
void* MapSocketMemory(int memfd, uint32_t order) {
  struct stat st;
  const size_t size = SocketMemfdSize(order);
  if (fstat(memfd, &st) != 0 || static_cast<uint64_t>(st.st_size) != size) return nullptr;
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd, 0);
  if (base == MAP_FAILED) return nullptr;
  const auto* page = static_cast<const SocketPage*>(base);
  if (page->magic != kSocketPageMagic || page->version != kSocketPageVersion) {
    munmap(base, size);
    return nullptr;
  }
  return base;
}

}  // namespace

InterceptorConfig InterceptorConfig::FromEnvironment() {
  InterceptorConfig c;
  if (const char* p = getenv("XSOCK_SOCKET"); p != nullptr && *p != '\0') {
    c.socket_path = p;
    c.socket_path_set = true;
  }
  c.policy_source = PolicySource::FromProcess();
  return c;
}

namespace {

std::unique_ptr<const RoutingPolicy> MakePolicy(const InterceptorConfig& c) {
  if (c.policy_source) return RoutingPolicy::Load(*c.policy_source, c.log);
  PolicySource only_route;
  only_route.route_env = c.route;
  only_route.route_env_set = true;
  return RoutingPolicy::Load(only_route, c.log);
}

// The profile's settings fill in what the environment did not say.
InterceptorConfig WithPolicySettings(InterceptorConfig c, const RoutingPolicy& p) {
  if (!c.socket_path_set && !p.socket_path().empty()) c.socket_path = p.socket_path();
  if (c.ring_order == 0) c.ring_order = p.ring_order();
  return c;
}

}  // namespace

Interceptor::Interceptor(const Syscalls& sys, FdTable& table, InterceptorConfig config)
    : sys_(sys),
      table_(table),
      config_(std::move(config)),
      policy_(MakePolicy(config_)),
      control_(sys, WithPolicySettings(config_, *policy_).socket_path) {
  config_ = WithPolicySettings(std::move(config_), *policy_);
  const std::string& dest = policy_->log_destination();
  if (!dest.empty() && dest != "stderr") {
    const int f = open(dest.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (f < 0) {
      Log(absl::StrCat("xsock: log file ", dest, ": ", strerror(errno), "; logging to stderr"));
    } else {
      // Out of the application's way, and stepped around by closefrom()/close_range().
      const int high = sys_.fcntl(f, F_DUPFD_CLOEXEC, 512);
      log_fd_ = high >= 0 ? high : f;
      if (high >= 0) sys_.close(f);
      OwnFds::Add(log_fd_);
    }
  }
  if (policy_->log_level() >= config::LogLevel::kInfo) {
    Log(absl::StrCat("xsock: routing by ", policy_->origin()));
  }
}

void Interceptor::Log(absl::string_view line) {
  if (log_fd_ >= 0) {
    std::string s(line);
    s.push_back('\n');
    // The library's own file: not a hooked call (a routed socket never has this number).
    if (RawSyscall(SYS_write, log_fd_, s.data(), s.size()) >= 0) return;
  }
  if (config_.log) config_.log(line);
}

void Interceptor::LogDecision(const std::string& line) {
  if (policy_->log_level() >= config::LogLevel::kDebug) Log(absl::StrCat("xsock: ", line));
}

void Interceptor::LogUnreachableOnce(absl::string_view why) {
  if (warned_unreachable_.exchange(true)) return;
  Log(absl::StrCat("xsock: ", why, "; routed connections fail with ECONNREFUSED"));
}

// ---- connect -------------------------------------------------------------------------

Result Interceptor::Connect(int fd, const sockaddr* addr, socklen_t len) {
  if (FdRef ref = table_.Find(fd)) return ConnectRouted(*ref.as<FrontSocket>(), fd, addr, len);
  const ConnectVerdict v = policy_->ForConnect(addr, len);
  if ((!v.route && !v.fail) || !IsRoutableSocket(fd, addr)) {
    epoll_.Take(fd);  // decided: the kernel socket stays
    // A bypassed TCP connect is a decision too (the check costs calls: debug only).
    if (!v.route && !v.fail && addr != nullptr &&
        policy_->log_level() >= config::LogLevel::kDebug && IsRoutableSocket(fd, addr)) {
      LogDecision(policy_->ExplainConnect(addr, len));
    }
    return Result::FromLibc(sys_.connect(fd, addr, len));
  }
  LogDecision(policy_->ExplainConnect(addr, len));
  if (v.fail) return Result::Err(ECONNREFUSED);
  return Route(fd, addr, len);
}

Result Interceptor::ConnectRouted(FrontSocket& s, int fd, const sockaddr* addr, socklen_t len) {
  // connect() again on a socket that is already routed: the kernel's answers.
  switch (s.state()) {
    case SocketState::kIdle: {
      // Bound through xsockd, not connected yet: connect from the same host socket.
      if (addr == nullptr) return Result::Err(EFAULT);
      auto dest = proto::FromSockaddr(addr, len);
      if (!dest.ok()) return Result::Err(len < sizeof(sa_family_t) ? EINVAL : EAFNOSUPPORT);
      epoll_.Take(fd);  // no swap left to carry registrations over
      if (const Result r = s.Stuff(fd); !r.ok()) return Result::Err(ECONNREFUSED);
      return ConnectIdle(s, fd, *dest);
    }
    case SocketState::kConnecting: {
      const int fl = sys_.fcntl(fd, F_GETFL);
      if (fl < 0 || (fl & O_NONBLOCK)) return Result::Err(EALREADY);
      const Result done = s.WaitConnected(fd);
      if (done.ok()) s.ExchangeConnectReported();
      return AfterConnectAttempt(s, fd, done);
    }
    case SocketState::kConnected:
      // The kernel answers 0 once (how a nonblocking connect's completion is reported),
      // EISCONN after.
      return s.ExchangeConnectReported() ? Result::Err(EISCONN) : Result::Ok(0);
    case SocketState::kListening:
      return Result::Err(EISCONN);
    case SocketState::kFailed:
    case SocketState::kClosed: {
      const int e = s.TakeSoError();
      return AfterConnectAttempt(s, fd, Result::Err(e != 0 ? e : ECONNABORTED));
    }
  }
  return Result::Err(EINVAL);
}

Result Interceptor::AfterConnectAttempt(FrontSocket& s, int fd, Result r) {
  if (!r.ok() && s.state() == SocketState::kFailed) Disconnect(s, fd);
  return r;
}

// A connect that failed leaves a kernel TCP socket unconnected: it polls OUT|HUP and the
// next connect() starts over (after a nonblocking attempt, once the error has been
// reported by connect()). The routed socket is over for good, so the number goes back
// to a fresh kernel socket with the application's flags and options, and the next
// connect() is decided anew. Only this number changes: duplicates made while routed
// keep the failed socket, and epoll registrations of the channel are not carried.
void Interceptor::Disconnect(FrontSocket& s, int fd) {
  const int fl = sys_.fcntl(fd, F_GETFL);
  const int fdfl = sys_.fcntl(fd, F_GETFD);
  const int nonblock = fl >= 0 && (fl & O_NONBLOCK) ? SOCK_NONBLOCK : 0;
  const int k = sys_.socket(s.domain(), SOCK_STREAM | SOCK_CLOEXEC | nonblock, IPPROTO_TCP);
  if (k < 0) return;  // stays failed: the next connect() gives ECONNABORTED
  struct Option {
    int level, name;
  };
  const bool v6 = s.domain() == AF_INET6;
  const Option kCarried[] = {
      {SOL_SOCKET, SO_REUSEADDR},  {SOL_SOCKET, SO_REUSEPORT},
      {IPPROTO_TCP, TCP_NODELAY},  {SOL_SOCKET, SO_KEEPALIVE},
      {IPPROTO_TCP, TCP_KEEPIDLE}, {IPPROTO_TCP, TCP_KEEPINTVL},
      {IPPROTO_TCP, TCP_KEEPCNT},  {v6 ? IPPROTO_IPV6 : IPPROTO_IP, v6 ? IPV6_TCLASS : IP_TOS},
      {SOL_SOCKET, SO_LINGER},     {SOL_SOCKET, SO_RCVTIMEO},
      {SOL_SOCKET, SO_SNDTIMEO},
  };
  for (const Option& o : kCarried) {
    alignas(8) unsigned char v[32];
    socklen_t n = sizeof(v);
    if (GetSockOpt(s, fd, o.level, o.name, v, &n).ok()) {
      sys_.setsockopt(k, o.level, o.name, v, n);  // best effort, as a replay is
    }
  }
  FdRef old = table_.Remove(fd);
  const int cloexec = fdfl >= 0 && (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0;
  if (sys_.dup3(k, fd, cloexec) < 0) {
    table_.Install(fd, old.get());
    sys_.close(k);
    return;
  }
  sys_.close(k);
  AfterTcpSocket(fd);
  FollowDuplicates(&s, fd, nullptr);
}

void Interceptor::FollowDuplicates(const FrontSocket* old, int fd, FrontSocket* now) {
  std::vector<int> dups;
  table_.ForEachHolding(old, [&](int d) {
    if (d != fd) dups.push_back(d);
  });
  for (const int d : dups) {
    const int fdfl = sys_.fcntl(d, F_GETFD);
    if (sys_.dup3(fd, d, fdfl >= 0 && (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0) < 0) continue;
    if (now != nullptr) {
      table_.Install(d, now);
    } else {
      table_.Remove(d);
      AfterTcpSocket(d);
    }
  }
}

bool Interceptor::IsRoutableSocket(int fd, const sockaddr* addr) {
  if (!FdTable::CanHold(fd)) return false;
  int type = 0, protocol = 0, domain = 0;
  if (GetIntOpt(sys_, fd, SOL_SOCKET, SO_TYPE, &type) != 0 || type != SOCK_STREAM) return false;
  if (GetIntOpt(sys_, fd, SOL_SOCKET, SO_PROTOCOL, &protocol) != 0 || protocol != IPPROTO_TCP) {
    return false;  // SCTP, MPTCP, ... stay with the kernel
  }
  // A family mismatch is the kernel's error to report.
  if (GetIntOpt(sys_, fd, SOL_SOCKET, SO_DOMAIN, &domain) != 0 || domain != addr->sa_family) {
    return false;
  }
  // Listening or connected already (routing was not wanted then): the kernel's EINVAL or
  // EISCONN.
  int listening = 0;
  if (GetIntOpt(sys_, fd, SOL_SOCKET, SO_ACCEPTCONN, &listening) != 0 || listening) return false;
  sockaddr_storage peer;
  socklen_t plen = sizeof(peer);
  return RawSyscall(SYS_getpeername, fd, &peer, &plen) != 0;
}

bool Interceptor::IsBoundByKernel(int fd) {
  sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  if (RawSyscall(SYS_getsockname, fd, &ss, &len) != 0) return false;
  if (ss.ss_family == AF_INET) return reinterpret_cast<const sockaddr_in&>(ss).sin_port != 0;
  if (ss.ss_family == AF_INET6) return reinterpret_cast<const sockaddr_in6&>(ss).sin6_port != 0;
  return false;
}

Result Interceptor::Swap(int fd, const proto::SockAddr& dest, int unreachable, FrontSocket** out,
                         bool* unavailable) {
  const int domain = dest.family;
  auto created = control_.Call(proto::SocketRequest{
      .domain = static_cast<uint32_t>(domain),
      .type = SOCK_STREAM,
      .protocol = IPPROTO_TCP,
      .ring_order = config_.ring_order,
  });
  if (!created.ok()) {
    if (absl::IsUnavailable(created.status())) {
      if (unavailable != nullptr) *unavailable = true;
      LogUnreachableOnce(created.status().message());
    } else {
      Log(absl::StrCat("xsock: socket request for ", proto::ToString(dest),
                       " failed: ", created.status().message()));
    }
    return Result::Err(unreachable);
  }
  const auto& reply = std::get<proto::SocketReply>(created->reply);
  if (reply.err != 0) return Result::Err(reply.err);  // e.g. refused by xsockd's policy
  const int channel = created->fds[0];

  // The application end polls unwritable after one small write (stuffing).
  const int one = 1;
  sys_.setsockopt(channel, SOL_SOCKET, SO_SNDBUF, &one, sizeof(one));
  const int fl = sys_.fcntl(fd, F_GETFL);
  const int fdfl = sys_.fcntl(fd, F_GETFD);
  if (fl >= 0 && (fl & O_NONBLOCK)) {
    const int cfl = sys_.fcntl(channel, F_GETFL);
    sys_.fcntl(channel, F_SETFL, (cfl < 0 ? 0 : cfl) | O_NONBLOCK);
  }
  // Install the memory first, on the channel's own number, so that every failure below
  // leaves `fd` (the kernel socket) untouched.
  if (Result r = InstallStream(channel, created->fds[1], reply.ring_order, reply.socket_id, domain,
                               /*init_locks=*/true, created->generation);
      !r.ok()) {
    Log(absl::StrCat("xsock: xsockd sent an unusable socket for ", proto::ToString(dest)));
    return Result::Err(unreachable);
  }
  FdRef s = table_.Remove(channel);
  const std::vector<proto::SetSockOptRequest> options = OptionsToReplay(fd, *s.as<FrontSocket>());
  const int cloexec = fdfl >= 0 && (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0;
  if (sys_.dup3(channel, fd, cloexec) < 0) {
    const int e = errno;
    sys_.close(channel);
    return Result::Err(e);
  }
  sys_.close(channel);
  table_.Install(fd, s.get());
  for (const auto& req : options) {
    proto::Reply ignored;  // best effort: the kernel socket accepted them once
    Forward(*s.as<FrontSocket>(), fd, req, &ignored);
  }
  *out = s.as<FrontSocket>();
  return Result::Ok(0);
}

Result Interceptor::Route(int fd, const sockaddr* addr, socklen_t len) {
  auto dest = proto::FromSockaddr(addr, len);
  if (!dest.ok()) return Result::Err(EINVAL);
  FrontSocket* s = nullptr;
  bool unavailable = false;
  if (Result r = Swap(fd, *dest, ECONNREFUSED, &s, &unavailable); !r.ok()) {
    // on_unreachable = "fallback": the socket is still the kernel's, untouched.
    if (unavailable && policy_->fallback_when_unreachable()) {
      epoll_.Take(fd);
      return Result::FromLibc(sys_.connect(fd, addr, len));
    }
    return r;
  }
  // Unwritable until xsockd drains the channel when the connect finishes.
  s->Stuff(fd);
  // The swap closed the kernel socket and with it its epoll registrations: carry them
  // over to the channel, now that it polls as a connecting socket does.
  for (auto& [epfd, ev] : epoll_.Take(fd)) sys_.epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
  return ConnectIdle(*s, fd, *dest);
}

Result Interceptor::ConnectIdle(FrontSocket& s, int fd, const proto::SockAddr& dest) {
  auto connected = control_.CallForSocket(proto::ConnectRequest{s.socket_id(), dest}, s.socket_id(),
                                          fd, s.attached_generation());
  if (!connected.ok()) {
    if (absl::IsUnavailable(connected.status())) {
      LogUnreachableOnce(connected.status().message());
    } else {
      Log(absl::StrCat("xsock: connect to ", proto::ToString(dest),
                       " failed: ", connected.status().message()));
    }
    return Result::Err(ECONNREFUSED);
  }
  s.set_attached_generation(connected->generation);
  const int err = ErrOf(connected->reply);
  if (err == 0) {
    s.ExchangeConnectReported();  // this connect() reports the completion
    return Result::Ok(0);
  }
  if (err != EINPROGRESS) {
    s.TakeSoError();  // reported here, as the kernel's blocking connect does
    return AfterConnectAttempt(s, fd, Result::Err(err));
  }
  const int fl = sys_.fcntl(fd, F_GETFL);
  if (fl >= 0 && (fl & O_NONBLOCK)) return Result::Err(EINPROGRESS);
  const Result done = s.WaitConnected(fd);
  if (done.ok()) s.ExchangeConnectReported();
  return AfterConnectAttempt(s, fd, done);
}

Result Interceptor::InstallStream(int fd, int memfd, uint32_t order, uint64_t socket_id, int domain,
                                  bool init_locks, uint64_t generation) {
  void* base = MapSocketMemory(memfd, order);
  sys_.close(memfd);
  int type = 0;
  if (base == nullptr || !FdTable::CanHold(fd) ||
      GetIntOpt(sys_, fd, SOL_SOCKET, SO_TYPE, &type) != 0 || type != SOCK_STREAM ||
      (init_locks && FrontSocket::InitPageLocks(static_cast<SocketPage*>(base)) != 0)) {
    if (base != nullptr) munmap(base, SocketMemfdSize(order));
    sys_.close(fd);
    return Result::Err(ECONNABORTED);
  }
  FrontSocket* s = pool_.Take();
  if (s == nullptr) {
    munmap(base, SocketMemfdSize(order));
    sys_.close(fd);
    return Result::Err(ENOBUFS);
  }
  s->Open(sys_, {base, order, socket_id, domain}, &pool_);
  FdRef owner = FdRef::Adopt(s);
  s->set_attached_generation(generation);
  AfterNewDescriptor(fd);
  epoll_.Take(fd);
  table_.Install(fd, s);
  return Result::Ok(fd);
}

FrontSocket* Interceptor::NewListener(uint64_t socket_id, int domain) {
  // Calls on a listening socket never reach its rings (the hooks answer data calls
  // themselves), but a FrontSocket wants memory: a small anonymous page set to the
  // listening state, shared across fork like a real socket page.
  const size_t size = SocketMemfdSize(kMinRingOrder);
  void* base = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return nullptr;
  auto* page = static_cast<SocketPage*>(base);
  page->magic = kSocketPageMagic;
  page->version = kSocketPageVersion;
  page->ring_order = kMinRingOrder;
  page->socket_id = socket_id;
  page->state.store(static_cast<uint32_t>(SocketState::kListening));
  FrontSocket* s = pool_.Take();
  if (s == nullptr) {
    munmap(base, size);
    return nullptr;
  }
  s->Open(sys_, {base, kMinRingOrder, socket_id, domain}, &pool_);
  return s;
}

// ---- bind, listen, accept --------------------------------------------------------------

Result Interceptor::Bind(int fd, const sockaddr* addr, socklen_t len) {
  FdRef ref = table_.Find(fd);
  const BindVerdict v = ref ? BindVerdict{} : policy_->ForBind(addr, len);
  if (!ref && ((!v.route && !v.fail) || !IsRoutableSocket(fd, addr) || IsBoundByKernel(fd))) {
    if (!v.route && !v.fail && addr != nullptr &&
        policy_->log_level() >= config::LogLevel::kDebug && IsRoutableSocket(fd, addr)) {
      LogDecision(policy_->ExplainBind(addr, len));
    }
    return Result::FromLibc(sys_.bind(fd, addr, len));  // bound already: the kernel's EINVAL
  }
  if (addr == nullptr) return Result::Err(EFAULT);
  if (!ref) LogDecision(policy_->ExplainBind(addr, len));
  if (v.fail) return Result::Err(EACCES);
  // Routed: xsockd binds the host side of the profile's mapping (the same address unless
  // a host_port / host_address says otherwise).
  auto where = v.host_len > 0
                   ? proto::FromSockaddr(reinterpret_cast<const sockaddr*>(&v.host), v.host_len)
                   : proto::FromSockaddr(addr, len);
  if (!where.ok()) return Result::Err(EINVAL);
  FrontSocket* s = ref ? ref.as<FrontSocket>() : nullptr;
  if (s != nullptr && s->state() != SocketState::kIdle) return Result::Err(EINVAL);
  if (s == nullptr) {
    // The kernel's bind would report EADDRNOTAVAIL for an address this host cannot have.
    bool unavailable = false;
    if (Result r = Swap(fd, *where, EADDRNOTAVAIL, &s, &unavailable); !r.ok()) {
      if (unavailable && policy_->fallback_when_unreachable()) {
        return Result::FromLibc(sys_.bind(fd, addr, len));
      }
      return r;
    }
    for (auto& [epfd, ev] : epoll_.Take(fd)) sys_.epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
    epoll_.MarkCandidate(fd);  // listen() swaps once more
  }
  proto::Reply reply;
  return Forward(*s, fd, proto::BindRequest{s->socket_id(), *where}, &reply);
}

Result Interceptor::Listen(FrontSocket& s, int fd, int backlog) {
  switch (s.state()) {
    case SocketState::kListening:
      return Result::Ok(0);  // the backlog stays as it was
    case SocketState::kIdle:
      break;
    default:
      return Result::Err(EINVAL);
  }
  auto r = control_.CallForSocket(proto::ListenRequest{s.socket_id(), backlog}, s.socket_id(), fd,
                                  s.attached_generation());
  if (!r.ok()) {
    if (absl::IsUnavailable(r.status())) LogUnreachableOnce(r.status().message());
    return Result::Err(ENOBUFS);
  }
  if (const int e = ErrOf(r->reply); e != 0) return Result::Err(e);
  const int channel = r->fds[0];
  int type = 0;
  if (GetIntOpt(sys_, channel, SOL_SOCKET, SO_TYPE, &type) != 0 || type != SOCK_SEQPACKET ||
      MakeUnwritable(sys_, channel) != 0) {
    sys_.close(channel);
    Log("xsock: xsockd sent an unusable listener channel");
    return Result::Err(ENOBUFS);
  }
  FrontSocket* listener = NewListener(s.socket_id(), s.domain());
  if (listener == nullptr) {
    sys_.close(channel);
    return Result::Err(ENOBUFS);
  }
  FdRef owner = FdRef::Adopt(listener);
  listener->set_attached_generation(r->generation);
  listener->SetTimeout(true, s.GetTimeout(true));
  listener->SetTimeout(false, s.GetTimeout(false));
  const int fl = sys_.fcntl(fd, F_GETFL);
  const int fdfl = sys_.fcntl(fd, F_GETFD);
  if (fl >= 0 && (fl & O_NONBLOCK)) sys_.fcntl(channel, F_SETFL, O_RDWR | O_NONBLOCK);
  const timeval rcvtimeo = s.GetTimeout(true);
  sys_.setsockopt(channel, SOL_SOCKET, SO_RCVTIMEO, &rcvtimeo, sizeof(rcvtimeo));
  const int cloexec = fdfl >= 0 && (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0;
  if (sys_.dup3(channel, fd, cloexec) < 0) {
    const int e = errno;
    sys_.close(channel);
    return Result::Err(e);
  }
  sys_.close(channel);
  table_.Install(fd, listener);
  for (auto& [epfd, ev] : epoll_.Take(fd)) sys_.epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
  // Remembered from now on too: if xsockd goes away, QuietDeadListener moves them.
  epoll_.MarkCandidate(fd);
  FollowDuplicates(&s, fd, listener);
  return Result::Ok(0);
}

Result Interceptor::Accept(FrontSocket& s, int fd, sockaddr* addr, socklen_t* len, int flags) {
  if (flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC)) return Result::Err(EINVAL);
  if (addr != nullptr && len == nullptr) return Result::Err(EFAULT);
  if (addr != nullptr && static_cast<int>(*len) < 0) return Result::Err(EINVAL);
  if (s.listener_dead()) return AcceptOnDead(fd);
  AcceptedConnection c;
  if (Result r = ReceiveAccepted(sys_, fd, &c); !r.ok()) {
    if (r.error() == ECONNABORTED) Log("xsock: dropped a malformed accepted connection");
    if ((r.error() == EINVAL || r.error() == ECONNRESET) && !s.read_shut()) {
      // End of the channel that this process did not ask for (ECONNRESET: xsockd's end
      // went with the stuffing unread): xsockd is gone.
      QuietDeadListener(s, fd);
      if (s.listener_dead()) return AcceptOnDead(fd);
    }
    return r;
  }
  if (!(flags & SOCK_CLOEXEC)) sys_.fcntl(c.channel, F_SETFD, 0);
  if (flags & SOCK_NONBLOCK) sys_.fcntl(c.channel, F_SETFL, O_RDWR | O_NONBLOCK);
  const int one = 1;  // xsockd sets it too; the stuffing relies on it
  sys_.setsockopt(c.channel, SOL_SOCKET, SO_SNDBUF, &one, sizeof(one));
  const Result r = InstallStream(c.channel, c.memfd, c.record.ring_order, c.record.socket_id,
                                 c.record.local.family != 0 ? c.record.local.family : s.domain(),
                                 /*init_locks=*/true, /*generation=*/0);
  if (!r.ok()) return r;
  if (FdRef ns = table_.Find(c.channel)) {
    FrontSocket& a = *ns.as<FrontSocket>();
    a.ExchangeConnectReported();
    a.page()->app_accepted.store(1, std::memory_order_release);
  }
  if (addr != nullptr) {
    sockaddr_storage ss;
    const socklen_t n = proto::ToSockaddr(c.record.peer, &ss);
    std::memcpy(addr, &ss, n < *len ? n : *len);
    *len = n;
  }
  return r;
}

void Interceptor::QuietDeadListener(FrontSocket& s, int fd) {
  // A listening AF_UNIX socket with an autobound abstract name: it polls nothing, and
  // its accept() blocks (or gives EAGAIN) natively, restarts under SA_RESTART and honours
  // SO_RCVTIMEO. Nothing of the dead channel is carried: it has nothing left to give.
  const int fl = sys_.fcntl(fd, F_GETFL);
  const int fdfl = sys_.fcntl(fd, F_GETFD);
  const int nonblock = fl >= 0 && (fl & O_NONBLOCK) ? SOCK_NONBLOCK : 0;
  const int q = sys_.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | nonblock, 0);
  if (q < 0) return;
  const sa_family_t family = AF_UNIX;
  if (sys_.bind(q, reinterpret_cast<const sockaddr*>(&family), sizeof(family)) != 0 ||
      sys_.listen(q, 1) != 0) {
    sys_.close(q);
    return;
  }
  const timeval rcvtimeo = s.GetTimeout(true);
  sys_.setsockopt(q, SOL_SOCKET, SO_RCVTIMEO, &rcvtimeo, sizeof(rcvtimeo));
  const int cloexec = fdfl >= 0 && (fdfl & FD_CLOEXEC) ? O_CLOEXEC : 0;
  // Registrations go with the number, explicitly: other processes (prefork children)
  // may keep the dead channel open, and epoll drops an entry only when its file goes.
  auto registrations = epoll_.Take(fd);
  for (auto& [epfd, ev] : registrations) sys_.epoll_ctl(epfd, EPOLL_CTL_DEL, fd, nullptr);
  if (sys_.dup3(q, fd, cloexec) < 0) {
    sys_.close(q);
    return;
  }
  sys_.close(q);
  for (auto& [epfd, ev] : registrations) sys_.epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev);
  s.set_listener_dead();
  FollowDuplicates(&s, fd, &s);
  Log(absl::StrCat("xsock: xsockd went away; listening socket ", fd,
                   " accepts no more connections"));
}

Result Interceptor::AcceptOnDead(int fd) {
  for (;;) {
    // Only a local process that found the abstract name connects here: not a client.
    const int c = sys_.accept4(fd, nullptr, nullptr, SOCK_CLOEXEC);
    if (c < 0) return Result::Err(errno);
    sys_.close(c);
  }
}

Result Interceptor::AdoptInherited(int fd) {
  if (table_.Contains(fd)) return Result::Ok(0);
  const int fds[] = {fd};
  auto r = control_.Call(proto::AttachRequest{}, fds);
  if (!r.ok()) {
    Log(absl::StrCat("xsock: cannot adopt inherited socket ", fd, ": ", r.status().message()));
    return Result::Err(ENOTCONN);
  }
  const auto& reply = std::get<proto::AttachReply>(r->reply);
  if (reply.err != 0) return Result::Err(reply.err);
  // The reply does not say the family; the bound address does.
  auto named = control_.CallForSocket(proto::GetSockNameRequest{reply.socket_id}, reply.socket_id,
                                      fd, r->generation);
  int domain = AF_INET;
  if (named.ok() && ErrOf(named->reply) == 0) {
    const uint16_t f = std::get<proto::GetSockNameReply>(named->reply).addr.family;
    if (f == AF_INET6) domain = AF_INET6;
  }
  if (reply.state == static_cast<uint32_t>(SocketState::kListening)) {
    FrontSocket* l = NewListener(reply.socket_id, domain);
    if (l == nullptr) return Result::Err(ENOBUFS);
    FdRef owner = FdRef::Adopt(l);
    l->set_attached_generation(r->generation);
    table_.Install(fd, l);
    return Result::Ok(0);
  }
  // InstallStream closes the descriptor it is given on failure: give it a duplicate.
  const int dup = sys_.fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (dup < 0) {
    const int e = errno;
    for (int f : r->fds) sys_.close(f);
    return Result::Err(e);
  }
  Result installed = InstallStream(dup, r->fds[0], reply.ring_order, reply.socket_id, domain,
                                   /*init_locks=*/false, r->generation);
  if (!installed.ok()) return installed;
  FdRef s = table_.Remove(dup);
  sys_.close(dup);
  table_.Install(fd, s.get());
  return Result::Ok(0);
}

std::vector<proto::SetSockOptRequest> Interceptor::OptionsToReplay(int fd, FrontSocket& s) {
  struct Option {
    int level, name, normal;
  };
  // Options a client commonly sets before connecting, with the value a fresh socket has;
  // only changed ones are sent.
  // SO_REUSEADDR/SO_REUSEPORT first: a bind replays them and they must precede it.
  static constexpr Option kInts[] = {
      {SOL_SOCKET, SO_REUSEADDR, 0},     {SOL_SOCKET, SO_REUSEPORT, 0},
      {IPPROTO_TCP, TCP_NODELAY, 0},     {SOL_SOCKET, SO_KEEPALIVE, 0},
      {IPPROTO_TCP, TCP_KEEPIDLE, 7200}, {IPPROTO_TCP, TCP_KEEPINTVL, 75},
      {IPPROTO_TCP, TCP_KEEPCNT, 9},     {IPPROTO_TCP, TCP_DEFER_ACCEPT, 0},
  };
  std::vector<proto::SetSockOptRequest> changed;
  auto add = [&](int level, int name, const void* v, size_t n) {
    const auto* b = static_cast<const uint8_t*>(v);
    changed.push_back({s.socket_id(), level, name, std::vector<uint8_t>(b, b + n)});
  };
  for (const Option& o : kInts) {
    int v = 0;
    if (GetIntOpt(sys_, fd, o.level, o.name, &v) == 0 && v != o.normal) {
      add(o.level, o.name, &v, sizeof(v));
    }
  }
  int tos = 0;
  const bool v6 = s.domain() == AF_INET6;
  if (int only = 0; v6 && GetIntOpt(sys_, fd, IPPROTO_IPV6, IPV6_V6ONLY, &only) == 0 && only) {
    add(IPPROTO_IPV6, IPV6_V6ONLY, &only, sizeof(only));
  }
  const int tos_level = v6 ? IPPROTO_IPV6 : IPPROTO_IP;
  const int tos_name = v6 ? IPV6_TCLASS : IP_TOS;
  if (GetIntOpt(sys_, fd, tos_level, tos_name, &tos) == 0 && tos != 0) {
    add(tos_level, tos_name, &tos, sizeof(tos));
  }
  linger lg = {};
  socklen_t lglen = sizeof(lg);
  if (sys_.getsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, &lglen) == 0 && lg.l_onoff != 0) {
    add(SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
  }
  // Timeouts govern waits in this process: keep them locally.
  for (const bool receive : {true, false}) {
    timeval tv = {};
    socklen_t tvlen = sizeof(tv);
    if (sys_.getsockopt(fd, SOL_SOCKET, receive ? SO_RCVTIMEO : SO_SNDTIMEO, &tv, &tvlen) == 0) {
      s.SetTimeout(receive, tv);
    }
  }
  return changed;
}

// ---- descriptors ---------------------------------------------------------------------

Result Interceptor::Close(int fd) {
  control_.ForgetIfOurs(fd);
  epoll_.Closing(fd);
  // Forget first: once the number is closed another thread may get it back at once.
  FdRef old = table_.Contains(fd) ? table_.Remove(fd) : FdRef();
  return Result::FromLibc(sys_.close(fd));
}

void Interceptor::AfterDup(int oldfd, int newfd) {
  if (oldfd == newfd) return;
  epoll_.Take(newfd);  // whatever newfd was, it is something else now
  if (FdRef s = table_.Find(oldfd)) {
    table_.Install(newfd, s.get());
  } else if (table_.Contains(newfd)) {
    table_.Remove(newfd);
  }
}

void Interceptor::BeforeReplace(int newfd) { control_.ForgetIfOurs(newfd); }

void Interceptor::BeforeCloseRange(unsigned first, unsigned last, int flags) {
  if (flags & CLOSE_RANGE_CLOEXEC) return;  // nothing is closed now
  if (first > last) return;
  control_.ForgetIfInRange(first, last);
  epoll_.ClosingRange(first, last);
  table_.RemoveRange(first, last);
}

void Interceptor::AfterNewDescriptor(int fd) {
  if (table_.Contains(fd)) table_.Remove(fd);
  control_.ForgetIfOurs(fd);
}

void Interceptor::AfterTcpSocket(int fd) {
  AfterNewDescriptor(fd);
  epoll_.Take(fd);  // a stale candidate of the same number
  if (policy_->may_route()) epoll_.MarkCandidate(fd);
}

void Interceptor::BeforeChroot() {
  if (absl::Status st = control_.Open(); !st.ok()) {
    Log(absl::StrCat("xsock: before chroot: ", st.message(),
                     "; routed sockets will not work inside the chroot"));
  }
}

void Interceptor::AfterForkChild() {
  control_.AfterForkChild();
  pool_.ResetAfterFork();
  epoll_.ResetAfterFork();
}

// ---- forwarded calls -----------------------------------------------------------------

Result Interceptor::Forward(FrontSocket& s, int fd, const proto::Request& req,
                            proto::Reply* reply) {
  auto r = control_.CallForSocket(req, s.socket_id(), fd, s.attached_generation());
  if (!r.ok()) {
    if (absl::IsUnavailable(r.status())) LogUnreachableOnce(r.status().message());
    return Result::Err(ENOTCONN);
  }
  if (ErrOf(r->reply) != 0) return Result::Err(ErrOf(r->reply));
  s.set_attached_generation(r->generation);
  *reply = std::move(r->reply);
  return Result::Ok(0);
}

Result Interceptor::GetSockOpt(FrontSocket& s, int fd, int level, int name, void* value,
                               socklen_t* len) {
  if (len == nullptr || static_cast<int>(*len) < 0) return Result::Err(EFAULT);
  if (level == SOL_SOCKET) {
    int v;
    switch (name) {
      case SO_ERROR:
        v = s.TakeSoError();
        break;
      case SO_TYPE:
        v = SOCK_STREAM;
        break;
      case SO_DOMAIN:
        v = s.domain();
        break;
      case SO_PROTOCOL:
        v = IPPROTO_TCP;
        break;
      case SO_ACCEPTCONN:
        v = s.state() == SocketState::kListening ? 1 : 0;
        break;
      case SO_RCVTIMEO:
      case SO_SNDTIMEO: {
        const timeval tv = s.GetTimeout(name == SO_RCVTIMEO);
        CopyOut(value, len, &tv, sizeof(tv));
        return Result::Ok(0);
      }
      default:
        goto forward;
    }
    CopyOut(value, len, &v, sizeof(v));
    return Result::Ok(0);
  }
forward:
  proto::Reply reply;
  const uint32_t room = *len > proto::kMaxOptLen ? proto::kMaxOptLen : *len;
  const Result r =
      Forward(s, fd, proto::GetSockOptRequest{s.socket_id(), level, name, room}, &reply);
  if (!r.ok()) return r;
  const auto& got = std::get<proto::GetSockOptReply>(reply).value;
  CopyOut(value, len, got.data(), got.size());
  return Result::Ok(0);
}

Result Interceptor::SetSockOpt(FrontSocket& s, int fd, int level, int name, const void* value,
                               socklen_t len) {
  if (value == nullptr && len > 0) return Result::Err(EFAULT);
  if (level == SOL_SOCKET && (name == SO_RCVTIMEO || name == SO_SNDTIMEO)) {
    timeval tv;
    if (len < sizeof(tv)) return Result::Err(EINVAL);
    std::memcpy(&tv, value, sizeof(tv));
    if (tv.tv_usec < 0 || tv.tv_usec >= 1000000) return Result::Err(EDOM);
    s.SetTimeout(name == SO_RCVTIMEO, tv);
    // A listener's accept waits in the kernel, on the channel itself.
    if (s.state() == SocketState::kListening)
      sys_.setsockopt(fd, SOL_SOCKET, name, &tv, sizeof(tv));
    return Result::Ok(0);
  }
  if (len > proto::kMaxOptLen) return Result::Err(EINVAL);
  const auto* b = static_cast<const uint8_t*>(value);
  proto::Reply reply;
  return Forward(
      s, fd, proto::SetSockOptRequest{s.socket_id(), level, name, std::vector<uint8_t>(b, b + len)},
      &reply);
}

Result Interceptor::GetName(FrontSocket& s, int fd, bool peer, sockaddr* addr, socklen_t* len) {
  if (len == nullptr || static_cast<int>(*len) < 0) return Result::Err(EFAULT);
  proto::Reply reply;
  const Result r = peer ? Forward(s, fd, proto::GetPeerNameRequest{s.socket_id()}, &reply)
                        : Forward(s, fd, proto::GetSockNameRequest{s.socket_id()}, &reply);
  if (!r.ok()) return r;
  const proto::SockAddr a = peer ? std::get<proto::GetPeerNameReply>(reply).addr
                                 : std::get<proto::GetSockNameReply>(reply).addr;
  sockaddr_storage ss;
  socklen_t n = proto::ToSockaddr(a, &ss);
  if (!peer) {
    // A bind the profile mapped (guest port 80 served on the host's 8080): the
    // application sees the address it bound, as its own stack would report it.
    if (const std::optional<bool> accepted = MappedKind(s)) {
      if (auto guest = policy_->GuestLocal(reinterpret_cast<const sockaddr*>(&ss), n, *accepted)) {
        n = config::ToSockaddr(*guest, &ss);
      }
    }
  }
  const socklen_t room = *len;
  if (addr != nullptr) std::memcpy(addr, &ss, n < room ? n : room);
  *len = n;  // the kernel reports the full length even when it truncated
  return Result::Ok(0);
}

// Sockets whose local address came from a routed bind: bound or listening (false), or
// accepted from such a listener (true; the shared page says so, also after exec).
// nullopt: a connection this process made, whose ephemeral port a mapping's host range
// may happen to contain.
std::optional<bool> Interceptor::MappedKind(const FrontSocket& s) const {
  const SocketState st = s.state();
  if (st == SocketState::kListening || st == SocketState::kIdle) return false;
  if (s.page() != nullptr && s.page()->app_accepted.load(std::memory_order_acquire) != 0) {
    return true;
  }
  return std::nullopt;
}

Result Interceptor::GetSockName(FrontSocket& s, int fd, sockaddr* addr, socklen_t* len) {
  return GetName(s, fd, /*peer=*/false, addr, len);
}

Result Interceptor::GetPeerName(FrontSocket& s, int fd, sockaddr* addr, socklen_t* len) {
  return GetName(s, fd, /*peer=*/true, addr, len);
}

Result Interceptor::Shutdown(FrontSocket& s, int fd, int how) {
  if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR) return Result::Err(EINVAL);
  proto::Reply reply;
  const Result r =
      Forward(s, fd, proto::ShutdownRequest{s.socket_id(), static_cast<uint32_t>(how)}, &reply);
  if (r.ok()) s.ShutdownLocal(how);
  return r;
}

bool Interceptor::Ioctl(FrontSocket& s, int /*fd*/, unsigned long request, void* arg, Result* out) {
  int v;
  const bool listening = s.state() == SocketState::kListening;
  switch (request) {
    case FIONREAD:
      v = static_cast<int>(s.ReadableBytes());
      break;  // = SIOCINQ
    case SIOCOUTQ:
    case SIOCOUTQNSD:
      v = static_cast<int>(s.UnsentBytes());
      break;
    case SIOCATMARK:
      v = 0;
      break;  // urgent data never reaches the app
    default:
      return false;
  }
  if (listening && request != SIOCATMARK) {
    *out = Result::Err(EINVAL);  // tcp_ioctl() on a listening socket
    return true;
  }
  if (arg == nullptr) {
    *out = Result::Err(EFAULT);
    return true;
  }
  std::memcpy(arg, &v, sizeof(v));
  *out = Result::Ok(0);
  return true;
}

}  // namespace xsock::intercept
