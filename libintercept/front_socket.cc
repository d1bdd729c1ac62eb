#include "libintercept/front_socket.h"

#include <fcntl.h>
#include <limits.h>
#include <linux/sock_diag.h>
#include <poll.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <new>

#include "libintercept/raw_syscall.h"

namespace xsock::intercept {
namespace {

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

bool ValidErrno(int e) { return e > 0 && e < 4096; }

std::atomic<bool> g_restricted{false};

// Restricted mode's read() and write() of the channel. Raw system calls: in libxsock.so
// libc's read/write are our own hooks, and the channel is the routed descriptor itself.
ssize_t ChannelRead(int fd, void* p, size_t n) { return RawSyscall(SYS_read, fd, p, n); }
ssize_t ChannelWrite(int fd, const void* p, size_t n) { return RawSyscall(SYS_write, fd, p, n); }

// poll() of the channel alone, retried on EINTR only when it does not wait. Returns the
// revents (0: nothing) or -errno.
int PollChannel(const Syscalls& sys, int fd, short events, int timeout_ms) {
  for (;;) {
    pollfd p = {fd, events, 0};
    const int r = sys.poll(&p, 1, timeout_ms);
    if (r > 0) return (p.revents & POLLNVAL) ? -EBADF : p.revents;
    if (r == 0) return 0;
    if (errno != EINTR || timeout_ms != 0) return -errno;
  }
}

// Restricted mode writes stuffing in pieces that the kernel queues as one skb each
// (AF_UNIX splits a send at sk_sndbuf / 2 - 64 bytes, at least 2240 with the channel's
// minimum SO_SNDBUF). A channel that polls writable holds at most sk_sndbuf / 4, so one
// such piece is always accepted at once even on a blocking descriptor, where a
// kStuffChunk could be split in two and the second part sleep until xsockd drains.
constexpr size_t kRestrictedStuffPiece = 1024;
static_assert(kRestrictedStuffPiece <= kStuffChunk);

}  // namespace

void EnterRestrictedMode() noexcept { g_restricted.store(true, std::memory_order_release); }
bool InRestrictedMode() noexcept { return g_restricted.load(std::memory_order_acquire); }

// One of the page's app-side mutexes. A holder that died leaves it EOWNERDEAD: the rings
// are still consistent (indices are published only after the bytes), so just take over.
class PageLock {
 public:
  explicit PageLock(pthread_mutex_t* m) : m_(m) {}
  ~PageLock() {
    if (held_) pthread_mutex_unlock(m_);
  }
  PageLock(const PageLock&) = delete;
  PageLock& operator=(const PageLock&) = delete;

  // 0 or an errno for the caller to return.
  int Lock() {
    int r = pthread_mutex_lock(m_);
    if (r == EOWNERDEAD) r = pthread_mutex_consistent(m_);
    held_ = r == 0;
    // EDEADLK: a signal handler re-entered a call on this socket in the same thread.
    if (r == EDEADLK) return EAGAIN;
    return r == 0 ? 0 : EIO;
  }
  void Unlock() {
    if (held_) pthread_mutex_unlock(m_);
    held_ = false;
  }

 private:
  pthread_mutex_t* m_;
  bool held_ = false;
};

namespace {

// Walks an iovec array as one byte sequence.
class IovCursor {
 public:
  IovCursor(const iovec* iov, int n, size_t skip) : iov_(iov), n_(n) {
    while (i_ < n_ && skip >= iov_[i_].iov_len) skip -= iov_[i_++].iov_len;
    off_ = skip;
  }
  void CopyOut(const void* src, size_t len) {  // ring -> user
    auto* p = static_cast<const char*>(src);
    Walk(len, [&](char* user, size_t n) {
      std::memcpy(user, p, n);
      p += n;
    });
  }
  void CopyIn(void* dst, size_t len) {  // user -> ring
    auto* p = static_cast<char*>(dst);
    Walk(len, [&](char* user, size_t n) {
      std::memcpy(p, user, n);
      p += n;
    });
  }

