// Per-client and global limits (backend/README.md, "Limits"): the ledger of what every live
// socket costs and whom it is charged to, the checks made before a socket is created or a
// connect is started, a token bucket for the control connection's request rate, and a
// throttle for the warn lines. No I/O, no event loop: tests drive it directly, with an
// injected clock.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string_view>

#include "absl/container/flat_hash_map.h"
#include "backend/stats.h"
#include "shared/protocol.h"

namespace xsock::backend {

using LimitClock = std::function<std::chrono::steady_clock::time_point()>;

// 0 means "no limit" for every field.
struct LimitOptions {
  uint64_t max_sockets_per_client = 4096;                     // EMFILE
  uint64_t max_ring_memory_per_client = uint64_t{256} << 20;  // bytes; ENOBUFS
  uint64_t max_pending_connects = 128;                        // per client; EAGAIN
  uint64_t max_request_rate = 0;                              // requests/s per client; EAGAIN
  uint64_t memory_budget = uint64_t{1} << 30;                 // bytes, all clients; ENOBUFS
  // Time source of the rate limiter and the log throttle; empty: steady_clock::now.
  LimitClock clock;
};

enum class LimitKind { kSockets, kRingMemory, kPendingConnects, kRate, kBudget };
inline constexpr int kLimitKinds = 5;

// "sockets", "ring_memory", "pending_connects", "rate", "budget" (log lines, stats names).
const char* LimitKindName(LimitKind kind);
// The errno a refusal of this kind answers: EMFILE, ENOBUFS, EAGAIN, EAGAIN, ENOBUFS.
int LimitErrno(LimitKind kind);

// The memory a socket with rings of 2^order bytes is charged: the page plus both rings
// (SocketMemfdSize). order must be in kMinRingOrder..kMaxRingOrder.
uint64_t SocketRingBytes(uint32_t order);

// A token bucket: `rate` tokens per second, holding at most `burst`. rate 0: unlimited.
class TokenBucket {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  TokenBucket(uint64_t rate, uint64_t burst, TimePoint now);
  // Takes one token if there is one.
  bool Take(TimePoint now);

 private:
  double rate_;
  double burst_;
  double tokens_;
  TimePoint last_;
};

// At most one line per second; Allow() says whether to write one now and how many were
// held back since the last one.
class LogThrottle {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  // nullopt: do not log now (counted). Otherwise the number suppressed since the last line.
  std::optional<uint64_t> Allow(TimePoint now);

 private:
  std::optional<TimePoint> last_;
  uint64_t suppressed_ = 0;
};

class Limits {
 public:
  using TimePoint = std::chrono::steady_clock::time_point;
  // stats (may be null): limit_refusals*, ring_memory_now are kept there.
  explicit Limits(LimitOptions options, Stats* stats = nullptr);
  Limits(const Limits&) = delete;
  Limits& operator=(const Limits&) = delete;

  const LimitOptions& options() const { return options_; }
  TimePoint Now() const;

  // ---- Checks (nothing changes) ----
  // Whether `client` may get one more socket costing `bytes`: nullopt, or the first limit
  // it would exceed (sockets, ring memory, then the global budget).
  std::optional<LimitKind> CheckSocket(uint64_t client, uint64_t bytes) const;
  // Whether `client` may start one more connect.
  std::optional<LimitKind> CheckConnect(uint64_t client) const;

  // ---- The ledger, following each socket from creation to free ----
  void Charge(uint64_t socket, uint64_t client, uint64_t bytes);
  // The socket's memory changed (a listener gives its rings back: 0).
  void SetBytes(uint64_t socket, uint64_t bytes);
  // The socket is (not) connecting; counted in its client's pending connects.
  void SetConnecting(uint64_t socket, bool connecting);
  // The socket was freed.
  void Uncharge(uint64_t socket);
  void UnchargeAll();
  // The client the socket is charged to (0 if it is not charged).
  uint64_t OwnerOf(uint64_t socket) const;

  // Client lifetime (the control connection). A socket that outlives its client stays
  // charged to it until `Adopt`: a connection that attaches a socket whose client is gone
  // takes the charge over (exec: the new image pays for what it inherited). Adopting never
  // refuses; it only counts.
  void ClientConnected(uint64_t client);
  void ClientGone(uint64_t client);
  void Adopt(uint64_t socket, uint64_t client);

  // ---- Refusals ----
  // Counts one refusal in Stats (limit_refusals and the kind's counter).
  void CountRefusal(LimitKind kind);

  // ---- Reads (tests, listings) ----
  struct Usage {
    uint64_t sockets = 0;
    uint64_t ring_bytes = 0;
    uint64_t pending_connects = 0;
    bool operator==(const Usage&) const = default;
  };
  Usage ClientUsage(uint64_t client) const;
  uint64_t total_bytes() const { return total_bytes_; }
  size_t charged_sockets() const { return charges_.size(); }
  // Client entries held (connected clients and gone ones with sockets still charged).
  size_t client_entries() const { return clients_.size(); }

 private:
  struct SocketCharge {
    uint64_t client = 0;
    uint64_t bytes = 0;
    bool connecting = false;
  };
  struct Client {
    Usage usage;
    bool connected = false;
  };
  Client& ClientEntry(uint64_t client);
  // Drops a client's entry once it is gone and nothing is charged to it.
  void MaybeForget(uint64_t client);
  void Move(SocketCharge& c, uint64_t to);
  void PublishBytes();

  LimitOptions options_;
  Stats* stats_;
  absl::flat_hash_map<uint64_t, SocketCharge> charges_;  // by socket id
  absl::flat_hash_map<uint64_t, Client> clients_;        // by client id
  uint64_t total_bytes_ = 0;
};

// The reply to `req` that refuses it with `err` (every reply type has an err field; the
// rest stays zero, and a refused reply carries no descriptors).
proto::Reply RefusalReply(const proto::Request& req, int err);

// Parses a byte count with an optional binary suffix K, M or G (KiB, MiB, GiB; either
// case): "256M", "1G", "4096". nullopt on anything else or overflow.
std::optional<uint64_t> ParseByteSize(std::string_view text);

}  // namespace xsock::backend
