#include "backend/socket_table.h"

#include <sys/timerfd.h>

#include <algorithm>
#include <cerrno>
#include <vector>

#include "backend/errors.h"
#include "backend/log.h"

namespace xsock::backend {
namespace {
// Held sockets are re-evaluated after 1 ms, backing off to 64 ms while none of them moves.
constexpr int kMinPollMs = 1;
constexpr int kMaxPollMs = 64;
}  // namespace

SocketTable::~SocketTable() { CloseAll(); }

absl::Status SocketTable::Init() {
  timer_.reset(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer_.valid()) return ErrnoError(errno, "timerfd_create");
  return loop_->Add(timer_.get(), EPOLLIN, Token{Source::kTimer, 0});
}

absl::StatusOr<BackendSocket*> SocketTable::Create(SocketParams params, UniqueFd* app_end) {
  params.id = next_id_++;
  auto sock = BackendSocket::Create(params, SocketEnv{loop_, stats_, this}, app_end);
  if (!sock.ok()) return sock.status();
  return Insert(std::move(*sock), params.client_id);
}

absl::StatusOr<BackendSocket*> SocketTable::CreateAccepted(const BackendSocket& listener,
                                                           UniqueFd host, UniqueFd* app_end) {
  SocketParams params = listener.params();
  uint64_t charge_to = params.client_id;
  if (limits_ != nullptr) {
    // The listener's client pays for what it accepts, within its own limits.
    if (const uint64_t owner = limits_->OwnerOf(listener.id()); owner != 0) charge_to = owner;
    const auto refused = limits_->CheckSocket(charge_to, SocketRingBytes(params.ring_order));
    if (refused) {
      limits_->CountRefusal(*refused);
      if (auto suppressed = accept_limit_log_.Allow(limits_->Now())) {
        Log(LogLevel::kWarn, "event=limit kind={} during=accept {} charged_to={} suppressed={}",
            LimitKindName(*refused), listener.Who(), charge_to, *suppressed);
      }
      return ErrnoError(LimitErrno(*refused),
                        fmt::format("limit {} reached", LimitKindName(*refused)));
    }
  }
  params.id = next_id_++;
  auto sock = BackendSocket::CreateAccepted(params, SocketEnv{loop_, stats_, this}, std::move(host),
                                            app_end);
  if (!sock.ok()) return sock.status();
  return Insert(std::move(*sock), charge_to);
}

BackendSocket* SocketTable::Insert(std::unique_ptr<BackendSocket> sock, uint64_t charge_to) {
  BackendSocket* s = sock.get();
  if (limits_ != nullptr) limits_->Charge(s->id(), charge_to, SocketRingBytes(s->ring_order()));
  by_inode_[{s->app_dev(), s->app_ino()}] = s->id();
  sockets_[s->id()] = std::move(sock);
  stats_->sockets_now++;
  stats_->sockets_total++;
  return s;
}

int SocketTable::ReapHungUp(uint64_t keep) {
  int freed = 0;
  std::vector<uint64_t> ids;
  ids.reserve(sockets_.size());
  for (const auto& [id, s] : sockets_) {
    if (id != keep) ids.push_back(id);
  }
  for (uint64_t id : ids) {
    auto it = sockets_.find(id);
    if (it == sockets_.end()) continue;
    BackendSocket* s = it->second.get();
    if (!s->CheckHangUp()) continue;
    Settle(s);
    if (!sockets_.contains(id)) ++freed;
  }
  return freed;
}

int SocketTable::Bind(BackendSocket* s, const proto::SockAddr& addr, proto::SockAddr* bound) {
  int err = s->Bind(addr, bound);
  if (err == EADDRINUSE && ReapHungUp(s->id()) > 0) err = s->Bind(addr, bound);
  return err;
}

int SocketTable::Listen(BackendSocket* s, int backlog, UniqueFd* app_end) {
  const std::pair<dev_t, ino_t> before = {s->app_dev(), s->app_ino()};
  int err = s->Listen(backlog, app_end);
  if (err == EADDRINUSE && ReapHungUp(s->id()) > 0) err = s->Listen(backlog, app_end);
  if (err == 0) {
    by_inode_.erase(before);
    by_inode_[{s->app_dev(), s->app_ino()}] = s->id();
    if (limits_ != nullptr) limits_->SetBytes(s->id(), 0);  // a listener has no rings
  }
  Settle(s);
  return err;
}

BackendSocket* SocketTable::Find(uint64_t id) {
  auto it = sockets_.find(id);
  if (it == sockets_.end() || it->second->finished()) return nullptr;
  return it->second.get();
}

BackendSocket* SocketTable::FindByInode(dev_t dev, ino_t ino) {
  auto it = by_inode_.find({dev, ino});
  return it == by_inode_.end() ? nullptr : Find(it->second);
}

void SocketTable::Dispatch(Token token, uint32_t events) {
  if (token.source == Source::kTimer) {
    OnTimer();
    return;
  }
  auto it = sockets_.find(token.id);
  if (it == sockets_.end()) return;  // freed earlier in this batch
  BackendSocket* s = it->second.get();
  if (token.source == Source::kChannel) {
    s->OnChannelEvent(events);
  } else if (token.source == Source::kHost) {
    s->OnHostEvent(events);
  }
  Settle(s);
}

void SocketTable::Settle(BackendSocket* s) {
  const uint64_t id = s->id();
  if (s->finished()) {
    if (auto c = closed_.find(s->params().client_id); c != closed_.end()) {
      c->second.sockets_closed++;
      c->second.bytes_to_host += s->bytes_to_host();
      c->second.bytes_from_host += s->bytes_from_host();
    }
    by_inode_.erase({s->app_dev(), s->app_ino()});
    held_.erase(id);
    if (limits_ != nullptr) limits_->Uncharge(id);
    sockets_.erase(id);
    stats_->sockets_now--;
    return;
  }
  if (limits_ != nullptr) limits_->SetConnecting(id, s->state() == SocketState::kConnecting);
  if (s->held()) {
    if (held_.insert(id).second) {
      poll_interval_ms_ = kMinPollMs;
      ArmTimer(poll_interval_ms_);
    }
  } else {
    held_.erase(id);
  }
}

void SocketTable::OnTimer() {
  uint64_t expirations;
  while (read(timer_.get(), &expirations, sizeof(expirations)) > 0) {
  }
  bool progress = false;
  const std::vector<uint64_t> ids(held_.begin(), held_.end());
  for (uint64_t id : ids) {
    auto it = sockets_.find(id);
    if (it == sockets_.end()) continue;
    BackendSocket* s = it->second.get();
    progress |= s->OnPollTick();
    Settle(s);
  }
  if (held_.empty()) return;
  poll_interval_ms_ = progress ? kMinPollMs : std::min(poll_interval_ms_ * 2, kMaxPollMs);
  ArmTimer(poll_interval_ms_);
}

void SocketTable::ArmTimer(int ms) {
  itimerspec spec = {};
  spec.it_value.tv_sec = ms / 1000;
  spec.it_value.tv_nsec = static_cast<long>(ms % 1000) * 1000000L;
  timerfd_settime(timer_.get(), 0, &spec, nullptr);
}

void SocketTable::CloseAll() {
  held_.clear();
  by_inode_.clear();
  if (limits_ != nullptr) limits_->UnchargeAll();
  stats_->sockets_now -= sockets_.size();
  sockets_.clear();
}

}  // namespace xsock::backend
