#include "backend/backend_socket.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

#include "backend/errors.h"
#include "backend/host_stack.h"
#include "backend/log.h"
#include "backend/sockopt_policy.h"
#include "backend/unix_diag.h"

namespace xsock::backend {
namespace {

constexpr uint32_t kChannelEvents = EPOLLIN | EPOLLRDHUP | EPOLLET;
constexpr uint32_t kHostEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
// A drain reads at most this many chunks per pass, so one app that keeps writing to its
// channel cannot hold the loop; the rest is drained on the next pass (held() covers it).
constexpr int kMaxDrainChunks = 256;

// The host side of every routed socket goes through the installed stack (host_stack.h).
HostStack& Stack() { return CurrentHostStack(); }

msghdr IovMessage(ring::Regions& r) {
  msghdr msg = {};
  msg.msg_iov = r.iov;
  msg.msg_iovlen = static_cast<size_t>(r.count);
  return msg;
}

}  // namespace

const char* SocketStateName(SocketState s) {
  switch (s) {
    case SocketState::kIdle:
      return "idle";
    case SocketState::kConnecting:
      return "connecting";
    case SocketState::kConnected:
      return "connected";
    case SocketState::kFailed:
      return "failed";
    case SocketState::kClosed:
      return "closed";
    case SocketState::kListening:
      return "listening";
  }
  return "unknown";
}

absl::StatusOr<std::unique_ptr<BackendSocket>> BackendSocket::Create(const SocketParams& params,
                                                                     SocketEnv env,
                                                                     UniqueFd* app_end) {
  // The host socket exists from the start, so that options the app sets (and the library
  // replays) before bind, connect or listen all land on the socket those calls then use.
  const int fd = Stack().Socket(params.domain);
  if (fd < 0) return ErrnoError(-fd, "socket");
  UniqueFd host(fd);
  return CreateWith(params, env, std::move(host), app_end);
}

absl::StatusOr<std::unique_ptr<BackendSocket>> BackendSocket::CreateAccepted(
    const SocketParams& params, SocketEnv env, UniqueFd host, UniqueFd* app_end) {
  UniqueFd app;
  auto sock = CreateWith(params, env, std::move(host), &app);
  if (!sock.ok()) return sock.status();
  // What the library does for a socket it creates (docs/channel.md): the smallest send
  // queue, so that stuffing makes the descriptor unwritable. The app gets this end only
  // through the record, so xsockd sets it here.
  const int one = 1;
  if (setsockopt(app.get(), SOL_SOCKET, SO_SNDBUF, &one, sizeof(one)) != 0) {
    return ErrnoError(errno, "SO_SNDBUF on accepted channel");
  }
  (*sock)->StartAccepted();
  *app_end = std::move(app);
  return sock;
}

absl::StatusOr<std::unique_ptr<BackendSocket>> BackendSocket::CreateWith(const SocketParams& params,
                                                                         SocketEnv env,
                                                                         UniqueFd host,
                                                                         UniqueFd* app_end) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
    return ErrnoError(errno, "socketpair");
  }
  UniqueFd ours(pair[0]);
  UniqueFd app(pair[1]);
  const int flags = fcntl(ours.get(), F_GETFL);
  if (flags < 0 || fcntl(ours.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return ErrnoError(errno, "fcntl O_NONBLOCK on channel");
  }
  // attach recognises the app's end by this identity, whichever process passes it back.
  struct stat st;
  if (fstat(app.get(), &st) != 0) return ErrnoError(errno, "fstat channel");

  auto mem = SocketMemory::Create(params.id, params.ring_order);
  if (!mem.ok()) return mem.status();

  std::unique_ptr<BackendSocket> sock(new BackendSocket(
      params, env, std::move(*mem), std::move(ours), std::move(host), st.st_dev, st.st_ino));
  if (auto s =
          env.loop->Add(sock->channel_.get(), kChannelEvents, Token{Source::kChannel, params.id});
      !s.ok()) {
    return s;
  }
  *app_end = std::move(app);
  return sock;
}

BackendSocket::BackendSocket(const SocketParams& params, SocketEnv env, SocketMemory mem,
                             UniqueFd channel, UniqueFd host, dev_t app_dev, ino_t app_ino)
    : params_(params),
      env_(env),
      mem_(std::move(mem)),
      channel_(std::move(channel)),
      host_(std::move(host)),
      app_dev_(app_dev),
      app_ino_(app_ino),
      in_(InRing(mem_->base(), params.ring_order)),
      out_(OutRing(mem_->base(), params.ring_order)) {}

BackendSocket::~BackendSocket() {
  listener_.reset();  // unregisters the listener channel and the host listener
  if (channel_.valid()) env_.loop->Remove(channel_.get());
  StopWatchingHost();
}

std::string BackendSocket::Who() const {
  return fmt::format("socket={} client={} pid={} uid={} exe={}", params_.id, params_.client_id,
                     params_.client_pid, params_.client_uid,
                     Quoted(params_.client_exe.empty() ? "?" : params_.client_exe));
}

