#include "backend/host_listener.h"

#include <fcntl.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "backend/backend_socket.h"
#include "backend/errors.h"
#include "backend/host_stack.h"
#include "backend/log.h"
#include "shared/unix_io.h"

namespace xsock::backend {
namespace {

// Connections accepted per host readiness event, so one busy listener cannot hold the
// loop; the host listener is level-triggered, so the rest raise the next event.
constexpr int kMaxAcceptsPerEvent = 16;

// The accepted connection's names, from the stack that accepted it (host_stack.h).
proto::SockAddr NameOf(int fd, bool peer) {
  sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  auto* sa = reinterpret_cast<sockaddr*>(&ss);
  HostStack& stack = CurrentHostStack();
  if ((peer ? stack.GetPeerName(fd, sa, &len) : stack.GetSockName(fd, sa, &len)) != 0) return {};
  auto a = proto::FromSockaddr(reinterpret_cast<const sockaddr*>(&ss), len);
  return a.ok() ? *a : proto::SockAddr{};
}

int MeasureRecordCost() {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) return 0;
  UniqueFd a(pair[0]);
  UniqueFd b(pair[1]);
  // Descriptors ride beside the packet (not in its buffer), so a bare record costs the same.
  const uint8_t record[proto::kAcceptRecordSize] = {};
  if (send(a.get(), record, sizeof(record), MSG_DONTWAIT) != sizeof(record)) return 0;
  int queued = 0;
  if (ioctl(a.get(), SIOCOUTQ, &queued) != 0) return 0;
  return queued;
}

}  // namespace

int AcceptRecordCost() {
  static const int cost = MeasureRecordCost();
  return cost;
}

int QueuedAcceptsFor(int backlog) { return std::clamp(backlog, 1, kMaxQueuedAccepts); }

int ListenerSendBuffer(int backlog) {
  // The kernel doubles what SO_SNDBUF is given, and a send fails once the packets queued
  // (each charged AcceptRecordCost()) reach the buffer: n records fit in n * cost.
  return QueuedAcceptsFor(backlog) * AcceptRecordCost() / 2;
}

absl::StatusOr<std::unique_ptr<HostListener>> HostListener::Create(BackendSocket* socket,
                                                                   int host_fd, int backlog,
                                                                   EventLoop* loop,
                                                                   AcceptedSocketFactory* factory,
                                                                   UniqueFd* app_end) {
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) != 0) {
    return ErrnoError(errno, "socketpair listener channel");
  }
  UniqueFd ours(pair[0]);
  UniqueFd app(pair[1]);
  const int flags = fcntl(ours.get(), F_GETFL);
  if (flags < 0 || fcntl(ours.get(), F_SETFL, flags | O_NONBLOCK) != 0) {
    return ErrnoError(errno, "fcntl O_NONBLOCK on listener channel");
  }
  // The accept-ahead bound: records that do not fit fail with EAGAIN.
  if (const int sndbuf = ListenerSendBuffer(backlog); sndbuf > 0) {
    if (setsockopt(ours.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)) != 0) {
      return ErrnoError(errno, "SO_SNDBUF on listener channel");
    }
  }
  struct stat st;
  if (fstat(app.get(), &st) != 0) return ErrnoError(errno, "fstat listener channel");
  std::unique_ptr<HostListener> l(
      new HostListener(socket, host_fd, loop, factory, std::move(ours), st.st_dev, st.st_ino));
  // No EPOLLIN: the app's packets stay unread (see the header); only its going away counts.
  if (auto s = loop->Add(l->channel_.get(), EPOLLRDHUP, Token{Source::kChannel, socket->id()});
      !s.ok()) {
    return s;
  }
  if (auto s = loop->Add(host_fd, EPOLLIN, Token{Source::kHost, socket->id()}); !s.ok()) return s;
  l->host_watched_ = true;
  *app_end = std::move(app);
  return l;
}

HostListener::HostListener(BackendSocket* socket, int host_fd, EventLoop* loop,
                           AcceptedSocketFactory* factory, UniqueFd channel, dev_t app_dev,
                           ino_t app_ino)
    : socket_(socket),
      host_fd_(host_fd),
      loop_(loop),
      factory_(factory),
      channel_(std::move(channel)),
      app_dev_(app_dev),
      app_ino_(app_ino) {}

HostListener::~HostListener() {
  WatchHost(false);
  if (channel_.valid()) loop_->Remove(channel_.get());
}

void HostListener::WatchHost(bool on) {
  if (on == host_watched_) return;
  if (on) {
    if (finished_ || stopped_) return;
    if (!loop_->Add(host_fd_, EPOLLIN, Token{Source::kHost, socket_->id()}).ok()) {
      paused_for_resources_ = true;  // retried on the poll tick
      return;
    }
  } else {
    loop_->Remove(host_fd_);
  }
  host_watched_ = on;
}

void HostListener::WatchChannelOut(bool on) {
  if (on == channel_out_watched_ || !channel_.valid()) return;
  const uint32_t events = EPOLLRDHUP | (on ? EPOLLOUT : 0u);
  (void)loop_->Modify(channel_.get(), events, Token{Source::kChannel, socket_->id()});
  channel_out_watched_ = on;
}

bool HostListener::CheckHangUp() {
  if (finished_ || !channel_.valid()) return false;
  pollfd p = {channel_.get(), POLLRDHUP, 0};
  if (poll(&p, 1, 0) != 1 || !(p.revents & (POLLHUP | POLLRDHUP | POLLERR))) return false;
  Finish("app_closed");
  return true;
}

