// The listening half of a routed socket after listen() (docs/channel.md, "Bound and
// listening sockets"): xsockd's end of the socket's listener channel (AF_UNIX
// SOCK_SEQPACKET) and the accept loop that turns every connection accepted on the host
// listener into a connected routed socket, sent to the app as one AcceptRecord packet with
// its channel end and memfd. The kernel's packet queue on the app end is the accept queue;
// its size is bounded by the send buffer of xsockd's end. Single-threaded, like the loop.
//
// Trust: the app can only close or shut down its end, or send packets on it (the library
// sends a few to make its end poll unwritable). xsockd never reads them: a listener channel
// carries records one way only, and its app end must stay unwritable like a kernel
// listening socket.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "backend/event_loop.h"
#include "backend/fd.h"
#include "shared/protocol.h"

namespace xsock::backend {

class BackendSocket;

// Makes the routed socket of a connection a listener accepted (implemented by SocketTable,
// which owns every socket): the socket is connected and pumping when this returns.
// *app_end receives the app end of its channel.
class AcceptedSocketFactory {
 public:
  virtual absl::StatusOr<BackendSocket*> CreateAccepted(const BackendSocket& listener,
                                                        UniqueFd host, UniqueFd* app_end) = 0;

 protected:
  ~AcceptedSocketFactory() = default;
};

// Accept records xsockd lets wait in a listener channel: min(backlog, 64), at least 1.
// The bound is the SO_SNDBUF of xsockd's end, ListenerSendBuffer(backlog) (0: left at the
// default, the cost could not be measured); where the kernel's minimum send buffer is
// larger, a few more fit.
inline constexpr int kMaxQueuedAccepts = 64;
int QueuedAcceptsFor(int backlog);
int ListenerSendBuffer(int backlog);
// The send-buffer cost of one record packet, measured once (SIOCOUTQ after a send on a
// scratch SOCK_SEQPACKET pair); 0 if it could not be measured.
int AcceptRecordCost();

class HostListener {
 public:
  // Makes the listener channel for `socket`, whose host socket `host_fd` is listening.
  // Registers xsockd's end (Token kChannel) and the host listener (Token kHost) with the
  // loop under the socket's id. *app_end receives the app end of the listener channel.
  static absl::StatusOr<std::unique_ptr<HostListener>> Create(BackendSocket* socket, int host_fd,
                                                              int backlog, EventLoop* loop,
                                                              AcceptedSocketFactory* factory,
                                                              UniqueFd* app_end);
  ~HostListener();
  HostListener(const HostListener&) = delete;
  HostListener& operator=(const HostListener&) = delete;

  void OnChannelEvent(uint32_t events);
  // Finishes now if the app's end is closed (poll, no wait). True if it was.
  bool CheckHangUp();
  void OnHostEvent(uint32_t events);
  // Retries what a resource shortage (EMFILE, ENOBUFS...) paused. True if anything moved.
  bool OnPollTick();
  // shutdown(SHUT_RD) of the listening socket: no more connections are accepted, and the
  // app end reads end of file once the queued records are taken.
  void StopAccepting();

  // The app's last reference to its end is gone: the owner closes the host listener.
  bool finished() const { return finished_; }
  // Paused after a resource shortage: the daemon calls OnPollTick periodically.
  bool held() const { return paused_for_resources_ && !finished_; }

  dev_t app_dev() const { return app_dev_; }
  ino_t app_ino() const { return app_ino_; }
  uint64_t accepted() const { return accepted_; }

 private:
  struct Pending {
    std::vector<uint8_t> record;
    UniqueFd channel;  // the accepted socket's channel app end
    UniqueFd memfd;
    uint64_t socket_id = 0;
  };

  HostListener(BackendSocket* socket, int host_fd, EventLoop* loop, AcceptedSocketFactory* factory,
               UniqueFd channel, dev_t app_dev, ino_t app_ino);

  void AcceptSome();
  // Accepts one connection; false when the loop should stop (EAGAIN, full, error).
  bool AcceptOne();
  // Sends the record; false if it could not (held: waiting for room, or dropped).
  bool Deliver(Pending p);
  void WatchHost(bool on);
  void WatchChannelOut(bool on);
  void Finish(const char* reason);

  BackendSocket* socket_;
  int host_fd_;
  EventLoop* loop_;
  AcceptedSocketFactory* factory_;
  UniqueFd channel_;  // xsockd's end, nonblocking
  dev_t app_dev_;
  ino_t app_ino_;
  std::optional<Pending> pending_;  // the one connection that found the channel full
  bool host_watched_ = false;
  bool channel_out_watched_ = false;
  bool paused_for_resources_ = false;
  bool stopped_ = false;
  bool finished_ = false;
  uint64_t accepted_ = 0;
};

}  // namespace xsock::backend
