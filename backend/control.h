// One control connection (one per app process): reads requests, enforces hello-first and
// socket authority, dispatches to the sockets and sends replies. A malformed message, a
// message with the wrong number of descriptors or a request before hello drops the
// connection with one log line naming the reason; nothing else is affected.
#pragma once

#include <sys/socket.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "backend/event_loop.h"
#include "backend/fd.h"
#include "backend/identity.h"
#include "backend/log.h"
#include "backend/policy.h"
#include "backend/resolver.h"
#include "backend/socket_table.h"
#include "backend/stats.h"
#include "shared/protocol.h"

namespace xsock::backend {

// What a control connection needs from the daemon around it.
struct ControlContext {
  EventLoop* loop = nullptr;
  SocketTable* sockets = nullptr;
  Stats* stats = nullptr;
  uint32_t default_ring_order = 0;
  Resolver* resolver = nullptr;          // lookups; nullptr: answered EOPNOTSUPP
  const PolicyHolder* policy = nullptr;  // access policy; nullptr: everything allowed
};

class ControlClient {
 public:
  // fd: the accepted connection (nonblocking); identity: its peer, read from the kernel
  // at accept (backend/identity.h).
  ControlClient(uint64_t id, UniqueFd fd, ClientIdentity identity, ControlContext ctx);

  // Registers the connection with the loop.
  absl::Status Start();
  // Handles readiness. False: the client must be dropped now (already logged).
  bool OnEvent(uint32_t events);

  // The reply to this connection's outstanding lookup (request `seq`), from the Resolver.
  // False: the client must be dropped now (already logged).
  bool DeliverLookup(uint32_t seq, const proto::Reply& reply);

  uint64_t id() const { return id_; }
  int fd() const { return fd_.get(); }
  const ClientIdentity& identity() const { return identity_; }
  // When the connection was accepted (wall clock for display, steady clock for ages).
  std::chrono::system_clock::time_point connected_at() const { return connected_at_; }
  std::chrono::steady_clock::time_point connected_steady() const { return connected_steady_; }
  // Calls refused by policy (0 until a policy exists; the listings keep the field).
  uint64_t denials() const { return denials_; }
  // For the policy hook: counts one refused call for this client and in Stats::denials.
  void NoteDenial() {
    ++denials_;
    ctx_.stats->denials++;
  }

 private:
  struct Outgoing {
    std::vector<uint8_t> bytes;
    std::vector<UniqueFd> fds;
  };

  bool ReadRequests();
  bool HandleMessage(std::span<const uint8_t> bytes, std::vector<UniqueFd>& fds);
  // Sends or queues one reply; false if the connection is broken.
  bool Send(Outgoing out);
  bool FlushPending();
  void WatchFor(uint32_t events);
  bool Drop(LogLevel level, const char* event, std::string_view reason);

  // Limits (backend/resource_limits.h, via ctx_.sockets->limits()). Refuse counts and logs
  // (throttled per kind) one refusal and returns its errno. RequestAllowed: the request
  // rate (hello and release are exempt). ConnectLimitRefusal: EAGAIN when the socket is
  // idle and its client already has max_pending_connects connects in progress, else 0.
  int Refuse(LimitKind kind);
  bool RequestAllowed(proto::MsgType type);
  int ConnectLimitRefusal(uint64_t socket_id);

  // Hands a lookup to the Resolver; the connection is not read until its reply is sent.
  bool StartLookup(uint32_t seq, proto::Request req);

  proto::Reply Dispatch(const proto::Request& req, std::vector<UniqueFd>& fds,
                        std::vector<UniqueFd>* reply_fds);
  proto::Reply Handle(const proto::HelloRequest& req);
  proto::Reply Handle(const proto::SocketRequest& req, std::vector<UniqueFd>* reply_fds);
  proto::Reply Handle(const proto::ConnectRequest& req);
  proto::Reply Handle(const proto::ReleaseRequest& req);
  proto::Reply Handle(const proto::ShutdownRequest& req);
  proto::Reply Handle(const proto::GetSockNameRequest& req);
  proto::Reply Handle(const proto::GetPeerNameRequest& req);
  proto::Reply Handle(const proto::SetSockOptRequest& req);
  proto::Reply Handle(const proto::GetSockOptRequest& req);
  proto::Reply Handle(const proto::AttachRequest& req, std::vector<UniqueFd>& fds,
                      std::vector<UniqueFd>* reply_fds);
  proto::Reply Handle(const proto::StatsRequest& req);
  proto::Reply Handle(const proto::BindRequest& req);
  proto::Reply Handle(const proto::ListenRequest& req, std::vector<UniqueFd>* reply_fds);

  // The socket if this connection created or attached it and it is live, else nullptr
  // (the request gets EBADF).
  BackendSocket* Authorized(uint64_t socket_id);

  uint64_t id_;
  UniqueFd fd_;
  ClientIdentity identity_;
  ucred cred_;  // identity_'s SO_PEERCRED part
  ControlContext ctx_;
  std::chrono::system_clock::time_point connected_at_ = std::chrono::system_clock::now();
  std::chrono::steady_clock::time_point connected_steady_ = std::chrono::steady_clock::now();
  uint64_t denials_ = 0;
  bool hello_done_ = false;
  uint32_t caps_ = 0;
  absl::flat_hash_set<uint64_t> authority_;
  std::optional<Outgoing> pending_;  // a reply the connection had no room for yet
  bool awaiting_lookup_ = false;     // a lookup is with the Resolver
  TokenBucket request_rate_;         // --max-request-rate (unlimited without limits)
  std::array<LogThrottle, kLimitKinds> limit_log_;
};

}  // namespace xsock::backend