void HostListener::OnChannelEvent(uint32_t events) {
  if (finished_) return;
  // The event may be a stale one of the stream channel this socket had before listen()
  // (same token): believe only what the listener channel itself says.
  if ((events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)) && CheckHangUp()) return;
  if ((events & EPOLLOUT) && pending_) {
    Pending p = std::move(*pending_);
    pending_.reset();
    if (Deliver(std::move(p))) {
      WatchChannelOut(false);
      WatchHost(true);
      AcceptSome();
    }
  }
}

void HostListener::OnHostEvent(uint32_t events) {
  if (finished_ || stopped_ || pending_) return;
  if (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) AcceptSome();
}

bool HostListener::OnPollTick() {
  if (!paused_for_resources_ || finished_ || stopped_) return false;
  paused_for_resources_ = false;
  const uint64_t before = accepted_;
  if (!pending_) {
    WatchHost(true);
    AcceptSome();
  }
  return accepted_ != before;
}

void HostListener::StopAccepting() {
  if (stopped_ || finished_) return;
  WatchHost(false);
  stopped_ = true;
  pending_.reset();  // its channel closes: that socket frees itself
  WatchChannelOut(false);
  paused_for_resources_ = false;
  ::shutdown(channel_.get(), SHUT_WR);
  Log(LogLevel::kInfo, "event=listener_stopped {} accepted={}", socket_->Who(), accepted_);
}

void HostListener::AcceptSome() {
  for (int i = 0; i < kMaxAcceptsPerEvent && !finished_ && !stopped_ && !pending_; ++i) {
    if (!AcceptOne()) return;
  }
}

bool HostListener::AcceptOne() {
  const int fd = CurrentHostStack().Accept(host_fd_);
  UniqueFd conn(fd >= 0 ? fd : -1);
  if (!conn.valid()) {
    const int err = -fd;
    switch (err) {
      case EAGAIN:
        return false;
      // The connection died in the queue, or a network error accept4(2) says to treat
      // like EAGAIN and retry: go on with the next one.
      case EINTR:
      case ECONNABORTED:
      case EPROTO:
      case ENETDOWN:
      case ENOPROTOOPT:
      case EHOSTDOWN:
      case ENONET:
      case EHOSTUNREACH:
      case EOPNOTSUPP:
      case ENETUNREACH:
        return true;
      default:
        // EMFILE, ENFILE, ENOBUFS, ENOMEM: the level-triggered listener would fire again
        // at once; pause it and retry on the poll tick instead.
        Log(LogLevel::kWarn, "event=accept_failed {} errno={} action=pause", socket_->Who(),
            ErrnoName(err));
        WatchHost(false);
        paused_for_resources_ = true;
        return false;
    }
  }
  Pending p;
  proto::AcceptRecord record;
  record.local = NameOf(conn.get(), false);
  record.peer = NameOf(conn.get(), true);
  if (record.local.family == 0 || record.peer.family == 0) return true;  // already reset
  auto created = factory_->CreateAccepted(*socket_, std::move(conn), &p.channel);
  if (!created.ok()) {
    Log(LogLevel::kWarn, "event=accept_failed {} peer={} error={}", socket_->Who(),
        proto::ToString(record.peer), Quoted(std::string(created.status().message())));
    return true;  // the host connection closed with `conn`
  }
  BackendSocket* s = *created;
  p.memfd.reset(fcntl(s->memfd(), F_DUPFD_CLOEXEC, 0));
  if (!p.memfd.valid()) {
    Log(LogLevel::kWarn, "event=accept_failed {} errno={}", socket_->Who(), ErrnoName(errno));
    return true;  // p.channel closes: the new socket frees itself
  }
  record.socket_id = s->id();
  record.ring_order = s->ring_order();
  p.record = proto::EncodeAcceptRecord(record);
  p.socket_id = s->id();
  ++accepted_;
  Log(LogLevel::kInfo, "event=accept {} socket={} local={} peer={}", socket_->Who(), s->id(),
      proto::ToString(record.local), proto::ToString(record.peer));
  return Deliver(std::move(p));
}

bool HostListener::Deliver(Pending p) {
  const int fds[] = {p.channel.get(), p.memfd.get()};
  const int rc =
      SendPacket(LibcSyscalls(), channel_.get(), p.record, fds, MSG_DONTWAIT | MSG_NOSIGNAL);
  if (rc == 0) return true;  // our copies close with `p`: the app holds the only ones
  if (rc == -EAGAIN) {
    // The channel holds as many records as the backlog allows: keep this connection, stop
    // accepting, and go on when the app takes a record (EPOLLOUT).
    Log(LogLevel::kInfo, "event=accept_paused {} socket={} accepted={}", socket_->Who(),
        p.socket_id, accepted_);
    pending_ = std::move(p);
    WatchHost(false);
    WatchChannelOut(true);
    return false;
  }
  if (rc == -EPIPE || rc == -ECONNRESET) {
    Finish("app_closed");
    return false;
  }
  // ETOOMANYREFS (descriptors in flight over the limit), ENOBUFS...: this connection is
  // dropped (its channel closes, so the socket frees itself); the next one may fit.
  Log(LogLevel::kWarn, "event=accept_dropped {} socket={} errno={}", socket_->Who(), p.socket_id,
      ErrnoName(-rc));
  return true;
}

void HostListener::Finish(const char* reason) {
  if (finished_) return;
  WatchHost(false);
  finished_ = true;
  pending_.reset();
  if (channel_.valid()) {
    loop_->Remove(channel_.get());
    channel_.reset();
  }
  Log(LogLevel::kInfo, "event=listener_closed {} reason={} accepted={}", socket_->Who(), reason,
      accepted_);
}

}  // namespace xsock::backend
