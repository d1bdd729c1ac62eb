// xsockd's visibility endpoints, served from the event loop: the admin socket (AF_UNIX
// stream, mode 0600, one line-based request → one reply, docs/xsockctl.md) that
// `xsockctl` talks to, and the optional Prometheus metrics endpoint (HTTP/1.0 on a
// loopback TCP address, backend/metrics.h).
//
// An admin or metrics client is untrusted in the ways that matter to the loop: every
// descriptor is nonblocking, a request is at most kMaxAdminRequest / kMaxHttpRequest
// bytes, a connection that has not finished its request and read its reply within the
// deadline is closed, and at most kMaxAdminConnections are open at once (more are
// accepted and closed at once). None of them can hold the loop.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "backend/control.h"
#include "backend/event_loop.h"
#include "backend/fd.h"
#include "backend/listener.h"
#include "backend/socket_table.h"
#include "backend/stats.h"

namespace xsock::backend {

inline constexpr char kDefaultAdminSocketPath[] = "/run/xsock/xsockd-admin.sock";
inline constexpr size_t kMaxAdminRequest = 512;
inline constexpr size_t kMaxHttpRequest = 4096;
inline constexpr size_t kMaxAdminConnections = 16;

struct AdminOptions {
  std::string socket_path = kDefaultAdminSocketPath;  // "" : no admin socket
  // "" : no metrics endpoint. Otherwise what ParseMetricsAddress accepted.
  std::string metrics_address;
  bool metrics_allow_remote = false;
  std::chrono::milliseconds deadline{5000};  // per connection: request read and reply sent
};

using ClientMap = absl::flat_hash_map<uint64_t, std::unique_ptr<ControlClient>>;

// What the answers are made of; all owned by the server, read on the loop's thread only.
struct AdminSources {
  const Stats* stats = nullptr;
  const SocketTable* sockets = nullptr;
  const ClientMap* clients = nullptr;
};

// ---- The answers, as tables (pure; unit-tested without sockets). ----

struct Cell {
  std::string text;
  bool number = false;  // JSON: unquoted
};
struct Table {
  std::vector<std::string> columns;
  std::vector<std::vector<Cell>> rows;
};

Table ClientsTable(const AdminSources& src);
// client: only that client's sockets.
Table SocketsTable(const AdminSources& src, std::optional<uint64_t> client);
// Two columns, counter and value.
Table StatsTable(const AdminSources& src);

// Header line, then one line per row; cells separated by one tab, tabs/newlines/
// backslashes in a cell escaped as \t \n \\ (so a line is always one row).
std::string RenderText(const Table& t);
// A JSON array of objects keyed by column name; as_object: the two-column counter table as
// one object {"name": value, ...}.
std::string RenderJson(const Table& t, bool as_object = false);

// The whole reply to one admin request line (without its newline): "ok\n" + body, or
// "error <message>\n".
std::string AnswerAdmin(std::string_view request, const AdminSources& src);

// ---- The endpoints. ----

class AdminServer {
 public:
  // Opens the admin socket (unless options.socket_path is empty) and the metrics listener
  // (unless options.metrics_address is empty) and registers them with the loop.
  static absl::StatusOr<std::unique_ptr<AdminServer>> Create(const AdminOptions& options,
                                                             EventLoop* loop, AdminSources src);
  ~AdminServer();
  AdminServer(const AdminServer&) = delete;
  AdminServer& operator=(const AdminServer&) = delete;

  // Events with Source::kAdmin.
  void OnEvent(uint64_t id, uint32_t events);
  // Closes everything and removes the admin socket file (if still ours).
  void Close();

  // "" if disabled.
  std::string admin_path() const { return admin_ ? admin_->path() : ""; }
  // The metrics endpoint's bound port (0 if disabled); useful with port 0.
  uint16_t metrics_port() const { return metrics_port_; }
  // Open admin and metrics connections; safe to read from any thread (tests).
  size_t connections() const { return open_.load(std::memory_order_relaxed); }

 private:
  enum class Kind { kAdmin, kMetrics };
  struct Conn {
    Kind kind;
    UniqueFd fd;
    std::string in;
    std::string out;
    size_t sent = 0;
    bool replying = false;
    bool unauthorized = false;  // admin peer neither root nor xsockd's user: refused
    std::chrono::steady_clock::time_point deadline;
  };

  AdminServer(const AdminOptions& options, EventLoop* loop, AdminSources src)
      : options_(options), loop_(loop), src_(src) {}
  absl::Status Init();
  void Accept(Kind kind, int listen_fd);
  void OnConn(uint64_t id, uint32_t events);
  // Reads what is there; true once the request is complete (or over the bound: then the
  // reply is an error).
  void ReadRequest(uint64_t id, Conn& c);
  void StartReply(uint64_t id, Conn& c, std::string reply);
  // Writes what the socket takes; closes the connection when all is sent.
  void WriteReply(uint64_t id, Conn& c);
  void CloseConn(uint64_t id);
  void OnTimer();
  void ArmTimer();

  AdminOptions options_;
  EventLoop* loop_;
  AdminSources src_;
  std::optional<Listener> admin_;
  UniqueFd metrics_;
  uint16_t metrics_port_ = 0;
  UniqueFd timer_;
  bool timer_armed_ = false;
  absl::flat_hash_map<uint64_t, Conn> conns_;
  std::atomic<size_t> open_{0};  // conns_.size(), for connections()
  uint64_t next_id_ = kFirstConnId;
  static constexpr uint64_t kAdminListenerId = 0;
  static constexpr uint64_t kMetricsListenerId = 1;
  static constexpr uint64_t kTimerId = 2;
  static constexpr uint64_t kFirstConnId = 16;
};

}  // namespace xsock::backend
