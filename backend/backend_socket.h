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

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "backend/event_loop.h"
#include "backend/fd.h"
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
};

struct SocketParams {
  uint64_t id = 0;
  uint64_t client_id = 0;  // the creating control connection, for log lines
  uint32_t client_pid = 0;
  int domain = 0;  // AF_INET or AF_INET6
  uint32_t ring_order = kDefaultRingOrder;
};

class BackendSocket {
 public:
  // Makes the host socket, the channel pair and the shared memory, and registers
  // xsockd's channel end with the loop. *app_end receives the app's end of the channel.
  static absl::StatusOr<std::unique_ptr<BackendSocket>> Create(const SocketParams& params,
                                                               SocketEnv env, UniqueFd* app_end);
  ~BackendSocket();
  BackendSocket(const BackendSocket&) = delete;
  BackendSocket& operator=(const BackendSocket&) = delete;

  // ---- Control requests. Each returns 0 or a positive errno. ----

  // Starts a nonblocking connect: 0 (connected), EINPROGRESS (completion is reported
  // through the page and the channel) or the connect's errno.
  int Connect(const proto::SockAddr& addr);
  // SHUT_WR is carried out once `out` is flushed; SHUT_RD ends `in` with EOF.
  int Shutdown(int how);
  int GetSockName(proto::SockAddr* addr) const;
  int GetPeerName(proto::SockAddr* addr) const;
  int SetSockOpt(int level, int optname, std::span<const uint8_t> value);
  int GetSockOpt(int level, int optname, uint32_t optlen, std::vector<uint8_t>* value) const;

  // ---- Events. ----

  void OnChannelEvent(uint32_t events);
  void OnHostEvent(uint32_t events);
  // Re-evaluates a held() socket as if the app had sent a wake byte. True if anything moved.
  bool OnPollTick();

  // Nothing is left to do: the daemon frees the socket.
  bool finished() const { return finished_; }
  // xsockd is deliberately leaving bytes unread on its channel end (`out` is full), so the
  // app's send queue may be full too and a wake byte it sends may be lost (EAGAIN). The
  // daemon re-evaluates held sockets periodically; see backend/README.md.
  bool held() const;

  uint64_t id() const { return params_.id; }
  uint32_t ring_order() const { return params_.ring_order; }
  SocketState state() const { return state_; }
  int memfd() const { return mem_.fd(); }
  dev_t app_dev() const { return app_dev_; }
  ino_t app_ino() const { return app_ino_; }

 private:
  BackendSocket(const SocketParams& params, SocketEnv env, SocketMemory mem, UniqueFd channel,
                UniqueFd host, dev_t app_dev, ino_t app_ino);

  SocketPage* page() const { return mem_.page(); }
  std::string Who() const;  // "socket=7 client=3 pid=1234" for log lines
  void SetState(SocketState state);

  // The evaluation after every event: pumps, deferred host shutdown, channel drain, finish.
  void Pass();
  void PumpIn();            // host -> in
  void PumpOut();           // out -> host
  void DiscardHostInput();  // the app is gone: keep the host's receive queue empty
  void MaybeShutdownHostWrite();
  // Drain the channel (stuffing and wake bytes). True if any byte was read.
  bool MaybeDrainChannel();
  bool DrainChannel();
  void MaybeFinish();

  // Ring fill levels; nullopt if the app's index is impossible (the socket is reset).
  std::optional<uint32_t> InFill();
  std::optional<uint32_t> OutFill();
  void RecheckToken();           // the token invariant, re-checked on every wake
  void SignalIn();               // after publishing into `in`: queue a token unless one is queued
  void FinishIn(int32_t error);  // in_error, token, then shut down the channel for writing
  void FailOut(int32_t error);   // out_error; `out` bytes are discarded from now on
  void DiscardOut();

  void Connected();
  void ConnectFailed(int err);
  void HostEof();
  void HostError(int err, const char* during);
  void ResetCorrupt(const char* ring);
  void StopWatchingHost();
  void CloseHost();

  SocketParams params_;
  SocketEnv env_;
  SocketMemory mem_;
  UniqueFd channel_;  // xsockd's end, nonblocking
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
  bool in_done_ = false;          // in_error written; no more host -> in
  bool out_dead_ = false;         // out_error written; out bytes are discarded
  bool rings_corrupt_ = false;    // reset: the rings are never touched again
  bool shut_wr_pending_ = false;  // app asked for SHUT_WR; waiting for `out` to empty
  bool host_wr_shut_ = false;
  bool finished_ = false;
  bool linger_recorded_ = false;  // SO_LINGER as the app set it (see SetSockOpt)
  struct linger linger_ = {};
  uint64_t progress_ = 0;  // bumps whenever bytes move or a token is queued
  uint64_t bytes_to_host_ = 0;
  uint64_t bytes_from_host_ = 0;
};

}  // namespace xsock::backend