 private:
  template <class F>
  void Walk(size_t len, F f) {
    while (len > 0 && i_ < n_) {
      const size_t n = std::min(len, iov_[i_].iov_len - off_);
      f(static_cast<char*>(iov_[i_].iov_base) + off_, n);
      len -= n;
      off_ += n;
      if (off_ == iov_[i_].iov_len) {
        ++i_;
        off_ = 0;
      }
    }
  }
  const iovec* iov_;
  int n_;
  int i_ = 0;
  size_t off_ = 0;
};

// Total length of an iovec array, or -EINVAL.
ssize_t IovTotal(const iovec* iov, int iovcnt) {
  if (iovcnt < 0 || iovcnt > IOV_MAX || (iovcnt > 0 && iov == nullptr)) return -EINVAL;
  size_t total = 0;
  for (int i = 0; i < iovcnt; ++i) {
    if (iov[i].iov_len > static_cast<size_t>(SSIZE_MAX) - total) return -EINVAL;
    total += iov[i].iov_len;
  }
  return static_cast<ssize_t>(total);
}

uint32_t Clamp32(size_t n) { return n > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(n); }

// What a would-block read finds on the channel: EOF (0), a byte (1), or nothing (-1).
// Restricted mode cannot peek: poll() tells a byte from nothing, and reports the end of
// the stream (POLLRDHUP, POLLHUP) without saying whether a byte precedes it; that counts
// as EOF, after which the callers look at the error word (which xsockd sets before it
// shuts its end down).
int ProbeChannel(const Syscalls& sys, int fd) {
  if (InRestrictedMode()) {
    const int ev = PollChannel(sys, fd, POLLIN | POLLRDHUP, 0);
    if (ev <= 0) return -1;
    if (ev & (POLLHUP | POLLRDHUP | POLLERR)) return 0;
    return (ev & POLLIN) ? 1 : -1;
  }
  char b;
  iovec iov = {&b, 1};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  for (;;) {
    const ssize_t n = sys.recvmsg(fd, &msg, MSG_PEEK | MSG_DONTWAIT);
    if (n >= 0) return static_cast<int>(n);
    if (errno != EINTR) return -1;
  }
}

}  // namespace

int FrontSocket::InitPageLocks(SocketPage* page) {
  pthread_mutexattr_t attr;
  int r = pthread_mutexattr_init(&attr);
  if (r != 0) return r;
  // Shared by every process that inherits the socket; robust so a process dying inside
  // a call does not wedge the others; error-checking so a signal handler that re-enters
  // gets an error instead of a deadlock.
  r = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  if (r == 0) r = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  if (r == 0) r = pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_ERRORCHECK);
  if (r == 0) r = pthread_mutex_init(&page->read_lock, &attr);
  if (r == 0) r = pthread_mutex_init(&page->write_lock, &attr);
  pthread_mutexattr_destroy(&attr);
  return r;
}

void FrontSocket::Open(const Syscalls& sys, const Params& params, FrontSocketPool* pool) {
  sys_ = &sys;
  pool_ = pool;
  base_ = params.base;
  order_ = params.order;
  page_ = static_cast<SocketPage*>(params.base);
  in_ = InRing(params.base, params.order);
  out_ = OutRing(params.base, params.order);
  socket_id_ = params.socket_id;
  domain_ = params.domain;
  attached_gen_.store(0, std::memory_order_relaxed);
  read_shut_.store(false, std::memory_order_relaxed);
  write_shut_.store(false, std::memory_order_relaxed);
  error_reported_.store(false, std::memory_order_relaxed);
  connect_reported_.store(false, std::memory_order_relaxed);
  disconnected_.store(false, std::memory_order_relaxed);
  rcvtimeo_ms_.store(0, std::memory_order_relaxed);
  sndtimeo_ms_.store(0, std::memory_order_relaxed);
  nonblocking_seen_.store(-1, std::memory_order_relaxed);
  InitRef();
}

void FrontSocket::LastUnref() noexcept {
  munmap(base_, SocketMemfdSize(order_));
  base_ = nullptr;
  page_ = nullptr;
  if (pool_ != nullptr) pool_->Give(this);
}

SocketState FrontSocket::state() const {
  return static_cast<SocketState>(page_->state.load(std::memory_order_acquire));
}

uint32_t FrontSocket::ReadableBytes() const {
  const uint32_t n =
      in_.prod->load(std::memory_order_acquire) - in_.cons->load(std::memory_order_relaxed);
  return n <= in_.size ? n : 0;
}

uint32_t FrontSocket::UnsentBytes() const {
  const uint32_t n =
      out_.prod->load(std::memory_order_relaxed) - out_.cons->load(std::memory_order_acquire);
  return n <= out_.size ? n : 0;
}

void FrontSocket::ShutdownLocal(int how) {
  if (how == SHUT_RD || how == SHUT_RDWR) read_shut_.store(true, std::memory_order_release);
  if (how == SHUT_WR || how == SHUT_RDWR) write_shut_.store(true, std::memory_order_release);
}

void FrontSocket::SetTimeout(bool receive, const timeval& tv) {
  int64_t ms = int64_t{tv.tv_sec} * 1000 + (tv.tv_usec + 999) / 1000;
  if (ms < 0) ms = 0;
  (receive ? rcvtimeo_ms_ : sndtimeo_ms_).store(ms, std::memory_order_relaxed);
}

