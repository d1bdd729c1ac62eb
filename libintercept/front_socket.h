// One routed socket's data path, the app side of docs/channel.md: reading the `in` ring
// and keeping the channel's token invariant, writing the `out` ring and stuffing the
// channel when it is full, errors, EOF and the peers going away.
//
// The descriptor a call was made on is passed to every operation: it is the channel (any
// duplicate of it works, and its O_NONBLOCK is the application's). Nothing here depends
// on being preloaded; system calls go through the injected Syscalls table.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "libintercept/fd_table.h"
#include "libintercept/result.h"
#include "shared/socket_page.h"
#include "shared/syscalls.h"

namespace xsock::intercept {

class FrontSocketPool;
class PageLock;
struct WaitClock;

// Restricted mode, for a process under a seccomp filter (OpenSSH's pre-authentication
// sandbox allows little more than read, write, poll and futex, and kills on the rest).
// Once entered (for good: a filter cannot be removed), every operation on a channel uses
// only read(), write() and poll(): no sendmsg/recvmsg, no fcntl, no socket options.
// What changes (docs/channel.md, "Restricted mode (seccomp sandboxes)"):
//  * a wake byte is written only if poll() says the channel is writable; through a
//    stuffed channel it is skipped, and xsockd's poll tick (a stuffed channel keeps the
//    socket "held") re-checks both rings instead;
//  * blocking waits are poll(), so a handled signal ends them with EINTR even under
//    SA_RESTART, and SO_RCVTIMEO / SO_SNDTIMEO are counted here;
//  * O_NONBLOCK is the value last seen by fcntl(F_GETFL) before the mode was entered
//    (EnterRestrictedMode's caller refreshes it for every routed descriptor); a later
//    fcntl(F_SETFL) is not seen;
//  * EPIPE raises no SIGPIPE (raise() needs tgkill, which such filters forbid).
// libxsock.so enters it from its prctl(PR_SET_SECCOMP) hook; a program that installs its
// filter with syscall(SYS_seccomp) is not seen.
void EnterRestrictedMode() noexcept;
bool InRestrictedMode() noexcept;

class FrontSocket final : public RefCounted {
 public:
  struct Params {
    void* base = nullptr;  // mapping of SocketMemfdSize(order) bytes, owned from Open() on
    uint32_t order = 0;    // from our own records (the socket reply), never from the page
    uint64_t socket_id = 0;
    int domain = 0;  // AF_INET or AF_INET6
  };

  // Initialises the page's app-side locks (process-shared, robust). Only the process that
  // created the socket calls this, before anyone else can see the page.
  static int InitPageLocks(SocketPage* page);

  // (Re)initialises a pooled object; the caller gets one reference. On its last
  // reference the socket unmaps its memory and returns to `pool`.
  void Open(const Syscalls& sys, const Params& params, FrontSocketPool* pool);

  // read/recv family. flags: MSG_PEEK, MSG_DONTWAIT, MSG_WAITALL, MSG_TRUNC (TCP's:
  // discard, return the length); others are ignored, MSG_OOB refused.
  Result Recv(int fd, const iovec* iov, int iovcnt, int flags);
  // write/send family. flags: MSG_DONTWAIT, MSG_NOSIGNAL (MSG_MORE and others ignored,
  // MSG_OOB refused).
  Result Send(int fd, const iovec* iov, int iovcnt, int flags);
  // splice() halves: up to `len` bytes from the pipe `pipe` into the socket, and from the
  // socket into `pipe`, straight between the pipe and the ring (no bytes are ever taken
  // from one side that the other did not accept). The socket side blocks as its
  // O_NONBLOCK says, the pipe side unless pipe_nonblocking (SPLICE_F_NONBLOCK or the
  // pipe's O_NONBLOCK), as the kernel's splice does.
  Result SpliceFromPipe(int fd, int pipe, size_t len, bool pipe_nonblocking);
  Result SpliceToPipe(int fd, int pipe, size_t len, bool pipe_nonblocking);

