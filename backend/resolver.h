// Name resolution for clients (docs/protocol.md, "Name resolution"): resolve, nameinfo
// and hostent requests are answered with this host's own getaddrinfo, getnameinfo,
// gethostbyname2_r and gethostbyaddr_r, so the host's resolver configuration (VPN, split
// DNS, /etc/hosts, nsswitch) applies to the client.
//
// Those calls block for as long as the DNS takes, so they never run on the event loop:
// Submit() queues the lookup for a small pool of worker threads (started on demand), a
// worker posts the finished reply and wakes the loop through an eventfd, and OnEvent()
// hands it to the Deliver callback on the loop's thread. Bounds: a control connection has
// at most one lookup outstanding (the protocol is strictly request -> reply, and the
// connection is not read meanwhile); a client process (pid) at most
// `max_per_pid`; everything together `max_outstanding`. Beyond them, and after
// `deadline_ms` without an answer, the client gets EAI_AGAIN / TRY_AGAIN, as from a
// resolver that timed out. A worker stuck in a lookup past its deadline finishes it and
// drops the result.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "backend/event_loop.h"
#include "backend/fd.h"
#include "backend/stats.h"
#include "shared/protocol.h"

namespace xsock::backend {

// Whether requests of type `t` are lookups (resolve, nameinfo, hostent).
bool IsLookup(proto::MsgType t);

// Performs one lookup request on this host, blocking, and returns its reply (err 0; the
// result in gai / herr). Thread-safe. `req` must be a lookup.
proto::Reply LookupOnHost(const proto::Request& req);

// The reply of a lookup of type `t` that could not be made: err != 0 (the exchange
// failed, e.g. EOPNOTSUPP), or err 0 with EAI_AGAIN / TRY_AGAIN (err == 0).
proto::Reply LookupFailedReply(proto::MsgType t, int err);

struct ResolverOptions {
  int threads = 4;           // worker threads, started as lookups arrive
  int max_outstanding = 64;  // queued + running, all clients
  int max_per_pid = 8;       // queued + running, one client process
  int deadline_ms = 8000;    // then EAI_AGAIN (below the library's 10 s reply timeout)
};

class Resolver {
 public:
  // Called on the loop's thread with a finished (or timed-out) lookup.
  using Deliver = std::function<void(uint64_t client_id, uint32_t seq, proto::Reply reply)>;

  Resolver(EventLoop* loop, Stats* stats, Deliver deliver, ResolverOptions options = {});
  ~Resolver();
  Resolver(const Resolver&) = delete;
  Resolver& operator=(const Resolver&) = delete;

  // Registers the completion eventfd and the deadline timer with the loop
  // (Source::kResolver, ids 0 and 1).
  absl::Status Init();

  // Queues lookup `req` of control connection `client_id` (process `pid`), answering
  // request `seq`. False: over a bound; the caller answers LookupFailedReply(type, 0).
  bool Submit(uint64_t client_id, pid_t pid, uint32_t seq, proto::Request req);

  // A Source::kResolver event with token id `id`.
  void OnEvent(uint64_t id);

  // Lookups queued or running (for tests).
  size_t outstanding() const { return pending_.size(); }

 private:
  struct Shared;
  struct Pending {
    uint64_t client_id = 0;
    pid_t pid = 0;
    uint32_t seq = 0;
    proto::MsgType type = proto::MsgType::kResolve;
    int64_t deadline_ms = 0;
  };

  void Complete(uint64_t ticket, proto::Reply reply);
  void ExpireOverdue();
  void ArmTimer(bool on);

  EventLoop* loop_;
  Stats* stats_;
  Deliver deliver_;
  ResolverOptions options_;
  std::shared_ptr<Shared> shared_;  // shared with the workers, which may outlive us
  UniqueFd timer_;
  bool timer_armed_ = false;
  uint64_t next_ticket_ = 1;
  absl::flat_hash_map<uint64_t, Pending> pending_;
  absl::flat_hash_map<pid_t, int> per_pid_;
};

}  // namespace xsock::backend