timeval FrontSocket::GetTimeout(bool receive) const {
  const int64_t ms = (receive ? rcvtimeo_ms_ : sndtimeo_ms_).load(std::memory_order_relaxed);
  return timeval{static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
}

int FrontSocket::WaitFor(int fd, short events, int64_t deadline_ms) {
  for (;;) {
    int timeout = -1;
    if (deadline_ms >= 0) {
      timeout = static_cast<int>(std::clamp<int64_t>(deadline_ms - NowMs(), 0, INT_MAX));
    }
    pollfd p = {fd, events, 0};
    const int r = sys_->poll(&p, 1, timeout);
    if (r < 0) return -errno;
    if (r == 0) return 0;
    if (p.revents & POLLNVAL) return -EBADF;
    return p.revents;
  }
}

bool FrontSocket::NonBlocking(int fd, int flags) const {
  if (flags & MSG_DONTWAIT) return true;
  // Never read (a socket this process got after entering the mode): blocking, the
  // kernel's default.
  if (InRestrictedMode()) return nonblocking_seen_.load(std::memory_order_relaxed) == 1;
  const int fl = sys_->fcntl(fd, F_GETFL);
  if (fl >= 0) nonblocking_seen_.store((fl & O_NONBLOCK) ? 1 : 0, std::memory_order_relaxed);
  return fl < 0 || (fl & O_NONBLOCK) != 0;
}

void FrontSocket::RefreshNonBlocking(int fd) const {
  if (InRestrictedMode()) return;
  const int fl = sys_->fcntl(fd, F_GETFL);
  if (fl >= 0) nonblocking_seen_.store((fl & O_NONBLOCK) ? 1 : 0, std::memory_order_relaxed);
}

ssize_t FrontSocket::SendBytes(int fd, const void* p, size_t n, int flags) {
  iovec iov = {const_cast<void*>(p), n};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  return sys_->sendmsg(fd, &msg, flags | MSG_NOSIGNAL);
}

int FrontSocket::TakePendingError() {
  const int so = page_->so_error.exchange(0, std::memory_order_acq_rel);
  if (so != 0) {
    error_reported_.store(true, std::memory_order_relaxed);
    return ValidErrno(so) ? so : EIO;
  }
  if (error_reported_.load(std::memory_order_relaxed)) return 0;
  const int32_t in = in_.error->load(std::memory_order_acquire);
  const int32_t out = out_.error->load(std::memory_order_acquire);
  const int32_t word = in < 0 ? in : (out < 0 ? out : 0);
  if (word == 0 || error_reported_.exchange(true, std::memory_order_relaxed)) return 0;
  return ValidErrno(-word) ? -word : EIO;
}

int FrontSocket::TakeSoError() { return TakePendingError(); }

Result FrontSocket::PipeError(int flags) {
  // The kernel sends SIGPIPE to the calling thread; raise() does the same (not in
  // restricted mode: its tgkill would get the process killed by the filter instead).
  if (!(flags & MSG_NOSIGNAL) && !InRestrictedMode()) raise(SIGPIPE);
  return Result::Err(EPIPE);
}

// ---- Waiting ---------------------------------------------------------------------------

// The timeout of one blocking call (SO_RCVTIMEO / SO_SNDTIMEO), counted from its first
// wait, as the kernel counts it.
struct WaitClock {
  int64_t timeout_ms = 0;  // 0: none
  int64_t deadline = -1;   // set by the first Next()
  bool started = false;

  // The timeout for the next wait (0: none), or -1 if it has expired.
  int64_t Next() {
    if (timeout_ms == 0) return 0;
    if (!started) {
      started = true;
      deadline = NowMs() + timeout_ms;
      return timeout_ms;
    }
    const int64_t left = deadline - NowMs();
    return left > 0 ? left : -1;
  }
};

void FrontSocket::SyncChannelTimeout(int fd, bool receive, int64_t ms) {
  std::atomic<int64_t>& applied = receive ? channel_rcvtimeo_ms_ : channel_sndtimeo_ms_;
  if (applied.load(std::memory_order_relaxed) == ms) return;
  const timeval tv = {static_cast<time_t>(ms / 1000), static_cast<suseconds_t>((ms % 1000) * 1000)};
  if (sys_->setsockopt(fd, SOL_SOCKET, receive ? SO_RCVTIMEO : SO_SNDTIMEO, &tv, sizeof(tv)) == 0) {
    applied.store(ms, std::memory_order_relaxed);
  }
}

int FrontSocket::WaitReadable(int fd, bool restartable, WaitClock& clock) {
  const int64_t ms = clock.Next();
  if (ms < 0) return 0;
  if (!restartable || InRestrictedMode()) return WaitFor(fd, POLLIN, ms == 0 ? -1 : NowMs() + ms);
  // A blocking 1-byte MSG_PEEK sleeps until xsockd queues a token (or shuts its end),
  // and takes nothing. Being a socket call, a signal interrupts it exactly as it would
  // interrupt recv() on a TCP socket: restarted by the kernel under SA_RESTART unless the
  // socket has a receive timeout, EINTR otherwise; the timeout ends it with EAGAIN.
  SyncChannelTimeout(fd, /*receive=*/true, ms);
  char b;
  iovec iov = {&b, 1};
  msghdr msg = {};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  const ssize_t n = sys_->recvmsg(fd, &msg, MSG_PEEK);
  if (n > 0) return POLLIN;
  if (n == 0) return POLLIN | POLLHUP;  // xsockd shut its end: the caller looks at why
  if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
  return -errno;
}

int FrontSocket::WaitWritable(int fd, bool restartable, WaitClock& clock) {
  const int64_t ms = clock.Next();
  if (ms < 0) return 0;
  if (!restartable || InRestrictedMode()) {
    return WaitFor(fd, POLLOUT, ms == 0 ? -1 : NowMs() + ms);
  }
  // The channel is stuffed: a blocking send of one wake byte sleeps until xsockd drains
  // it (which it does once `out` has room), with the kernel's SA_RESTART and SO_SNDTIMEO
  // handling of a socket send. The byte itself is one more wake-up for xsockd, harmless.
  SyncChannelTimeout(fd, /*receive=*/false, ms);
  if (SendBytes(fd, &kWakeByte, 1, 0) == 1) return POLLOUT;
  if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
  if (errno == EPIPE || errno == ECONNRESET) return POLLHUP;  // xsockd is gone
  return -errno;
}

// ---- Reading -------------------------------------------------------------------------

Result FrontSocket::Recv(int fd, const iovec* iov, int iovcnt, int flags) {
  const ssize_t total = IovTotal(iov, iovcnt);
  if (total < 0) return Result::Err(EINVAL);
  if (flags & MSG_OOB) return Result::Err(EINVAL);  // no urgent data, ever
  if (flags & MSG_ERRQUEUE) return Result::Err(EAGAIN);
  // After shutdown(SHUT_RD) TCP still hands out what is queued, then 0; it never waits.
  const bool read_shut = read_shut_.load(std::memory_order_acquire);
  if (read_shut) flags |= MSG_DONTWAIT;
  if (state() == SocketState::kIdle || disconnected_.load(std::memory_order_relaxed)) {
    return Result::Err(ENOTCONN);
  }
  if (total == 0) return RecvNothing(fd, flags);
  PageLock lock(&page_->read_lock);
  if (const int e = lock.Lock(); e != 0) return Result::Err(e);
  const Result got = RecvLocked(lock, fd, static_cast<size_t>(total), flags,
                                [&](const ring::Regions& r, size_t done) -> ssize_t {
                                  // MSG_TRUNC on TCP: the bytes are consumed, not copied.
                                  if (!(flags & MSG_TRUNC)) {
                                    IovCursor dst(iov, iovcnt, done);
                                    for (int i = 0; i < r.count; ++i) {
                                      dst.CopyOut(r.iov[i].iov_base, r.iov[i].iov_len);
                                    }
                                  }
                                  return r.bytes;
                                });
  return read_shut && got.error() == EAGAIN ? Result::Ok(0) : got;
}

Result FrontSocket::RecvNothing(int fd, int flags) {
  // tcp_recvmsg() with len 0: 0 once data (or EOF) is there, the pending error if one
  // is, EAGAIN if nonblocking; a blocking one waits for data.
  WaitClock clock{rcvtimeo_ms_.load(std::memory_order_relaxed)};
  for (;;) {
    const int32_t err = in_.error->load(std::memory_order_acquire);
    if (ReadableBytes() > 0) return Result::Ok(0);
    if (err != 0) {
      const int e = err < 0 ? TakePendingError() : 0;
      return e != 0 ? Result::Err(e) : Result::Ok(0);
    }
    if (NonBlocking(fd, flags)) {
      return read_shut_.load(std::memory_order_relaxed) ? Result::Ok(0) : Result::Err(EAGAIN);
    }
    const int w = WaitReadable(fd, /*restartable=*/true, clock);
    if (w == 0) return Result::Err(EAGAIN);
    if (w < 0) return Result::Err(-w);
    if (ReadableBytes() > 0 || in_.error->load(std::memory_order_acquire) != 0) continue;
    if (w & POLLHUP) return Result::Err(ECONNRESET);  // xsockd is gone
    // A token without bytes: a reader is settling it, or it is stray. Settle it under
    // the lock so this loop cannot spin on it.
    PageLock lock(&page_->read_lock);
    if (const int e = lock.Lock(); e != 0) return Result::Err(e);
    if (ReadableBytes() == 0) {
      if (page_->in_token.load(std::memory_order_seq_cst) == 0) {
        if (ProbeChannel(*sys_, fd) == 1) RecvToken(fd);
      } else {
        SettleTokenOnEmpty(fd);
      }
    }
  }
}

bool FrontSocket::SettleTokenOnEmpty(int fd) {
  auto in_empty = [this] {
    return in_.prod->load(std::memory_order_acquire) == in_.cons->load(std::memory_order_relaxed);
  };
  // seq_cst exchange, then a fence before re-reading prod: pairs with xsockd's
  // "publish prod; in_token.exchange(1)". Either it sees our 0 and queues a token, or we
  // see its bytes.
  const uint32_t owed = page_->in_token.exchange(0, std::memory_order_seq_cst);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (owed == 0) return !in_empty();
  if (!in_empty()) {
    // Bytes arrived after we saw the ring empty. Keep the queued token for them instead
    // of consuming it (docs/channel.md asks for a wake byte here; this needs no send).
    // If xsockd saw our 0 in between, it queued a second token: drop one.
    if (page_->in_token.exchange(1, std::memory_order_seq_cst) == 1) RecvToken(fd);
    return true;
  }
  RecvToken(fd);
  return !in_empty();
}

void FrontSocket::RecvToken(int fd) {
  // xsockd sends the token right after its exchange; if it has not arrived, wait for it.
  if (InRestrictedMode()) {
    // Read only once poll() says a byte (or EOF) is there, so a blocking descriptor
    // never sleeps in read(): the read lock keeps other readers of the token away.
    for (;;) {
      const int ev = PollChannel(*sys_, fd, POLLIN, -1);
      if (ev == -EINTR) continue;
      if (ev <= 0) return;         // EBADF
      if (!(ev & POLLIN)) return;  // POLLHUP / POLLERR: xsockd is gone
      char b;
      const ssize_t n = ChannelRead(fd, &b, 1);
      if (n >= 0) return;  // 1: the token; 0: EOF, nothing will come
      if (errno != EINTR && errno != EAGAIN && errno != EWOULDBLOCK) return;
    }
  }
  for (;;) {
    char b;
    iovec iov = {&b, 1};
    msghdr msg = {};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    const ssize_t n = sys_->recvmsg(fd, &msg, MSG_DONTWAIT);
    if (n >= 0) return;  // 1: the token; 0: xsockd is gone, nothing will come
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return;
    pollfd p = {fd, POLLIN, 0};
    if (sys_->poll(&p, 1, -1) < 0 && errno != EINTR) return;
    if (p.revents & POLLNVAL) return;
  }
}

template <class Deliver>
Result FrontSocket::RecvLocked(PageLock& lock, int fd, size_t total, int flags, Deliver&& deliver) {
  size_t got = 0;
  WaitClock clock{rcvtimeo_ms_.load(std::memory_order_relaxed)};
  for (;;) {
    ring::Consumer c(in_);
    const ring::Regions r = c.Peek(Clamp32(total - got));
    if (r.corrupt) return got > 0 ? Result::Ok(got) : Result::Err(ECONNRESET);
    if (r.bytes > 0) {
      const ssize_t taken = deliver(r, got);
      if (taken < 0) return got > 0 ? Result::Ok(got) : Result::Err(static_cast<int>(-taken));
      if (flags & MSG_PEEK) {
        // TCP's MSG_PEEK | MSG_WAITALL waits until the whole length can be peeked.
        if (!(flags & MSG_WAITALL) || static_cast<size_t>(taken) >= total) {
          return Result::Ok(taken);
        }
        const Result more = AwaitMoreToPeek(lock, fd, static_cast<size_t>(taken), flags, clock);
        if (!more.ok() || more.value() > 0) return more;
        continue;
      }
      if (taken > 0) {
        c.Release(static_cast<uint32_t>(taken));
        got += static_cast<size_t>(taken);
        // Release of cons, then the flag: pairs with xsockd's "in_room_wanted = 1; fence;
        // re-check room". Either it sees the room or we see its flag.
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (page_->in_room_wanted.exchange(0, std::memory_order_seq_cst) == 1) Wake(fd);
      }
      if (taken == 0) return got > 0 ? Result::Ok(got) : Result::Err(EAGAIN);  // sink full
      if (got < total) continue;
      if (ReadableBytes() == 0) SettleTokenOnEmpty(fd);
      return Result::Ok(got);
    }
    // The ring is empty.
    if (SettleTokenOnEmpty(fd)) continue;
    if (got > 0 && (!(flags & MSG_WAITALL) || got == total)) return Result::Ok(got);
    // Acquire pairs with xsockd's release-store of the error after the last data; look
    // at the ring once more after seeing it.
    const int32_t err = in_.error->load(std::memory_order_acquire);
    if (err != 0) {
      if (ReadableBytes() != 0) continue;
      if (err > 0 || got > 0) return Result::Ok(got);  // EOF (kRingEof)
      const int e = TakePendingError();
      return e != 0 ? Result::Err(e) : Result::Ok(0);  // reported once, then EOF
    }
    const int probe = ProbeChannel(*sys_, fd);
    if (probe == 0) {
      // EOF on the channel. xsockd sets the error word before shutting its end down, so
      // without one it is gone.
      if (in_.error->load(std::memory_order_acquire) != 0) continue;
      return got > 0 ? Result::Ok(got) : Result::Err(ECONNRESET);
    }
    if (probe == 1) {
      // A token is there. Legitimate ones come with bytes (or are owed); anything else
      // is stray and would keep the descriptor readable forever.
      if (ReadableBytes() == 0 && page_->in_token.load(std::memory_order_seq_cst) == 0) {
        RecvToken(fd);
      }
      continue;
    }
    if (NonBlocking(fd, flags)) return got > 0 ? Result::Ok(got) : Result::Err(EAGAIN);
    lock.Unlock();
    // Nothing read yet: the kernel's restart rules apply. After a partial MSG_WAITALL
    // read, any handled signal ends the call with the count, as in tcp_recvmsg().
    const int w = WaitReadable(fd, /*restartable=*/got == 0, clock);
    if (const int e = lock.Lock(); e != 0) return got > 0 ? Result::Ok(got) : Result::Err(e);
    if (w == 0) return got > 0 ? Result::Ok(got) : Result::Err(EAGAIN);  // SO_RCVTIMEO
    if (w < 0) return got > 0 ? Result::Ok(got) : Result::Err(-w);       // EINTR, EBADF
  }
}

Result FrontSocket::AwaitMoreToPeek(PageLock& lock, int fd, size_t peeked, int flags,
                                    WaitClock& clock) {
  // End of stream or an error after the data: the kernel returns what is there.
  if (in_.error->load(std::memory_order_acquire) != 0) {
    return ReadableBytes() > peeked ? Result::Ok(0) : Result::Ok(peeked);
  }
  if (NonBlocking(fd, flags)) return Result::Ok(peeked);
  // The token stays queued while the ring holds bytes, so the channel cannot tell us
  // about more. Take it: with in_token at 0, xsockd's next bytes queue a new one.
  if (page_->in_token.exchange(0, std::memory_order_seq_cst) == 1) RecvToken(fd);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  int w = POLLIN;
  if (ReadableBytes() <= peeked && in_.error->load(std::memory_order_acquire) == 0) {
    lock.Unlock();
    // Bytes were found: any handled signal ends the call with them (tcp_recvmsg()).
    w = WaitReadable(fd, /*restartable=*/false, clock);
    if (const int e = lock.Lock(); e != 0) return Result::Err(e);
  }
  if (page_->in_token.load(std::memory_order_seq_cst) == 0 && ReadableBytes() != 0) {
    // Bytes are in the ring but no token is queued (we took it and nothing new came, or
    // it is still on its way): ask xsockd to queue one, as it re-checks on every wake.
    Wake(fd);
  }
  if (w > 0) return Result::Ok(0);        // look again
  if (w == 0) return Result::Ok(peeked);  // SO_RCVTIMEO
  return w == -EINTR ? Result::Ok(peeked) : Result::Err(-w);
}

// ---- Writing -------------------------------------------------------------------------

Result FrontSocket::StartSend(int fd, int flags) {
  if (write_shut_.load(std::memory_order_acquire)) return PipeError(flags);
  SocketState st = state();
  if (st == SocketState::kConnecting) {
    if (Result r = AwaitConnect(fd, NonBlocking(fd, flags)); !r.ok()) return r;
    st = state();
  }
  if (st == SocketState::kConnecting) return PipeError(flags);  // xsockd went away meanwhile
  if (st == SocketState::kIdle) return Result::Err(ENOTCONN);
  if (st == SocketState::kFailed) {
    const int e = TakePendingError();
    return e != 0 && e != EPIPE ? Result::Err(e) : PipeError(flags);
  }
  return Result::Ok(0);
}

Result FrontSocket::Send(int fd, const iovec* iov, int iovcnt, int flags) {
  const ssize_t total = IovTotal(iov, iovcnt);
  if (total < 0) return Result::Err(EINVAL);
  if (flags & MSG_OOB) return Result::Err(EOPNOTSUPP);
  if (Result r = StartSend(fd, flags); !r.ok()) return r;
  if (total == 0) return Result::Ok(0);
  PageLock lock(&page_->write_lock);
  if (const int e = lock.Lock(); e != 0) return Result::Err(e);
  return SendLocked(lock, fd, static_cast<size_t>(total), flags,
                    [&](const ring::Regions& r, size_t sent) -> ssize_t {
                      IovCursor src(iov, iovcnt, sent);
                      for (int i = 0; i < r.count; ++i) {
                        src.CopyIn(r.iov[i].iov_base, r.iov[i].iov_len);
                      }
                      return r.bytes;
                    });
}

Result FrontSocket::AwaitConnect(int fd, bool nonblocking) {
  // A write on a connecting socket waits for the connect, or fails EAGAIN (the kernel's
  // sk_stream_wait_connect). A failed connect is left for the write to report.
  if (nonblocking) return Result::Err(EAGAIN);
  const Result r = WaitWhileConnecting(fd);
  if (r.ok() || r.error() == ECONNREFUSED) return Result::Ok(0);
  return Result::Err(r.error() == EINPROGRESS ? EAGAIN : r.error());  // timeout, EINTR
}

template <class Fill>
Result FrontSocket::SendLocked(PageLock& lock, int fd, size_t total, int flags, Fill&& fill) {
  size_t sent = 0;
  WaitClock clock{sndtimeo_ms_.load(std::memory_order_relaxed)};
  for (;;) {
    if (out_.error->load(std::memory_order_acquire) != 0) {
      if (sent > 0) return Result::Ok(sent);
      const int e = TakePendingError();
      return e != 0 && e != EPIPE ? Result::Err(e) : PipeError(flags);
    }
    ring::Producer p(out_);
    const ring::Regions r = p.Reserve(Clamp32(total - sent));
    if (r.corrupt) return sent > 0 ? Result::Ok(sent) : Result::Err(ECONNRESET);
    if (r.bytes > 0) {
      const ssize_t filled = fill(r, sent);
      if (filled < 0) return sent > 0 ? Result::Ok(sent) : Result::Err(static_cast<int>(-filled));
      if (filled > 0) {
        p.Commit(static_cast<uint32_t>(filled));
        sent += static_cast<size_t>(filled);
        // Publish, fence, then the flag: pairs with xsockd's "out_data_wanted = 1; fence;
        // re-check out".
        std::atomic_thread_fence(std::memory_order_seq_cst);
        if (page_->out_data_wanted.exchange(0, std::memory_order_seq_cst) == 1) {
          if (!Wake(fd).ok()) return PipeError(flags);  // xsockd is gone
        }
      }
      // All of it, or the source ran dry (splice).
      if (sent == total || static_cast<uint32_t>(filled) < r.bytes) return Result::Ok(sent);
      continue;
    }
    // `out` is full: make the descriptor unwritable until xsockd drains the channel,
    // which it does once there is room again.
    if (!Stuff(fd).ok()) return sent > 0 ? Result::Ok(sent) : PipeError(flags);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (ring::Producer(out_).Reserve(1).bytes > 0) continue;
    if (NonBlocking(fd, flags)) return sent > 0 ? Result::Ok(sent) : Result::Err(EAGAIN);
    lock.Unlock();
    // Nothing sent yet: the kernel's restart rules apply. After a partial send, any
    // handled signal ends the call with the count, as in tcp_sendmsg().
    const int w = WaitWritable(fd, /*restartable=*/sent == 0, clock);
    if (const int e = lock.Lock(); e != 0) return sent > 0 ? Result::Ok(sent) : Result::Err(e);
    if (w == 0) return sent > 0 ? Result::Ok(sent) : Result::Err(EAGAIN);  // SO_SNDTIMEO
    if (w < 0) return sent > 0 ? Result::Ok(sent) : Result::Err(-w);
  }
}

Result FrontSocket::Stuff(int fd) {
  if (InRestrictedMode()) return StuffRestricted(fd);
  static const char kFill[kStuffChunk] = {};
  // With SO_SNDBUF at its minimum one chunk fills the queue; the bound only guards
  // against a channel whose buffer someone enlarged.
  for (int i = 0; i < 64; ++i) {
    if (SendBytes(fd, kFill, sizeof(kFill), MSG_DONTWAIT) >= 0) continue;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Result::Ok(0);
    if (errno == EPIPE || errno == ECONNRESET) return Result::Err(EPIPE);
    return Result::Err(errno);
  }
  return Result::Ok(0);
}

Result FrontSocket::StuffRestricted(int fd) {
  static const char kFill[kRestrictedStuffPiece] = {};
  // Bounded as Stuff(); each pass writes only into a channel that polls writable.
  for (int i = 0; i < 64 * static_cast<int>(kStuffChunk / kRestrictedStuffPiece); ++i) {
    const int ev = PollChannel(*sys_, fd, POLLOUT, 0);
    if (ev < 0) return Result::Err(-ev);
    // Peer closed: a write() (it has no MSG_NOSIGNAL) would raise SIGPIPE.
    if (ev & (POLLHUP | POLLERR)) return Result::Err(EPIPE);
    if (!(ev & POLLOUT)) return Result::Ok(0);  // stuffed
    if (ChannelWrite(fd, kFill, sizeof(kFill)) >= 0) continue;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Result::Ok(0);
    if (errno == EPIPE || errno == ECONNRESET) return Result::Err(EPIPE);
    return Result::Err(errno);
  }
  return Result::Ok(0);
}

Result FrontSocket::WakeRestricted(int fd) {
  // xsockd could close between the poll and the write, which then raises SIGPIPE: the
  // window is a few instructions, and xsockd closes a channel only when it is gone or
  // the socket is finished.
  for (int attempt = 0; attempt < 8; ++attempt) {
    const int ev = PollChannel(*sys_, fd, POLLOUT, 0);
    if (ev < 0) return Result::Err(-ev);
    if (ev & (POLLHUP | POLLERR)) return Result::Err(EPIPE);
    // Stuffed (`out` is full): the wake is skipped. The stuffing keeps the socket "held"
    // in xsockd, whose poll tick re-checks `out` and `in` as a wake byte would.
    if (!(ev & POLLOUT)) return Result::Ok(0);
    if (ChannelWrite(fd, &kWakeByte, 1) == 1) return Result::Ok(0);
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return Result::Ok(0);  // as stuffed
    if (errno == EPIPE || errno == ECONNRESET) return Result::Err(EPIPE);
    return Result::Err(errno);
  }
  return Result::Ok(0);
}

Result FrontSocket::Wake(int fd) {
  if (InRestrictedMode()) return WakeRestricted(fd);
  const char b = kWakeByte;
  for (int attempt = 0; attempt < 8; ++attempt) {
    if (SendBytes(fd, &b, 1, MSG_DONTWAIT) == 1) return Result::Ok(0);
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET) return Result::Err(EPIPE);
    if (errno != EAGAIN && errno != EWOULDBLOCK) return Result::Err(errno);
    // The send queue is stuffed (`out` is full) and xsockd will not drain it until
    // there is room, but it must still hear this wake. Let the queue take one more byte
    // without becoming writable: AF_UNIX polls writable iff queued * 4 <= sndbuf and
    // accepts a send while queued < sndbuf, so sndbuf = 2 * queued does both.
    uint32_t mem[SK_MEMINFO_VARS] = {};
    socklen_t len = sizeof(mem);
    if (sys_->getsockopt(fd, SOL_SOCKET, SO_MEMINFO, mem, &len) != 0) return Result::Err(errno);
    const int queued =
        static_cast<int>(std::min<uint32_t>(mem[SK_MEMINFO_WMEM_ALLOC], INT_MAX / 2));
    sys_->setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &queued, sizeof(queued));  // kernel doubles
    const ssize_t n = SendBytes(fd, &b, 1, MSG_DONTWAIT);
    const int saved = errno;
    const int minimum = 1;
    sys_->setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &minimum, sizeof(minimum));
    if (n == 1) return Result::Ok(0);
    errno = saved;
    // Another thread restored the minimum between our two calls: try again.
  }
  return Result::Err(EAGAIN);
}