BackendSocket::RingFill BackendSocket::Fill() const {
  RingFill f;
  if (!mem_ || rings_corrupt_) return f;
  f.present = true;
  f.size = in_.size();
  // Reserve/Peek are const views: a corrupt index is reported, and left to the pass to act on.
  const ring::Regions in = in_.Reserve();
  const ring::Regions out = out_.Peek();
  f.corrupt = in.corrupt || out.corrupt;
  if (!in.corrupt) f.in = in_.size() - in.bytes;
  if (!out.corrupt) f.out = out.bytes;
  return f;
}

void BackendSocket::SetState(SocketState state) {
  state_ = state;
  if (!mem_) return;  // a listener has no page
  // Release: so_error and the error words stored before are visible to an app that sees
  // the new state.
  page()->state.store(static_cast<uint32_t>(state), std::memory_order_release);
}

// ---- Control requests ----

int BackendSocket::Connect(const proto::SockAddr& addr) {
  switch (state_) {
    case SocketState::kIdle:
      break;
    case SocketState::kConnecting:
      return EALREADY;
    case SocketState::kConnected:
      return EISCONN;
    // The channel of a failed or closed socket is shut down for good; unlike a kernel
    // socket it cannot be connected again.
    case SocketState::kFailed:
    case SocketState::kClosed:
      return ECONNABORTED;
    case SocketState::kListening:
      return EISCONN;
  }
  if (!host_.valid() || app_gone_) return EBADF;
  // The host socket is the one bind() used, if any: the bound source address is kept.
  dest_ = addr;
  sockaddr_storage ss;
  const socklen_t len = proto::ToSockaddr(addr, &ss);
  int err = Stack().Connect(host_.get(), reinterpret_cast<const sockaddr*>(&ss), len);
  if (err == EINTR) err = EINPROGRESS;  // the connect goes on asynchronously
  if (err != 0 && err != EINPROGRESS) {
    env_.stats->connects_failed++;
    Log(LogLevel::kInfo, "event=connect_failed {} dst={} errno={}", Who(), proto::ToString(addr),
        ErrnoName(err));
    // Nothing changed on the host socket, so the socket stays idle and may be connected
    // again; only the stuffing the library queued before the request is drained, which
    // gives the descriptor back its writability.
    DrainChannel();
    return err;
  }
  if (auto s = env_.loop->Add(host_.get(), kHostEvents, Token{Source::kHost, params_.id});
      !s.ok()) {
    Log(LogLevel::kWarn, "event=connect_failed {} dst={} error={}", Who(), proto::ToString(addr),
        Quoted(std::string(s.message())));
    ConnectFailed(ErrnoOf(s, ENOMEM));
    Pass();
    return EINPROGRESS;
  }
  host_watched_ = true;
  if (err == 0) {
    // Connected() drains the stuffing before the reply: connect() must return a writable
    // descriptor, and the channel's own event may still be queued behind this request.
    Connected();
    Pass();
    return 0;
  }
  SetState(SocketState::kConnecting);
  Log(LogLevel::kDebug, "event=connect_started {} dst={}", Who(), proto::ToString(addr));
  return EINPROGRESS;
}

int BackendSocket::Shutdown(int how) {
  const bool rd = how == SHUT_RD || how == SHUT_RDWR;
  const bool wr = how == SHUT_WR || how == SHUT_RDWR;
  if (state_ == SocketState::kListening) {
    // As the kernel: SHUT_WR alone does nothing to a listener; SHUT_RD stops it (the host
    // listener's queued connections are reset) and accept() then finds no more records.
    if (rd && host_.valid()) {
      Stack().Shutdown(host_.get(), SHUT_RD);
      listener_->StopAccepting();
    }
    return 0;
  }
  if (state_ != SocketState::kConnected) return ENOTCONN;
  Log(LogLevel::kDebug, "event=shutdown {} how={}", Who(), how);
  if (rd && !host_rd_shut_) {
    // Passed on even after EOF from the host: the host socket's own state follows the app's.
    Stack().Shutdown(host_.get(), SHUT_RD);
    host_rd_shut_ = true;
  }
  if (rd && !in_done_) FinishIn(kRingEof);
  if (wr && !host_wr_shut_) shut_wr_pending_ = true;
  Pass();
  return 0;
}

namespace {
// getsockname() or getpeername() of a host socket, as a wire address.
int HostName(int fd, bool peer, proto::SockAddr* addr) {
  sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  auto* sa = reinterpret_cast<sockaddr*>(&ss);
  if (const int err = peer ? Stack().GetPeerName(fd, sa, &len) : Stack().GetSockName(fd, sa, &len);
      err != 0) {
    return err;
  }
  auto a = proto::FromSockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
  if (!a.ok()) return EAFNOSUPPORT;
  *addr = *a;
  return 0;
}
}  // namespace

