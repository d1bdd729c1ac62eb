// One routed socket inside xsockd: its shared memory, xsockd's end of the channel, the
// host TCP socket, the two pumps between them and the wake-up protocol of
// docs/channel.md. Single-threaded: only the event loop's thread calls it.
//
// Trust: everything the app can write is hostile. xsockd reads from the page only the
// app's ring indices (in_cons, out_prod: validated by ring::Producer/Consumer; an
// impossible one resets this socket) and the three wake flags (which can only make this
// socket's own wake-ups spurious or late). Its own indices, state and error words live in
// private copies and are only ever written to the page.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "backend/event_loop.h"
#include "backend/fd.h"
#include "backend/host_listener.h"
#include "backend/socket_memory.h"
#include "backend/stats.h"
#include "ringbuf/ring.h"
#include "shared/protocol.h"
#include "shared/socket_page.h"

namespace xsock::backend {

// What a socket needs from the daemon around it.
struct SocketEnv {
  EventLoop* loop = nullptr;
  Stats* stats = nullptr;
  AcceptedSocketFactory* factory = nullptr;  // for listen(); may be null otherwise
};

struct SocketParams {
  uint64_t id = 0;
  uint64_t client_id = 0;  // the creating control connection, for log lines
  uint32_t client_pid = 0;
  uint32_t client_uid = 0;  // the creating client's identity (SO_PEERCRED, /proc), for logs
  std::string client_exe;
  int domain = 0;  // AF_INET or AF_INET6
  uint32_t ring_order = kDefaultRingOrder;
};

// "idle", "connecting", "connected", "failed", "closed", "listening": for logs and
// listings.
const char* SocketStateName(SocketState s);

// Tests only: sleep this long before each token decision (see backend_socket.cc).
void SetTokenRaceDelayForTesting(unsigned microseconds);

class BackendSocket {
 public:
  // Makes the host socket, the channel pair and the shared memory, and registers
  // xsockd's channel end with the loop. *app_end receives the app's end of the channel.
  static absl::StatusOr<std::unique_ptr<BackendSocket>> Create(const SocketParams& params,
                                                               SocketEnv env, UniqueFd* app_end);
  // The socket of a connection a listening socket accepted (`host`: connected,
  // nonblocking): connected and pumping from the start, as after a finished connect. The
  // app end's SO_SNDBUF is already at its minimum.
  static absl::StatusOr<std::unique_ptr<BackendSocket>> CreateAccepted(const SocketParams& params,
                                                                       SocketEnv env, UniqueFd host,
                                                                       UniqueFd* app_end);
  ~BackendSocket();
  BackendSocket(const BackendSocket&) = delete;
  BackendSocket& operator=(const BackendSocket&) = delete;

  // ---- Control requests. Each returns 0 or a positive errno. ----

  // Starts a nonblocking connect: 0 (connected), EINPROGRESS (completion is reported
  // through the page and the channel) or the connect's errno.
  int Connect(const proto::SockAddr& addr);
  // Binds the host socket (a later connect or listen uses it); *bound gets its
  // getsockname(). The kernel's errno: EINVAL when already bound or connected.
  int Bind(const proto::SockAddr& addr, proto::SockAddr* bound);
  // listen() on the host socket, then the socket becomes a listener: its stream channel and
  // memory are released and *app_end receives the app end of its listener channel. EINVAL
  // unless idle. The caller (SocketTable) re-keys the socket's channel identity.
  int Listen(int backlog, UniqueFd* app_end);
  // SHUT_WR is carried out once `out` is flushed; SHUT_RD ends `in` with EOF and is passed
  // to the host socket. On a listener SHUT_RD stops accepting (as the kernel does).
  int Shutdown(int how);
  int GetSockName(proto::SockAddr* addr) const;
  int GetPeerName(proto::SockAddr* addr) const;
  int SetSockOpt(int level, int optname, std::span<const uint8_t> value);
  int GetSockOpt(int level, int optname, uint32_t optlen, std::vector<uint8_t>* value) const;

  // ---- Events. ----