// ---- Connecting ----------------------------------------------------------------------

Result FrontSocket::WaitWhileConnecting(int fd) {
  // Restartable, as the kernel's inet_wait_for_connect(): under SA_RESTART the restarted
  // connect() keeps waiting; SO_SNDTIMEO expiry is EINPROGRESS.
  WaitClock clock{sndtimeo_ms_.load(std::memory_order_relaxed)};
  while (state() == SocketState::kConnecting) {
    const int w = WaitWritable(fd, /*restartable=*/true, clock);
    if (w == 0) return Result::Err(EINPROGRESS);  // SO_SNDTIMEO, as the kernel reports it
    if (w < 0) return Result::Err(-w);
    if (state() != SocketState::kConnecting) break;
    if (w & (POLLHUP | POLLERR)) return Result::Err(ECONNREFUSED);  // xsockd went away
    // Writable while still connecting: the channel was not stuffed (each pass queues a
    // byte, so this ends once it is). Do not spin.
    sys_->poll(nullptr, 0, 1);
  }
  return Result::Ok(0);
}

Result FrontSocket::WaitConnected(int fd) {
  if (Result r = WaitWhileConnecting(fd); !r.ok()) return r;
  switch (state()) {
    case SocketState::kConnected:
    case SocketState::kClosed:
      // kClosed is only reached from kConnected: the connect succeeded and the connection
      // ended since (a reset right after the handshake). The kernel's connect returns 0
      // then, and the next call reports the error.
      connect_reported_.store(true, std::memory_order_relaxed);
      return Result::Ok(0);
    case SocketState::kFailed: {
      const int e = TakePendingError();
      disconnected_.store(true, std::memory_order_relaxed);
      return Result::Err(e != 0 ? e : ECONNREFUSED);
    }
    default:
      return Result::Err(ECONNREFUSED);
  }
}