int BackendSocket::Bind(const proto::SockAddr& addr, proto::SockAddr* bound) {
  // Only an idle socket still has its stream channel and rings to become a listener with;
  // the kernel itself refuses a second bind and a bind after connect (EINVAL).
  if (state_ != SocketState::kIdle || !host_.valid() || app_gone_) return EINVAL;
  sockaddr_storage ss;
  const socklen_t len = proto::ToSockaddr(addr, &ss);
  if (const int err = Stack().Bind(host_.get(), reinterpret_cast<const sockaddr*>(&ss), len);
      err != 0) {
    Log(LogLevel::kInfo, "event=bind_failed {} addr={} errno={}", Who(), proto::ToString(addr),
        ErrnoName(err));
    return err;
  }
  const int err = HostName(host_.get(), false, bound);
  Log(LogLevel::kInfo, "event=bind {} addr={} bound={}", Who(), proto::ToString(addr),
      err == 0 ? proto::ToString(*bound) : ErrnoName(err));
  return err;
}

int BackendSocket::Listen(int backlog, UniqueFd* app_end) {
  if (state_ != SocketState::kIdle || !host_.valid() || app_gone_) return EINVAL;
  if (env_.factory == nullptr) return EOPNOTSUPP;
  // An unbound socket is autobound by the kernel's listen(), as a kernel socket would be.
  if (const int err = Stack().Listen(host_.get(), backlog); err != 0) {
    Log(LogLevel::kInfo, "event=listen_failed {} backlog={} errno={}", Who(), backlog,
        ErrnoName(err));
    return err;
  }
  UniqueFd app;
  auto l = HostListener::Create(this, host_.get(), backlog, env_.loop, env_.factory, &app);
  if (!l.ok()) {
    // The host socket listens and cannot be made to stop: close it; the socket is dead.
    Log(LogLevel::kWarn, "event=listen_failed {} error={}", Who(),
        Quoted(std::string(l.status().message())));
    host_.reset();
    SetState(SocketState::kClosed);
    return ErrnoOf(l.status(), ENOMEM);
  }
  listener_ = std::move(*l);
  // The stream channel and the memory go: a HUP of the old channel (the library closes it
  // when it puts the listener channel over the descriptor) must mean nothing from now on.
  SetState(SocketState::kListening);
  env_.loop->Remove(channel_.get());
  channel_.reset();
  mem_.reset();
  channel_dirty_ = false;
  proto::SockAddr local;
  const int named = HostName(host_.get(), false, &local);
  Log(LogLevel::kInfo, "event=listen {} addr={} backlog={} queued_max={}", Who(),
      named == 0 ? proto::ToString(local) : ErrnoName(named), backlog, QueuedAcceptsFor(backlog));
  *app_end = std::move(app);
  return 0;
}

int BackendSocket::GetSockName(proto::SockAddr* addr) const {
  if (!host_.valid()) return ENOTCONN;
  return HostName(host_.get(), false, addr);
}

int BackendSocket::GetPeerName(proto::SockAddr* addr) const {
  if (!host_.valid()) return ENOTCONN;
  return HostName(host_.get(), true, addr);
}

int BackendSocket::SetSockOpt(int level, int optname, std::span<const uint8_t> value) {
  if (int err = CheckSetSockOpt(level, optname, value); err != 0) return err;
  if (!host_.valid()) return EINVAL;
  if (level == SOL_SOCKET && optname == SO_LINGER) {
    struct linger l;
    if (value.size() < sizeof(l)) return EINVAL;
    std::memcpy(&l, value.data(), sizeof(l));
    // close() with a positive linger time blocks even on a nonblocking socket, which would
    // stall the event loop: such a linger is recorded (getsockopt reports it) and carried
    // out by xsockd itself when the app closes (MaybeFinish: `out` is flushed for at most
    // l_linger seconds, then the host peer is reset). Linger 0 (abortive close: RST, unsent
    // bytes dropped) is applied to the host socket as is, and the close skips the flush.
    struct linger applied = l;
    if (l.l_onoff != 0 && l.l_linger > 0) applied = {0, 0};
    if (const int err = Stack().SetSockOpt(host_.get(), level, optname, &applied, sizeof(applied));
        err != 0) {
      return err;
    }
    // As the kernel: turning lingering off keeps the time set before (getsockopt shows it).
    linger_.l_onoff = l.l_onoff;
    if (l.l_onoff != 0) linger_.l_linger = l.l_linger;
    linger_recorded_ = true;
    return 0;
  }
  if (const int err = Stack().SetSockOpt(host_.get(), level, optname, value.data(),
                                         static_cast<socklen_t>(value.size()));
      err != 0) {
    return err;
  }
  if (level == SOL_SOCKET && optname == SO_RCVLOWAT) {
    // xsockd must keep pulling whatever arrives (the library applies the mark to what `in`
    // holds), so the host socket keeps the default; the value the kernel made of the
    // app's (capped, 0 -> 1) is read back first and reported by getsockopt.
    int lowat = 1;
    socklen_t len = sizeof(lowat);
    if (Stack().GetSockOpt(host_.get(), level, optname, &lowat, &len) == 0) rcvlowat_ = lowat;
    const int one = 1;
    Stack().SetSockOpt(host_.get(), level, optname, &one, sizeof(one));
  }
  return 0;
}