  void OnChannelEvent(uint32_t events);
  void OnHostEvent(uint32_t events);
  // Looks (poll, no wait) whether the app's end of the channel is closed, and if so acts on
  // it now as on the event the loop has not delivered yet. True if it was.
  bool CheckHangUp();
  // Re-evaluates a held() socket as if the app had sent a wake byte. True if anything moved.
  bool OnPollTick();

  // Nothing is left to do: the daemon frees the socket.
  bool finished() const { return finished_; }
  // xsockd is deliberately leaving bytes unread on its channel end (`out` is full), so the
  // app's send queue may be full too and a wake byte it sends may be lost (EAGAIN). The
  // daemon re-evaluates held sockets periodically; see backend/README.md.
  bool held() const;

  uint64_t id() const { return params_.id; }
  const SocketParams& params() const { return params_; }
  // 0 for a listener, which has no rings.
  uint32_t ring_order() const { return mem_ ? params_.ring_order : 0; }
  SocketState state() const { return state_; }
  // The memfd; -1 for a listener.
  int memfd() const { return mem_ ? mem_->fd() : -1; }
  // Identity of the app's end of the channel (stream channel, or listener channel).
  dev_t app_dev() const { return listener_ ? listener_->app_dev() : app_dev_; }
  ino_t app_ino() const { return listener_ ? listener_->app_ino() : app_ino_; }
  std::string Who() const;  // "socket=7 client=3 pid=1234 uid=0 exe=/usr/bin/curl" for logs

  // ---- For listings (admin socket, metrics): reads only, no side effects. ----
  struct RingFill {
    bool present = false;  // false for a listener (no rings) or after a ring reset
    bool corrupt = false;  // the app's index is impossible right now (not acted on here)
    uint32_t size = 0;     // bytes per ring
    uint32_t in = 0;       // bytes in `in` the app has not read
    uint32_t out = 0;      // bytes in `out` xsockd has not sent
  };
  RingFill Fill() const;
  uint64_t bytes_to_host() const { return bytes_to_host_; }
  uint64_t bytes_from_host() const { return bytes_from_host_; }
  std::chrono::steady_clock::time_point created() const { return created_; }
  // The last connect's destination (family 0 if none).
  const proto::SockAddr& destination() const { return dest_; }
  bool accepted() const { return accepted_; }

 private:
  BackendSocket(const SocketParams& params, SocketEnv env, SocketMemory mem, UniqueFd channel,
                UniqueFd host, dev_t app_dev, ino_t app_ino);

  static absl::StatusOr<std::unique_ptr<BackendSocket>> CreateWith(const SocketParams& params,
                                                                   SocketEnv env, UniqueFd host,
                                                                   UniqueFd* app_end);
  SocketPage* page() const { return mem_->page(); }
  void SetState(SocketState state);
  void StartAccepted();
  // SO_LINGER {1, 0} set by the app: its close discards `out` and resets the host peer.
  bool AbortiveClose() const {
    return linger_recorded_ && linger_.l_onoff != 0 && linger_.l_linger == 0;
  }
  bool LingerExpired();
  // Once the app is gone: were bytes left unread in `in`? (Its close then resets the peer.)
  void NoteUnreadOnClose();
  // An accepted connection whose app end went away before any process took it from the
  // listener channel (the library sets app_accepted when accept() hands it out).
  bool NeverAccepted() const {
    return accepted_ && page()->app_accepted.load(std::memory_order_acquire) == 0;
  }

  // The evaluation after every event: pumps, deferred host shutdown, channel drain, finish.
  void Pass();
  void PumpIn();            // host -> in
  void PumpOut();           // out -> host
  void DiscardHostInput();  // the app is gone: keep the host's receive queue empty
  void MaybeShutdownHostWrite();
  // Drain the channel (stuffing and wake bytes). True if any byte was read.
  bool MaybeDrainChannel();
  // Both directions are over: shut xsockd's channel end both ways so the app end polls
  // HUP as a kernel TCP socket would (see backend/README.md, "Finished sockets").
  void MaybeShutChannel();
  // For a shut channel: the app's end is gone (asked by inode with sock_diag).
  bool AppEndReleased();
  // sock_diag can follow the app end (lookup succeeds; learns its cookie).
  bool CanShutChannel();
  bool OutOver() const { return out_dead_ || host_wr_shut_ || rings_corrupt_; }
  bool DrainChannel();
  void MaybeFinish();

