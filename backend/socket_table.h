// All routed sockets of the daemon: creation, lookup by id and by the inode of the app's
// channel end (attach), dispatch of their events, freeing finished ones, and the periodic
// re-evaluation of held sockets (BackendSocket::held()).
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/statusor.h"
#include "backend/backend_socket.h"
#include "backend/event_loop.h"
#include "backend/fd.h"
#include "backend/resource_limits.h"
#include "backend/stats.h"

namespace xsock::backend {

class SocketTable : public AcceptedSocketFactory {
 public:
  SocketTable(EventLoop* loop, Stats* stats) : loop_(loop), stats_(stats) {}
  ~SocketTable();
  SocketTable(const SocketTable&) = delete;
  SocketTable& operator=(const SocketTable&) = delete;

  // Creates the poll timer and registers it with the loop.
  absl::Status Init();
  // Per-client and global limits (nullptr: none). Every socket is charged from Insert to
  // its free; accepted sockets are checked against them too (refused: the connection is
  // closed). Set before the first socket.
  void SetLimits(Limits* limits) { limits_ = limits; }
  Limits* limits() const { return limits_; }
  // A connection attached s: it takes over s's charge if the client s is charged to is
  // gone (Limits::Adopt).
  void Adopt(const BackendSocket& s, uint64_t client_id) {
    if (limits_ != nullptr) limits_->Adopt(s.id(), client_id);
  }

  // Creates a socket (params.id is assigned here). *app_end receives the app's channel end.
  absl::StatusOr<BackendSocket*> Create(SocketParams params, UniqueFd* app_end);
  // BackendSocket::Bind. On EADDRINUSE it first frees sockets whose app end has already
  // closed (ReapHungUp) and tries once more, so that close() then bind() of the same port
  // works as with kernel sockets.
  int Bind(BackendSocket* s, const proto::SockAddr& addr, proto::SockAddr* bound);
  // BackendSocket::Listen (EADDRINUSE handled as for Bind), keeping the lookup by channel
  // identity (attach) in step: from now on the socket is found by its listener channel.
  int Listen(BackendSocket* s, int backlog, UniqueFd* app_end);
  // AcceptedSocketFactory: a new id, same client, domain and ring order as the listener.
  absl::StatusOr<BackendSocket*> CreateAccepted(const BackendSocket& listener, UniqueFd host,
                                                UniqueFd* app_end) override;
  // The live socket with this id, or nullptr.
  BackendSocket* Find(uint64_t id);
  // The live socket whose app channel end has this identity, or nullptr.
  BackendSocket* FindByInode(dev_t dev, ino_t ino);

  // Events of sockets (Source::kChannel, kHost) and of the poll timer (kTimer).
  void Dispatch(Token token, uint32_t events);
  // Call after any operation on s: frees it if finished (s is then dangling) and tracks
  // whether it is held.
  void Settle(BackendSocket* s);
  // Frees every socket (daemon shutdown): host sockets close, channels hang up.
  void CloseAll();

  size_t size() const { return sockets_.size(); }

  // ---- For listings (admin socket, metrics). ----
  // Every live socket, in no particular order.
  template <class F>
  void ForEach(F&& f) const {
    for (const auto& [id, s] : sockets_) {
      if (!s->finished()) f(*s);
    }
  }
  // What the freed sockets of a client carried, so that a client's bytes do not shrink when
  // its sockets close. Kept only between AddClient and RemoveClient (the server's client
  // lifetime): sockets outliving their client add nothing, so nothing grows without bound.
  struct ClientTotals {
    uint64_t sockets_closed = 0;
    uint64_t bytes_to_host = 0;
    uint64_t bytes_from_host = 0;
  };
  void AddClient(uint64_t client_id) {
    closed_[client_id] = {};
    if (limits_ != nullptr) limits_->ClientConnected(client_id);
  }
  void RemoveClient(uint64_t client_id) {
    closed_.erase(client_id);
    if (limits_ != nullptr) limits_->ClientGone(client_id);
  }
  ClientTotals ClosedTotals(uint64_t client_id) const {
    auto it = closed_.find(client_id);
    return it == closed_.end() ? ClientTotals{} : it->second;
  }

 private:
  void OnTimer();
  void ArmTimer(int ms);
  // Runs the hang-up of every socket (but `keep`) whose app end is closed though the loop
  // has not reported it yet: a kernel socket's close() frees its port at once, and the app
  // may already be binding it again. Returns how many sockets went.
  int ReapHungUp(uint64_t keep);
  // charge_to: the client the socket's memory is charged to (Limits).
  BackendSocket* Insert(std::unique_ptr<BackendSocket> sock, uint64_t charge_to);

  EventLoop* loop_;
  Stats* stats_;
  absl::flat_hash_map<uint64_t, std::unique_ptr<BackendSocket>> sockets_;
  absl::flat_hash_map<std::pair<dev_t, ino_t>, uint64_t> by_inode_;
  absl::flat_hash_set<uint64_t> held_;
  absl::flat_hash_map<uint64_t, ClientTotals> closed_;  // by client id
  Limits* limits_ = nullptr;
  LogThrottle accept_limit_log_;  // refusals of accepted connections
  UniqueFd timer_;
  int poll_interval_ms_ = 1;
  uint64_t next_id_ = 1;
};

}  // namespace xsock::backend