int BackendSocket::GetSockOpt(int level, int optname, uint32_t optlen,
                              std::vector<uint8_t>* value) const {
  if (ClassifySockOpt(level, optname) == OptAccess::kDenied) return ENOPROTOOPT;
  if (!host_.valid()) return EINVAL;
  if (level == SOL_SOCKET && optname == SO_LINGER && linger_recorded_) {
    value->assign(
        reinterpret_cast<const uint8_t*>(&linger_),
        reinterpret_cast<const uint8_t*>(&linger_) + std::min<size_t>(optlen, sizeof(linger_)));
    return 0;
  }
  if (level == SOL_SOCKET && optname == SO_RCVLOWAT && rcvlowat_) {
    value->assign(reinterpret_cast<const uint8_t*>(&*rcvlowat_),
                  reinterpret_cast<const uint8_t*>(&*rcvlowat_) +
                      std::min<size_t>(optlen, sizeof(*rcvlowat_)));
    return 0;
  }
  uint8_t buf[proto::kMaxOptLen];
  socklen_t len = optlen;
  if (const int err = Stack().GetSockOpt(host_.get(), level, optname, buf, &len); err != 0) {
    return err;
  }
  value->assign(buf, buf + std::min<size_t>(len, optlen));
  return 0;
}

// ---- Events ----

void BackendSocket::OnChannelEvent(uint32_t events) {
  if (finished_) return;
  if (listener_) {
    listener_->OnChannelEvent(events);
    MaybeFinish();
    return;
  }
  channel_dirty_ = true;
  if (channel_shut_) {
    // Our own shutdown raised HUP for good; the release of the app's end still wakes us
    // (edge-triggered: every wake is an event), and sock_diag tells whether it happened.
    if (AppEndReleased()) app_gone_ = true;
  } else if (events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)) {
    // The app's last reference is gone (HUP), or the app shut its end so that it can never
    // wake us again (RDHUP): either way nobody drives this socket any more.
    app_gone_ = true;
  }
  RecheckToken();
  Pass();
}

void BackendSocket::OnHostEvent(uint32_t events) {
  if (finished_ || !host_.valid()) return;
  if (listener_) {
    listener_->OnHostEvent(events);
    MaybeFinish();
    return;
  }
  if (state_ == SocketState::kConnecting) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return;
    int err = 0;
    socklen_t len = sizeof(err);
    if (const int e = Stack().GetSockOpt(host_.get(), SOL_SOCKET, SO_ERROR, &err, &len); e != 0) {
      err = e;
    }
    if (err == 0 && (events & EPOLLERR)) err = ECONNABORTED;
    if (err == 0) {
      Connected();
    } else if (err == ECONNRESET || err == EPIPE) {
      // Established, then reset before we looked: the kernel's connect() succeeds and the
      // reset is for the reads and writes that follow.
      Connected();
      HostError(err, "connect");
    } else {
      ConnectFailed(err);
    }
  } else {
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) host_readable_ = true;
    if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) host_writable_ = true;
    // After the host's FIN nothing reads the host socket any more, so a later reset would
    // go unnoticed and the app's writes would vanish: look at the error now.
    if (in_done_ && (events & (EPOLLERR | EPOLLHUP))) CheckErrorAfterEof(events);
  }
  Pass();
}

void BackendSocket::CheckErrorAfterEof(uint32_t events) {
  if (out_dead_ || state_ != SocketState::kConnected || !host_.valid()) return;
  int err = 0;
  socklen_t len = sizeof(err);
  if (const int e = Stack().GetSockOpt(host_.get(), SOL_SOCKET, SO_ERROR, &err, &len); e != 0) {
    err = e;
  }
  // HUP after our own SHUT_WR is the ordinary end of both directions; without it (or with
  // ERR) the connection was reset. The kernel reports EPIPE for a reset in CLOSE_WAIT.
  if (err == 0 && ((events & EPOLLERR) || !host_wr_shut_)) err = EPIPE;
  if (err != 0) HostError(err, "after_eof");
}

bool BackendSocket::CheckHangUp() {
  if (finished_) return false;
  if (listener_) {
    if (!listener_->CheckHangUp()) return false;
    MaybeFinish();
    return true;
  }
  if (!channel_.valid() || app_gone_) return false;
  if (channel_shut_) {
    if (!AppEndReleased()) return false;
    OnChannelEvent(EPOLLHUP);
    return true;
  }
  pollfd p = {channel_.get(), POLLRDHUP, 0};
  if (poll(&p, 1, 0) != 1 || !(p.revents & (POLLHUP | POLLRDHUP | POLLERR))) return false;
  OnChannelEvent(EPOLLHUP);
  return true;
}

bool BackendSocket::OnPollTick() {
  if (listener_) {
    const bool moved = listener_->OnPollTick();
    MaybeFinish();
    return moved;
  }
  const uint64_t before = progress_;
  if (diag_retry_ && channel_shut_ && !app_gone_ && AppEndReleased()) app_gone_ = true;
  RecheckToken();
  Pass();
  return progress_ != before;
}

bool BackendSocket::held() const {
  if (finished_) return false;
  if (listener_) return listener_->held();
  // Lingering: the deadline is checked on the poll tick.
  if (linger_deadline_) return true;
  if (diag_retry_ && !app_gone_) return true;
  return !app_gone_ && state_ == SocketState::kConnected && channel_dirty_;
}