// ---- splice ----------------------------------------------------------------------------

namespace {

// The first n bytes of some regions.
ring::Regions Clip(const ring::Regions& r, size_t n) {
  ring::Regions c;
  for (int i = 0; i < r.count && n > 0; ++i) {
    const size_t take = std::min(n, r.iov[i].iov_len);
    c.iov[c.count++] = {r.iov[i].iov_base, take};
    c.bytes += static_cast<uint32_t>(take);
    n -= take;
  }
  return c;
}

}  // namespace

// Pipe reads and writes below are libc's: in libxsock.so they pass through the hooks'
// fast path (a pipe is never routed).
Result FrontSocket::SpliceFromPipe(int fd, int pipe, size_t len, bool pipe_nonblocking) {
  if (Result r = StartSend(fd, 0); !r.ok()) return r;
  PageLock lock(&page_->write_lock);
  if (const int e = lock.Lock(); e != 0) return Result::Err(e);
  return SendLocked(lock, fd, len, 0, [&](const ring::Regions& r, size_t sent) -> ssize_t {
    int avail = 0;
    if (ioctl(pipe, FIONREAD, &avail) != 0) return -errno;
    if (avail > 0) {
      const ring::Regions c = Clip(r, static_cast<size_t>(avail));
      const ssize_t n = readv(pipe, c.iov, c.count);
      return n < 0 ? -errno : n;
    }
    if (sent > 0) return 0;  // moved what the pipe held
    if (pipe_nonblocking) {
      // An empty pipe without writers is the end of its stream (0), as in the kernel.
      pollfd p = {pipe, POLLIN, 0};
      if (poll(&p, 1, 0) == 1 && (p.revents & POLLHUP) && !(p.revents & POLLIN)) return 0;
      return -EAGAIN;
    }
    // Sleeps in pipe_read() until bytes or EOF: restartable, as the kernel's own wait
    // for pipe data is. (The ring room is reserved meanwhile; other writers of this
    // socket wait for the lock, as they would for a kernel splice's socket lock.)
    const ssize_t n = readv(pipe, r.iov, r.count);
    return n < 0 ? -errno : n;
  });
}