  // Ring fill levels; nullopt if the app's index is impossible (the socket is reset).
  std::optional<uint32_t> InFill();
  std::optional<uint32_t> OutFill();
  void RecheckToken();  // the token invariant, re-checked on every wake
  void SignalIn();      // after publishing into `in`: queue a token unless one is queued
  static void InjectTokenRaceDelay();
  void FinishIn(int32_t error);  // in_error, token, then shut down the channel for writing
  void FailOut(int32_t error);   // out_error; `out` bytes are discarded from now on
  void DiscardOut();

  void Connected();
  void ConnectFailed(int err);
  void HostEof();
  void HostError(int err, const char* during);
  // A host ERR/HUP after the host's EOF: SO_ERROR (EPIPE if none) fails `out`.
  void CheckErrorAfterEof(uint32_t events);
  void ResetCorrupt(const char* ring);
  void StopWatchingHost();
  void CloseHost();

  SocketParams params_;
  SocketEnv env_;
  std::optional<SocketMemory> mem_;  // released by listen()
  UniqueFd channel_;                 // xsockd's end, nonblocking
  UniqueFd host_;
  dev_t app_dev_;
  ino_t app_ino_;
  // Private views: the cached own index (in_prod, out_cons) is never re-read from the page.
  ring::Producer in_;
  ring::Consumer out_;

  SocketState state_ = SocketState::kIdle;
  proto::SockAddr dest_;
  bool host_watched_ = false;
  bool host_readable_ = false;  // edge-triggered readiness, cached until EAGAIN
  bool host_writable_ = false;
  bool host_eof_ = false;
  bool channel_dirty_ = false;    // the channel raised an event not yet drained
  bool channel_wr_shut_ = false;  // EOF/error delivered: no more tokens
  bool app_gone_ = false;         // the app's last reference to its channel end closed
  // xsockd's channel end is shut down both ways (MaybeShutChannel): its HUP is its own, and
  // the app's close is learnt from sock_diag instead.
  bool channel_shut_ = false;
  bool diag_unavailable_ = false;  // sock_diag failed once: never shut the channel
  uint64_t app_cookie_ = 0;        // the app end's socket cookie (sock_diag)
  bool diag_retry_ = false;        // the last lookup failed: retried on the poll tick
  bool in_done_ = false;           // in_error written; no more host -> in
  bool out_dead_ = false;          // out_error written; out bytes are discarded
  bool rings_corrupt_ = false;     // reset: the rings are never touched again
  bool shut_wr_pending_ = false;   // app asked for SHUT_WR; waiting for `out` to empty
  bool host_wr_shut_ = false;
  bool finished_ = false;
  bool linger_recorded_ = false;  // SO_LINGER as the app set it (see SetSockOpt)
  struct linger linger_ = {};
  // Set when the app closes with SO_LINGER {1, N > 0}: `out` is flushed until then at most.
  std::optional<std::chrono::steady_clock::time_point> linger_deadline_;
  bool host_rd_shut_ = false;
  bool close_checked_ = false;    // NoteUnreadOnClose ran
  bool unread_on_close_ = false;  // the app closed with bytes unread in `in`
  std::optional<int> rcvlowat_;   // SO_RCVLOWAT as the app set it (not applied to the host)
  bool accepted_ = false;         // made by a listener's accept loop
  std::unique_ptr<HostListener> listener_;  // state kListening
  uint64_t progress_ = 0;                   // bumps whenever bytes move or a token is queued
  uint64_t bytes_to_host_ = 0;
  uint64_t bytes_from_host_ = 0;
  std::chrono::steady_clock::time_point created_ = std::chrono::steady_clock::now();
};

}  // namespace xsock::backend