void BackendSocket::StartAccepted() {
  accepted_ = true;
  SetState(SocketState::kConnected);
  dest_ = proto::SockAddr{};
  (void)HostName(host_.get(), true, &dest_);
  if (auto s = env_.loop->Add(host_.get(), kHostEvents, Token{Source::kHost, params_.id});
      !s.ok()) {
    HostError(ErrnoOf(s, ENOMEM), "epoll_ctl");
    return;
  }
  host_watched_ = true;
  // Edge-triggered: whatever the peer sent before this registration raised no edge.
  host_readable_ = true;
  host_writable_ = true;
  Pass();
}

// ---- Connection state ----

void BackendSocket::Connected() {
  SetState(SocketState::kConnected);
  // The stuffing goes at once: an app that sees the new state (the library polls it while
  // connecting) must find the descriptor writable, so nothing else comes in between.
  channel_dirty_ = true;
  MaybeDrainChannel();
  // Readiness edges that came while connecting were consumed by the completion event.
  host_readable_ = true;
  host_writable_ = true;
  env_.stats->connects_ok++;
  Log(LogLevel::kInfo, "event=connect_ok {} dst={}", Who(), proto::ToString(dest_));
}

void BackendSocket::ConnectFailed(int err) {
  env_.stats->connects_failed++;
  Log(LogLevel::kInfo, "event=connect_failed {} dst={} errno={}", Who(), proto::ToString(dest_),
      ErrnoName(err));
  StopWatchingHost();
  page()->so_error.store(err, std::memory_order_relaxed);
  FailOut(-err);
  SetState(SocketState::kFailed);  // before the token that makes the app look
  FinishIn(-err);
}

void BackendSocket::HostEof() {
  host_eof_ = true;
  host_readable_ = false;
  Log(LogLevel::kInfo, "event=eof {} dst={} from_host={}", Who(), proto::ToString(dest_),
      bytes_from_host_);
  if (host_wr_shut_) SetState(SocketState::kClosed);
  FinishIn(kRingEof);
}

void BackendSocket::HostError(int err, const char* during) {
  Log(LogLevel::kInfo, "event=reset {} dst={} during={} errno={}", Who(), proto::ToString(dest_),
      during, ErrnoName(err));
  StopWatchingHost();
  host_readable_ = false;
  host_writable_ = false;
  page()->so_error.store(err, std::memory_order_relaxed);
  FailOut(-err);
  SetState(SocketState::kClosed);
  FinishIn(-err);
}

void BackendSocket::ResetCorrupt(const char* ring) {
  if (rings_corrupt_) return;
  rings_corrupt_ = true;
  Log(LogLevel::kWarn, "event=ring_corrupt {} ring={} action=reset", Who(), ring);
  if (host_.valid()) {
    // Linger 0: close() sends RST, so the peer learns that the stream is broken.
    const struct linger abort = {1, 0};
    Stack().SetSockOpt(host_.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof(abort));
    StopWatchingHost();
    host_.reset();
  }
  host_readable_ = false;
  host_writable_ = false;
  page()->so_error.store(ECONNRESET, std::memory_order_relaxed);
  FailOut(-ECONNRESET);
  SetState(SocketState::kClosed);
  FinishIn(-ECONNRESET);
}

void BackendSocket::StopWatchingHost() {
  if (host_watched_ && host_.valid()) env_.loop->Remove(host_.get());
  host_watched_ = false;
}

void BackendSocket::CloseHost() {
  StopWatchingHost();
  host_.reset();  // graceful: queued bytes are still sent, then FIN
}

// ---- The wake-up protocol ----

std::optional<uint32_t> BackendSocket::InFill() {
  const ring::Regions r = in_.Reserve();
  if (r.corrupt) {
    ResetCorrupt("in");
    return std::nullopt;
  }
  return in_.size() - r.bytes;
}

std::optional<uint32_t> BackendSocket::OutFill() {
  const ring::Regions r = out_.Peek();
  if (r.corrupt) {
    ResetCorrupt("out");
    return std::nullopt;
  }
  return r.bytes;
}

namespace {
// Fault injection for tests only (XSOCKD_TEST_TOKEN_DELAY_US): widens the window between
// looking at `in` and raising in_token, where an app's read can empty the ring, so the
// stray-token race the next function guards against shows up on every run.
unsigned g_token_race_delay_us = 0;
}  // namespace

void SetTokenRaceDelayForTesting(unsigned microseconds) { g_token_race_delay_us = microseconds; }

void BackendSocket::InjectTokenRaceDelay() {
  if (g_token_race_delay_us != 0) usleep(g_token_race_delay_us);
}

