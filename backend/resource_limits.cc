#include "backend/resource_limits.h"

#include <algorithm>
#include <cerrno>
#include <limits>
#include <utility>

#include "shared/socket_page.h"

namespace xsock::backend {

const char* LimitKindName(LimitKind kind) {
  switch (kind) {
    case LimitKind::kSockets:
      return "sockets";
    case LimitKind::kRingMemory:
      return "ring_memory";
    case LimitKind::kPendingConnects:
      return "pending_connects";
    case LimitKind::kRate:
      return "rate";
    case LimitKind::kBudget:
      return "budget";
  }
  return "?";
}

int LimitErrno(LimitKind kind) {
  switch (kind) {
    case LimitKind::kSockets:
      return EMFILE;  // the kernel's answer at RLIMIT_NOFILE
    case LimitKind::kRingMemory:
    case LimitKind::kBudget:
      return ENOBUFS;  // the kernel's answer when socket buffers cannot be had
    case LimitKind::kPendingConnects:
    case LimitKind::kRate:
      return EAGAIN;  // try again later: nothing is wrong with the call itself
  }
  return EAGAIN;
}

uint64_t SocketRingBytes(uint32_t order) { return SocketMemfdSize(order); }

// ---- TokenBucket ----

TokenBucket::TokenBucket(uint64_t rate, uint64_t burst, TimePoint now)
    : rate_(static_cast<double>(rate)),
      burst_(static_cast<double>(std::max<uint64_t>(burst, 1))),
      tokens_(burst_),
      last_(now) {}

bool TokenBucket::Take(TimePoint now) {
  if (rate_ == 0) return true;
  if (now > last_) {
    const double elapsed = std::chrono::duration<double>(now - last_).count();
    tokens_ = std::min(burst_, tokens_ + elapsed * rate_);
    last_ = now;
  }
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

// ---- LogThrottle ----

std::optional<uint64_t> LogThrottle::Allow(TimePoint now) {
  if (last_ && now - *last_ < std::chrono::seconds(1)) {
    ++suppressed_;
    return std::nullopt;
  }
  last_ = now;
  return std::exchange(suppressed_, 0);
}

// ---- Limits ----

Limits::Limits(LimitOptions options, Stats* stats) : options_(std::move(options)), stats_(stats) {}

Limits::TimePoint Limits::Now() const {
  return options_.clock ? options_.clock() : std::chrono::steady_clock::now();
}

std::optional<LimitKind> Limits::CheckSocket(uint64_t client, uint64_t bytes) const {
  const Usage u = ClientUsage(client);
  if (options_.max_sockets_per_client != 0 && u.sockets >= options_.max_sockets_per_client) {
    return LimitKind::kSockets;
  }
  if (options_.max_ring_memory_per_client != 0 &&
      u.ring_bytes + bytes > options_.max_ring_memory_per_client) {
    return LimitKind::kRingMemory;
  }
  if (options_.memory_budget != 0 && total_bytes_ + bytes > options_.memory_budget) {
    return LimitKind::kBudget;
  }
  return std::nullopt;
}

std::optional<LimitKind> Limits::CheckConnect(uint64_t client) const {
  if (options_.max_pending_connects != 0 &&
      ClientUsage(client).pending_connects >= options_.max_pending_connects) {
    return LimitKind::kPendingConnects;
  }
  return std::nullopt;
}

Limits::Client& Limits::ClientEntry(uint64_t client) { return clients_[client]; }

void Limits::MaybeForget(uint64_t client) {
  auto it = clients_.find(client);
  if (it == clients_.end()) return;
  if (!it->second.connected && it->second.usage == Usage{}) clients_.erase(it);
}

void Limits::PublishBytes() {
  if (stats_ != nullptr) stats_->ring_memory_now = total_bytes_;
}

void Limits::Charge(uint64_t socket, uint64_t client, uint64_t bytes) {
  if (charges_.contains(socket)) Uncharge(socket);
  charges_[socket] = SocketCharge{client, bytes, false};
  Usage& u = ClientEntry(client).usage;
  u.sockets++;
  u.ring_bytes += bytes;
  total_bytes_ += bytes;
  PublishBytes();
}

void Limits::SetBytes(uint64_t socket, uint64_t bytes) {
  auto it = charges_.find(socket);
  if (it == charges_.end()) return;
  Usage& u = ClientEntry(it->second.client).usage;
  u.ring_bytes = u.ring_bytes - it->second.bytes + bytes;
  total_bytes_ = total_bytes_ - it->second.bytes + bytes;
  it->second.bytes = bytes;
  PublishBytes();
}

void Limits::SetConnecting(uint64_t socket, bool connecting) {
  auto it = charges_.find(socket);
  if (it == charges_.end() || it->second.connecting == connecting) return;
  it->second.connecting = connecting;
  Usage& u = ClientEntry(it->second.client).usage;
  if (connecting) {
    u.pending_connects++;
  } else {
    u.pending_connects--;
  }
}

void Limits::Uncharge(uint64_t socket) {
  auto it = charges_.find(socket);
  if (it == charges_.end()) return;
  const SocketCharge c = it->second;
  charges_.erase(it);
  Usage& u = ClientEntry(c.client).usage;
  u.sockets--;
  u.ring_bytes -= c.bytes;
  if (c.connecting) u.pending_connects--;
  total_bytes_ -= c.bytes;
  PublishBytes();
  MaybeForget(c.client);
}

void Limits::UnchargeAll() {
  charges_.clear();
  for (auto it = clients_.begin(); it != clients_.end();) {
    it->second.usage = Usage{};
    if (!it->second.connected) {
      clients_.erase(it++);
    } else {
      ++it;
    }
  }
  total_bytes_ = 0;
  PublishBytes();
}

uint64_t Limits::OwnerOf(uint64_t socket) const {
  auto it = charges_.find(socket);
  return it == charges_.end() ? 0 : it->second.client;
}

void Limits::ClientConnected(uint64_t client) { ClientEntry(client).connected = true; }

void Limits::ClientGone(uint64_t client) {
  auto it = clients_.find(client);
  if (it == clients_.end()) return;
  it->second.connected = false;
  MaybeForget(client);
}

void Limits::Move(SocketCharge& c, uint64_t to) {
  const uint64_t from = c.client;
  Usage& f = ClientEntry(from).usage;
  f.sockets--;
  f.ring_bytes -= c.bytes;
  if (c.connecting) f.pending_connects--;
  Usage& t = ClientEntry(to).usage;
  t.sockets++;
  t.ring_bytes += c.bytes;
  if (c.connecting) t.pending_connects++;
  c.client = to;
  MaybeForget(from);
}

void Limits::Adopt(uint64_t socket, uint64_t client) {
  auto it = charges_.find(socket);
  if (it == charges_.end() || it->second.client == client) return;
  auto owner = clients_.find(it->second.client);
  if (owner != clients_.end() && owner->second.connected) return;  // its client pays
  Move(it->second, client);
}

void Limits::CountRefusal(LimitKind kind) {
  if (stats_ == nullptr) return;
  stats_->limit_refusals++;
  switch (kind) {
    case LimitKind::kSockets:
      stats_->limit_refusals_sockets++;
      break;
    case LimitKind::kRingMemory:
      stats_->limit_refusals_ring_memory++;
      break;
    case LimitKind::kPendingConnects:
      stats_->limit_refusals_pending_connects++;
      break;
    case LimitKind::kRate:
      stats_->limit_refusals_rate++;
      break;
    case LimitKind::kBudget:
      stats_->limit_refusals_budget++;
      break;
  }
}

Limits::Usage Limits::ClientUsage(uint64_t client) const {
  auto it = clients_.find(client);
  return it == clients_.end() ? Usage{} : it->second.usage;
}

namespace {

// Requests and replies are variants in the same order (shared/protocol.h).
static_assert(std::variant_size_v<proto::Request> == std::variant_size_v<proto::Reply>);

template <size_t I = 0>
proto::Reply ReplyAt(size_t index, int err) {
  if constexpr (I < std::variant_size_v<proto::Reply>) {
    if (index != I) return ReplyAt<I + 1>(index, err);
    proto::Reply r{std::in_place_index<I>};
    std::get<I>(r).err = err;
    return r;
  } else {
    return proto::Reply{};
  }
}

}  // namespace

proto::Reply RefusalReply(const proto::Request& req, int err) { return ReplyAt(req.index(), err); }

std::optional<uint64_t> ParseByteSize(std::string_view text) {
  if (text.empty()) return std::nullopt;
  uint64_t shift = 0;
  switch (text.back()) {
    case 'k':
    case 'K':
      shift = 10;
      break;
    case 'm':
    case 'M':
      shift = 20;
      break;
    case 'g':
    case 'G':
      shift = 30;
      break;
    default:
      break;
  }
  if (shift != 0) text.remove_suffix(1);
  if (text.empty() || text.size() > 20) return std::nullopt;
  uint64_t v = 0;
  for (char ch : text) {
    if (ch < '0' || ch > '9') return std::nullopt;
    const uint64_t d = static_cast<uint64_t>(ch - '0');
    if (v > (std::numeric_limits<uint64_t>::max() - d) / 10) return std::nullopt;
    v = v * 10 + d;
  }
  if (shift != 0 && v > (std::numeric_limits<uint64_t>::max() >> shift)) return std::nullopt;
  return v << shift;
}

}  // namespace xsock::backend