  // FIONREAD / SIOCINQ and SIOCOUTQ.
  uint32_t ReadableBytes() const;
  uint32_t UnsentBytes() const;

  // Fills the channel's send queue so the descriptor polls unwritable until xsockd drains
  // it (before `connect`, and when `out` is full). Error only if xsockd is gone (EPIPE).
  Result Stuff(int fd);
  // Waits until the connect in progress finishes; 0 or its errno. EINTR if interrupted,
  // EINPROGRESS when SO_SNDTIMEO expires (as the kernel does).
  Result WaitConnected(int fd);

  // connect() again on a socket whose connect finished: the kernel answers 0 once (that
  // is how a nonblocking connect's completion is reported), EISCONN from then on. Returns
  // whether it was reported already, and marks it reported. A blocking connect that
  // returned 0 through WaitConnected() counts as reported.
  bool ExchangeConnectReported() { return connect_reported_.exchange(true); }

  SocketState state() const;
  // Reads fd's O_NONBLOCK (fcntl) into the cache restricted mode answers from. Not in
  // restricted mode.
  void RefreshNonBlocking(int fd) const;
  // SO_ERROR: the pending error (positive errno), cleared by reading it.
  int TakeSoError();

  // shutdown(): SHUT_RD makes reads return what is queued, then EOF, without waiting;
  // SHUT_WR makes writes fail with EPIPE.
  void ShutdownLocal(int how);

  // SO_RCVTIMEO / SO_SNDTIMEO, kept locally (they govern waits that happen here).
  void SetTimeout(bool receive, const timeval& tv);
  timeval GetTimeout(bool receive) const;

  uint64_t socket_id() const { return socket_id_; }
  int domain() const { return domain_; }
  // EPIPE, with SIGPIPE to the calling thread unless `flags` has MSG_NOSIGNAL.
  static Result PipeError(int flags);
  // This process shut the socket down for reading (a listener: accept() gives EINVAL).
  bool read_shut() const { return read_shut_.load(std::memory_order_acquire); }
  // A listener whose xsockd went away: its descriptor was made quiet (Interceptor).
  bool listener_dead() const { return listener_dead_.load(std::memory_order_acquire); }
  void set_listener_dead() { listener_dead_.store(true, std::memory_order_release); }
  SocketPage* page() const { return page_; }
  // The control connection generation that may name this socket (see ControlClient).
  uint64_t attached_generation() const { return attached_gen_.load(std::memory_order_acquire); }
  void set_attached_generation(uint64_t g) { attached_gen_.store(g, std::memory_order_release); }

 private:
  friend class FrontSocketPool;
  FrontSocket() = default;
  ~FrontSocket() = default;
  void LastUnref() noexcept override;

