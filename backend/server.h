// xsockd's event loop: the listener, the control connections, the sockets, SIGTERM/SIGINT
// through a signalfd, and a stop request other threads (tests) can make.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "backend/admin.h"
#include "backend/control.h"
#include "backend/event_loop.h"
#include "backend/fd.h"
#include "backend/listener.h"
#include "backend/policy.h"
#include "backend/resolver.h"
#include "backend/socket_table.h"
#include "backend/stats.h"
#include "shared/socket_page.h"

namespace xsock::backend {

struct ServerOptions {
  std::string socket_path = "/run/xsock/xsockd.sock";
  uint32_t ring_order = kDefaultRingOrder;  // for socket requests that ask for 0
  // Stop on SIGTERM/SIGINT, read from a signalfd. Create() blocks both signals in the
  // calling thread; a program must block them before it starts other threads.
  bool handle_signals = true;
  ResolverOptions resolver;  // name lookups: workers, bounds, deadline
  // Admin socket and metrics endpoint. The library's default is neither (an empty path);
  // xsockd's command line gives the admin socket a path next to the control socket.
  AdminOptions admin = {.socket_path = ""};
  // Access policy file (backend/policy.h), re-read on SIGHUP when handle_signals. "": none
  // (everything allowed). policy_required: a missing file is an error (--config), else
  // allow-all with one info line (the default path).
  std::string policy_path;
  bool policy_required = false;
  // Per-client and global limits (backend/resource_limits.h; 0 = none for each).
  LimitOptions limits;
};

class Server {
 public:
  // Opens the listener and everything the loop needs; errors carry context.
  static absl::StatusOr<std::unique_ptr<Server>> Create(const ServerOptions& options);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Runs until SIGTERM/SIGINT or RequestStop(), then closes every client and socket and
  // removes the socket file.
  absl::Status Run();
  // Makes Run() return soon; callable from any thread.
  void RequestStop();

  const std::string& socket_path() const { return listener_.path(); }
  // "" when disabled.
  std::string admin_path() const { return admin_ ? admin_->admin_path() : ""; }
  // 0 when disabled.
  uint16_t metrics_port() const { return admin_ ? admin_->metrics_port() : 0; }
  // Open admin and metrics connections (any thread; for tests).
  size_t admin_connections() const { return admin_ ? admin_->connections() : 0; }
  // The policy in force (loop thread only; tests may Set() one).
  PolicyHolder& policy() { return policy_; }
  // Re-reads the policy file as SIGHUP does (loop thread only).
  bool ReloadPolicy() { return policy_.Reload(&stats_); }

 private:
  Server(const ServerOptions& options, EventLoop loop, Listener listener);
  absl::Status Init();
  void Accept();
  void OnClientEvent(uint64_t id, uint32_t events);
  void DropClient(uint64_t id);
  void OnLookupDone(uint64_t client_id, uint32_t seq, const proto::Reply& reply);
  // Returns the name of the signal that asked us to stop, or nullptr.
  const char* ReadSignal();
  void Shutdown(const char* reason);

  ServerOptions options_;
  EventLoop loop_;
  Listener listener_;
  Stats stats_;
  PolicyHolder policy_{"", false};
  Limits limits_;  // before sockets_, which charges it until it is destroyed
  // After loop_: sockets and clients unregister from it when destroyed.
  SocketTable sockets_;
  Resolver resolver_;
  ClientMap clients_;
  std::unique_ptr<AdminServer> admin_;  // reads clients_, sockets_, stats_
  UniqueFd signal_fd_;
  UniqueFd stop_fd_;
  std::atomic<bool> stop_requested_{false};
  uint64_t next_client_id_ = 1;
  bool stopped_ = false;
};

}  // namespace xsock::backend