void BackendSocket::SignalIn() {
  if (channel_wr_shut_) return;
  if (page()->in_token.exchange(1) != 0) return;
  // The app may have taken every byte between our publish and our exchange (its settle
  // then saw in_token 0 and expects no token). A token now would be stray: its
  // descriptor would poll readable with nothing to read, and a nonblocking read after
  // poll would fail EAGAIN, which some programs (sshd's packet layer) treat as fatal.
  // So take the token back if the ring is empty; if the app has meanwhile exchanged
  // in_token to 0, it is waiting for the byte and gets it. End of stream and errors
  // always keep their token.
  if (!in_done_) {
    const auto fill = InFill();
    if (!fill) return;
    uint32_t armed = 1;
    if (*fill == 0 && page()->in_token.compare_exchange_strong(armed, 0)) return;
  }
  // The app's receive queue only ever holds this one byte; if a hostile app clears
  // in_token without reading, EAGAIN here only costs that app its own wake-ups.
  const char token = kTokenByte;
  send(channel_.get(), &token, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
  ++progress_;
}

void BackendSocket::RecheckToken() {
  if (state_ != SocketState::kConnected || rings_corrupt_ || channel_wr_shut_) return;
  const auto fill = InFill();
  if (fill && *fill > 0) {
    InjectTokenRaceDelay();
    SignalIn();
  }
}

void BackendSocket::FinishIn(int32_t error) {
  if (in_done_) return;
  in_done_ = true;
  // If `out` is over too, the socket is finished both ways. Decided (sock_diag lookup)
  // before anything is published, so that the token, the shutdown and the drain follow
  // each other at once: the app should see IN, HUP and OUT together, as on TCP.
  const bool both = !channel_wr_shut_ && OutOver() && CanShutChannel();
  in_.SetError(error);  // after the last data byte (release)
  SignalIn();
  // The stuffing goes right before the shutdown: an app woken by the token or by the
  // drain should find the descriptor writable and finished at once, as TCP shows it. The
  // two steps cannot be one; the gap is kept to one recv (a short read: queue empty).
  if (both && channel_dirty_ && state_ != SocketState::kIdle &&
      state_ != SocketState::kConnecting) {
    thread_local char buf[64 << 10];
    for (int i = 0; i < 16; ++i) {
      const ssize_t n = recv(channel_.get(), buf, sizeof(buf), MSG_DONTWAIT);
      if (n < static_cast<ssize_t>(sizeof(buf)) && !(n < 0 && errno == EINTR)) break;
    }
    // Whatever is left (or came since) is drained by the pass that follows.
  }
  if (!channel_wr_shut_) {
    // From now on the app end reads EOF after the token: readable for good.
    ::shutdown(channel_.get(), both ? SHUT_RDWR : SHUT_WR);
    channel_wr_shut_ = true;
    if (both) {
      channel_shut_ = true;
      Log(LogLevel::kDebug, "event=channel_shut {}", Who());
    }
  }
}

void BackendSocket::FailOut(int32_t error) {
  if (!out_dead_) page()->out_error.value.store(error, std::memory_order_release);
  out_dead_ = true;
  DiscardOut();
}

void BackendSocket::DiscardOut() {
  if (rings_corrupt_) return;
  // Bytes that can no longer reach the host are consumed so that `out` never stays full
  // and the app end becomes writable (its writes then fail with out_error).
  const auto fill = OutFill();
  if (fill && *fill > 0) out_.Release(*fill);
}

// ---- Pumps ----

void BackendSocket::Pass() {
  // A few rounds at most. Another round follows
  //  - a drain: while the channel was full, a wake byte the app sent may have failed
  //    (EAGAIN) and been lost, so the rings are looked at again once there is room;
  //  - the discovery that the app is gone: host input switches from `in` to discarding.
  if (listener_) return;
  for (int round = 0; round < 3 && !finished_; ++round) {
    const bool gone = app_gone_;
    NoteUnreadOnClose();
    // An abortive close (SO_LINGER {1, 0}, or unread data) moves nothing more: MaybeFinish
    // resets.
    const bool aborting = app_gone_ && (AbortiveClose() || NeverAccepted() || unread_on_close_);
    if (state_ == SocketState::kConnected && !rings_corrupt_ && !aborting) {
      if (app_gone_) {
        DiscardHostInput();
      } else {
        PumpIn();
      }
      if (state_ == SocketState::kConnected && !rings_corrupt_) PumpOut();
      if (state_ == SocketState::kConnected && !rings_corrupt_) MaybeShutdownHostWrite();
    }
    // Bytes in `out` that can never be sent (after an error, or written after SHUT_WR) are
    // consumed, so `out` never stays full and the app end never stays unwritable.
    if (out_dead_ || host_wr_shut_) DiscardOut();
    // `out` ended last (the app's SHUT_WR carried out): shut our end now. (`in` ending last
    // is handled inside FinishIn, where the stuffing goes first.)
    MaybeShutChannel();
    const bool drained = MaybeDrainChannel();
    MaybeFinish();
    if (drained) {
      RecheckToken();
      continue;
    }
    if (app_gone_ == gone) break;
  }
}

namespace {
// Arms a "wake me" flag, then looks at the ring again, so that an index change that raced
// with the arming is not missed (libxenvchan's rule). The seq_cst fence pairs with the
// app's fence between its index store and its exchange of the flag. The flag is disarmed
// again when the second look finds work.
template <class Look>
ring::Regions ArmThenLook(std::atomic<uint32_t>& flag, Look look) {
  flag.store(1, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  ring::Regions r = look();
  if (!r.corrupt && r.bytes != 0) flag.store(0, std::memory_order_relaxed);
  return r;
}
}  // namespace

void BackendSocket::PumpIn() {
  bool published = false;
  while (host_readable_ && !in_done_) {
    ring::Regions r = in_.Reserve();
    if (r.corrupt) {
      ResetCorrupt("in");
      return;
    }
    if (r.bytes == 0) {
      // Sleep until the app makes room (it releases in_cons, then exchanges the flag).
      r = ArmThenLook(page()->in_room_wanted, [this] { return in_.Reserve(); });
      if (r.corrupt) {
        ResetCorrupt("in");
        return;
      }
      if (r.bytes == 0) break;
    }
    msghdr msg = IovMessage(r);
    const ssize_t n = recvmsg(host_.get(), &msg, MSG_DONTWAIT);
    if (n > 0) {
      in_.Commit(static_cast<uint32_t>(n));
      env_.stats->bytes_from_host += static_cast<uint64_t>(n);
      bytes_from_host_ += static_cast<uint64_t>(n);
      ++progress_;
      published = true;
      continue;
    }
    if (n == 0) {
      // A stack that learns of resets out of band (the Xen front) reports them here.
      if (const int err = Stack().EofError(host_.get()); err != 0) {
        HostError(err, "recv");
      } else {
        HostEof();  // in_error after the data just committed, then the token
      }
      return;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      host_readable_ = false;
      break;
    }
    HostError(errno, "recv");
    return;
  }
  if (published) {
    InjectTokenRaceDelay();
    SignalIn();
  }
}

void BackendSocket::PumpOut() {
  while (host_writable_ && !out_dead_ && !host_wr_shut_) {
    ring::Regions r = out_.Peek();
    if (r.corrupt) {
      ResetCorrupt("out");
      return;
    }
    if (r.bytes == 0) {
      if (app_gone_ || shut_wr_pending_) break;  // nothing more will come
      // Sleep until the app publishes (it stores out_prod, then exchanges the flag).
      r = ArmThenLook(page()->out_data_wanted, [this] { return out_.Peek(); });
      if (r.corrupt) {
        ResetCorrupt("out");
        return;
      }
      if (r.bytes == 0) break;
    }
    msghdr msg = IovMessage(r);
    const ssize_t n = sendmsg(host_.get(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      out_.Release(static_cast<uint32_t>(n));
      env_.stats->bytes_to_host += static_cast<uint64_t>(n);
      bytes_to_host_ += static_cast<uint64_t>(n);
      ++progress_;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {
      host_writable_ = false;
      break;
    }
    const int err = n < 0 ? errno : EIO;
    Log(LogLevel::kInfo, "event=send_failed {} dst={} errno={}", Who(), proto::ToString(dest_),
        ErrnoName(err));
    if (in_done_) {
      // Nothing reads the host socket any more (EOF came first): report the error here.
      HostError(err, "send");
      return;
    }
    FailOut(-err);
    // A reset also fails the next read; make sure it is looked at.
    host_readable_ = true;
    break;
  }
}

void BackendSocket::DiscardHostInput() {
  // With the app gone nobody will read `in`. Consuming the host's bytes (MSG_TRUNC copies
  // nothing) keeps the peer from blocking while `out` is flushed, and lets the final
  // close() send FIN instead of the RST a non-empty receive queue would cause.
  while (host_readable_ && !host_eof_) {
    const ssize_t n = recv(host_.get(), nullptr, size_t{1} << 20, MSG_TRUNC | MSG_DONTWAIT);
    if (n > 0) continue;
    if (n == 0) {
      host_eof_ = true;
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN) {
      host_readable_ = false;
      break;
    }
    HostError(errno, "recv");
    return;
  }
}

void BackendSocket::MaybeShutdownHostWrite() {
  if (!shut_wr_pending_ || host_wr_shut_) return;
  if (!out_dead_) {
    const auto fill = OutFill();
    if (!fill || *fill > 0) return;  // flush `out` first
  }
  Stack().Shutdown(host_.get(), SHUT_WR);
  host_wr_shut_ = true;
  shut_wr_pending_ = false;
  Log(LogLevel::kDebug, "event=host_shut_wr {} to_host={}", Who(), bytes_to_host_);
  if (host_eof_) SetState(SocketState::kClosed);
}

bool BackendSocket::MaybeDrainChannel() {
  if (!channel_dirty_) return false;
  // Before completion the stuffing is what keeps a connecting descriptor unwritable.
  if (state_ == SocketState::kIdle || state_ == SocketState::kConnecting) return false;
  if (!app_gone_ && !out_dead_ && !host_wr_shut_ && !rings_corrupt_) {
    const auto fill = OutFill();
    // While `out` is full the stuffing stays, so the app end stays unwritable.
    if (fill && *fill == out_.size()) return false;
  }
  return DrainChannel();
}

bool BackendSocket::DrainChannel() {
  char buf[4096];
  bool read_any = false;
  for (int i = 0; i < kMaxDrainChunks; ++i) {
    const ssize_t n = recv(channel_.get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      ++progress_;
      read_any = true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    // EOF or ECONNRESET: app end closed (unless the EOF is our own SHUT_RD).
    if (!channel_shut_ && (n == 0 || errno != EAGAIN)) app_gone_ = true;
    channel_dirty_ = false;
    return read_any;
  }
  // Bytes are left: stay dirty; held() makes the daemon come back.
  return read_any;
}

void BackendSocket::MaybeShutChannel() {
  if (channel_shut_) return;
  // `in` is over (its error word and the token are queued, our end shut for writing) and
  // so is `out` (failed, or the app's SHUT_WR carried out). Stuffing the app queued stays
  // readable for the drain after SHUT_RD. (FinishIn covers `out` ending first.)
  if (!in_done_ || !channel_wr_shut_ || !OutOver()) return;
  if (!CanShutChannel()) return;
  // The app end now sees both shutdown bits: POLLIN|POLLRDHUP|POLLHUP, like finished TCP.
  ::shutdown(channel_.get(), SHUT_RDWR);
  channel_shut_ = true;
  Log(LogLevel::kDebug, "event=channel_shut {}", Who());
}

bool BackendSocket::CanShutChannel() {
  if (channel_shut_ || diag_unavailable_ || app_gone_ || finished_ || !mem_ || !channel_.valid()) {
    return false;
  }
  // Once shut, our HUP no longer tells us when the app closes: only if sock_diag can.
  switch (LookUpUnixSocket(app_ino_, &app_cookie_)) {
    case UnixPresence::kAlive:
      return true;
    case UnixPresence::kGone:
      app_gone_ = true;
      return false;
    case UnixPresence::kUnknown:
      break;
  }
  diag_unavailable_ = true;
  Log(LogLevel::kWarn, "event=sock_diag_unavailable {} effect=no_pollhup", Who());
  return false;
}

bool BackendSocket::AppEndReleased() {
  const UnixPresence p = LookUpUnixSocket(app_ino_, &app_cookie_);
  // A lookup that failed (EMFILE, ENOMEM) is retried on the held-socket timer, so a close
  // whose wake-up came then is not missed for good.
  diag_retry_ = p == UnixPresence::kUnknown;
  return p == UnixPresence::kGone;
}

void BackendSocket::MaybeFinish() {
  if (finished_) return;
  if (listener_) {
    if (!listener_->finished()) return;
    // The host listener closes; connections still queued in the channel were dropped by
    // the kernel with the app's end, so their channels hang up and they free themselves.
    listener_.reset();
    CloseHost();
    finished_ = true;
    return;
  }
  if (!app_gone_) return;
  const char* how = "graceful";
  if (AbortiveClose()) {
    // SO_LINGER {1, 0}, applied to the host socket: close() discards what is unsent and
    // resets the peer, as the app's close() of a kernel socket would.
    how = "abort";
  } else if (NeverAccepted()) {
    // Dropped from a closing listener's queue: the kernel resets such connections.
    const struct linger abort = {1, 0};
    Stack().SetSockOpt(host_.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof(abort));
    how = "never_accepted";
  } else if (unread_on_close_) {
    // The app closed with received bytes unread: the kernel resets the connection (and
    // drops what is unsent) instead of closing it gracefully.
    const struct linger abort = {1, 0};
    Stack().SetSockOpt(host_.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof(abort));
    how = "unread_data";
  } else if (state_ == SocketState::kConnected && !rings_corrupt_ && !out_dead_ && !host_wr_shut_) {
    const auto fill = OutFill();
    if (fill && *fill > 0) {
      if (!LingerExpired()) return;  // flush what the app wrote before it closed
      how = "linger_timeout";
    }
  }
  Log(LogLevel::kInfo,
      "event=socket_closed {} reason=app_closed state={} close={} to_host={} from_host={}", Who(),
      SocketStateName(state_), how, bytes_to_host_, bytes_from_host_);
  CloseHost();
  finished_ = true;
}

void BackendSocket::NoteUnreadOnClose() {
  if (!app_gone_ || close_checked_) return;
  close_checked_ = true;
  // Decided once, when the app's close is first seen: nobody consumes `in` after that.
  if (state_ != SocketState::kConnected || rings_corrupt_ || !host_.valid()) return;
  const auto fill = InFill();
  unread_on_close_ = fill && *fill > 0;
}

bool BackendSocket::LingerExpired() {
  if (!linger_recorded_ || linger_.l_onoff == 0 || linger_.l_linger <= 0) return false;
  const auto now = std::chrono::steady_clock::now();
  if (!linger_deadline_) {
    linger_deadline_ = now + std::chrono::seconds(linger_.l_linger);
    return false;
  }
  if (now < *linger_deadline_) return false;
  // The app gave the bytes this long to leave; what is left is dropped and the peer reset
  // (it would otherwise wait for bytes that never come), as the kernel resets an orphan.
  if (host_.valid()) {
    const struct linger abort = {1, 0};
    Stack().SetSockOpt(host_.get(), SOL_SOCKET, SO_LINGER, &abort, sizeof(abort));
  }
  return true;
}

}  // namespace xsock::backend