  // The loops behind Recv/Send and the splice halves. `deliver(regions, done)` takes
  // bytes out of the `in` ring's regions and returns how many it took (fewer: the sink is
  // full) or -errno; `fill(regions, done)` puts bytes into the `out` ring's regions and
  // returns how many (fewer: the source is exhausted) or -errno.
  template <class Deliver>
  Result RecvLocked(PageLock& lock, int fd, size_t total, int flags, Deliver&& deliver);
  template <class Fill>
  Result SendLocked(PageLock& lock, int fd, size_t total, int flags, Fill&& fill);
  Result StartSend(int fd, int flags);
  // A zero-length read, with TCP's answers.
  Result RecvNothing(int fd, int flags);
  // MSG_PEEK | MSG_WAITALL found `peeked` < wanted bytes: waits for more. Ok(0): look
  // again; else what the call returns.
  Result AwaitMoreToPeek(PageLock& lock, int fd, size_t peeked, int flags, WaitClock& clock);
  // After the ring was seen empty: consumes the readiness token if one is owed. Returns
  // true if bytes turned out to have arrived meanwhile (look at the ring again).
  bool SettleTokenOnEmpty(int fd);
  void RecvToken(int fd);
  // Wakes xsockd with one byte, even through a stuffed send queue.
  Result Wake(int fd);
  // The error a failed or reset socket reports once (0 if none is pending).
  int TakePendingError();
  Result AwaitConnect(int fd, bool nonblocking);
  // Waits while the state is kConnecting, without taking the result.
  Result WaitWhileConnecting(int fd);
  bool NonBlocking(int fd, int flags) const;
  // 1: readable/writable (or hung up), 0: timeout, <0: -errno (EINTR, EBADF).
  int WaitFor(int fd, short events, int64_t deadline_ms);
  // The waits of a blocking call (docs/channel.md, "Blocking calls, signals and
  // timeouts"). `restartable` (nothing transferred yet): the wait is a blocking socket
  // call on the channel itself, so the kernel applies SA_RESTART and the timeout exactly
  // as it does for a TCP socket; otherwise poll(), which any handled signal interrupts
  // (the call then returns its partial count, as the kernel's does). Return POLLIN /
  // POLLOUT (ready), POLLHUP (xsockd is gone), 0 (timeout) or -errno.
  int WaitReadable(int fd, bool restartable, WaitClock& clock);
  int WaitWritable(int fd, bool restartable, WaitClock& clock);
  // Puts SO_RCVTIMEO / SO_SNDTIMEO of the channel at `ms` (0: none) unless it is there.
  void SyncChannelTimeout(int fd, bool receive, int64_t ms);
  ssize_t SendBytes(int fd, const void* p, size_t n, int flags);
  // Restricted mode: Wake and Stuff with poll() and write() only.
  Result WakeRestricted(int fd);
  Result StuffRestricted(int fd);

  const Syscalls* sys_ = nullptr;
  FrontSocketPool* pool_ = nullptr;
  void* base_ = nullptr;
  uint32_t order_ = 0;
  SocketPage* page_ = nullptr;
  ring::RingRefs in_{};
  ring::RingRefs out_{};
  uint64_t socket_id_ = 0;
  int domain_ = 0;
  std::atomic<uint64_t> attached_gen_{0};
  // Private to this process (copied by fork): what this process has been told or asked.
  std::atomic<bool> read_shut_{false};
  std::atomic<bool> write_shut_{false};
  std::atomic<bool> listener_dead_{false};
  std::atomic<bool> error_reported_{false};
  std::atomic<bool> connect_reported_{false};
  // A blocking connect failed and said so: the kernel's tcp_disconnect() follows, and
  // reads fail with ENOTCONN (a nonblocking one's socket keeps reading EOF).
  std::atomic<bool> disconnected_{false};
  std::atomic<int64_t> rcvtimeo_ms_{0};
  std::atomic<int64_t> sndtimeo_ms_{0};
  // What the channel's own SO_RCVTIMEO / SO_SNDTIMEO were last set to (-1: unknown).
  std::atomic<int64_t> channel_rcvtimeo_ms_{-1};
  std::atomic<int64_t> channel_sndtimeo_ms_{-1};
  // O_NONBLOCK of the descriptor as last read with fcntl: 1, 0, or -1 (never read). Only
  // restricted mode, which cannot call fcntl, answers from it.
  mutable std::atomic<int> nonblocking_seen_{-1};
};

// Type-stable storage for FrontSocket: objects are recycled, never freed, so a
// concurrent FdTable::Find() may safely TryRef() one that was just closed.
class FrontSocketPool {
 public:
  FrontSocketPool() = default;
  // Frees the recycled objects; sockets still in use must not outlive the pool.
  ~FrontSocketPool();
  FrontSocketPool(const FrontSocketPool&) = delete;
  FrontSocketPool& operator=(const FrontSocketPool&) = delete;

  // A dead object to Open(), or nullptr if memory is exhausted.
  FrontSocket* Take();
  void Give(FrontSocket* s);
  // In a fork child: the lock may have been held by a thread that does not exist there.
  void ResetAfterFork() { lock_.store(false, std::memory_order_relaxed); }
  size_t free_for_testing();

 private:
  void Lock();
  void Unlock() { lock_.store(false, std::memory_order_release); }
  std::atomic<bool> lock_{false};
  std::vector<FrontSocket*> free_;
};

}  // namespace xsock::intercept