Result FrontSocket::SpliceToPipe(int fd, int pipe, size_t len, bool pipe_nonblocking) {
  if (read_shut_.load(std::memory_order_acquire)) return Result::Ok(0);
  if (state() == SocketState::kIdle) return Result::Err(ENOTCONN);
  PageLock lock(&page_->read_lock);
  if (const int e = lock.Lock(); e != 0) return Result::Err(e);
  return RecvLocked(lock, fd, len, 0, [&](const ring::Regions& r, size_t got) -> ssize_t {
    pollfd p = {pipe, POLLOUT, 0};
    if (poll(&p, 1, 0) < 0) return -errno;
    if (!(p.revents & (POLLOUT | POLLERR))) {
      if (got > 0) return 0;  // the pipe is full: return what moved
      if (pipe_nonblocking) return -EAGAIN;
      // One byte, written blocking: sleeps in pipe_write() until there is room,
      // restartable as the kernel's wait for pipe space is.
      const ssize_t n = write(pipe, r.iov[0].iov_base, 1);
      return n < 0 ? -errno : n;
    }
    // At most PIPE_BUF into a pipe with a free slot never blocks. A pipe without readers
    // fails with EPIPE and raises SIGPIPE, as the kernel's splice does.
    const ring::Regions c = Clip(r, PIPE_BUF);
    const ssize_t n = writev(pipe, c.iov, c.count);
    return n < 0 ? -errno : n;
  });
}

// ---- Pool ----------------------------------------------------------------------------

void FrontSocketPool::Lock() {
  while (lock_.exchange(true, std::memory_order_acquire)) {
    while (lock_.load(std::memory_order_relaxed)) {
    }
  }
}

FrontSocket* FrontSocketPool::Take() {
  Lock();
  FrontSocket* s = nullptr;
  if (!free_.empty()) {
    s = free_.back();
    free_.pop_back();
  }
  Unlock();
  if (s == nullptr) s = new (std::nothrow) FrontSocket();
  return s;
}

void FrontSocketPool::Give(FrontSocket* s) {
  Lock();
  free_.push_back(s);
  Unlock();
}

FrontSocketPool::~FrontSocketPool() {
  for (FrontSocket* s : free_) delete s;
}

size_t FrontSocketPool::free_for_testing() {
  Lock();
  const size_t n = free_.size();
  Unlock();
  return n;
}

}  // namespace xsock::intercept
