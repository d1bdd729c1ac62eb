// Test-side helpers for xsockd: an in-process server on a temporary socket path, a raw
// control client, the app side of one routed socket (docs/channel.md implemented as the
// library would: rings, tokens, wake bytes, stuffing), and host-side TCP helpers.
//
// Catch2 v2 assertions are not thread-safe: helpers used from helper threads return
// values instead of asserting.
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "backend/fd.h"
#include "backend/server.h"
#include "shared/protocol.h"
#include "shared/socket_page.h"

namespace xsock::testing {

using backend::UniqueFd;
using Clock = std::chrono::steady_clock;

// Generous bound for anything that must happen; only reached when something is broken.
inline constexpr int kTimeoutMs = 10000;

// A fresh directory under /tmp, removed with everything in it.
class TempDir {
 public:
  TempDir();
  ~TempDir();
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Captures xsockd's log lines (thread-safe) for the lifetime of the object.
class LogCapture {
 public:
  LogCapture();
  ~LogCapture();
  // Waits until a line containing every fragment appears; returns it ("" on timeout).
  std::string WaitFor(std::vector<std::string> fragments, int timeout_ms = kTimeoutMs);
  std::vector<std::string> Lines();

 private:
  std::mutex mu_;
  std::vector<std::string> lines_;
};

// xsockd running in this process: Server::Run() in a thread, on <tempdir>/run/xsockd.sock.
class TestServer {
 public:
  explicit TestServer(uint32_t ring_order = kDefaultRingOrder);
  // With the admin socket at <tempdir>/run/xsockd-admin.sock and, if metrics, the metrics
  // endpoint on 127.0.0.1 (a free port).
  struct Visibility {
    bool admin = true;
    bool metrics = false;
    int deadline_ms = 5000;  // admin/metrics connection deadline
  };
  explicit TestServer(Visibility visibility, uint32_t ring_order = kDefaultRingOrder);
  ~TestServer();
  const std::string& path() const { return path_; }
  std::string admin_path() const { return server_->admin_path(); }
  uint16_t metrics_port() const { return server_->metrics_port(); }
  size_t admin_connections() const { return server_->admin_connections(); }

 private:
  TempDir dir_;
  std::string path_;
  std::unique_ptr<backend::Server> server_;
  std::thread thread_;
};

// A control connection driven by hand.
class Control {
 public:
  explicit Control(const std::string& path);
  int fd() const { return fd_.get(); }

  struct Answer {
    proto::Reply reply;
    std::vector<UniqueFd> fds;
  };
  // Sends one request (with fds) and waits for its reply.
  Answer Call(const proto::Request& req, std::span<const int> fds = {});
  template <class T>
  T CallAs(const proto::Request& req, std::vector<UniqueFd>* fds = nullptr,
           std::span<const int> send_fds = {}) {
    Answer a = Call(req, send_fds);
    if (fds != nullptr) *fds = std::move(a.fds);
    return std::get<T>(a.reply);
  }
  proto::HelloReply Hello(uint32_t caps = proto::kAllCaps);
  proto::StatsReply Stats();
  // Sends raw bytes as one packet.
  void SendRaw(std::span<const uint8_t> bytes, std::span<const int> fds = {});
  // Whether xsockd closes the connection within timeout_ms.
  bool WaitDisconnected(int timeout_ms = kTimeoutMs);

 private:
  UniqueFd fd_;
  uint32_t seq_ = 1;
};

// The app's side of one routed socket.
class AppSocket {
 public:
  // socket request; maps the memfd. ring_order 0: xsockd's default.
  static std::unique_ptr<AppSocket> Create(Control& ctl, int domain, uint32_t ring_order = 0);
  // Adopts a channel end and a memfd (e.g. from attach).
  AppSocket(UniqueFd channel, UniqueFd memfd, uint64_t id, uint32_t order);
  ~AppSocket();

  // Stuffs the channel (as the library does before connect) and sends connect. Returns the
  // reply's err.
  int Connect(Control& ctl, const proto::SockAddr& addr);
  // Waits for the channel to become writable (connect completion), returns page state.
  SocketState WaitConnectDone(int timeout_ms = kTimeoutMs);

  // docs/channel.md, app side. Return bytes moved, 0 (EOF, Read only) or -errno
  // (-ETIMEDOUT when timeout_ms passes; -EAGAIN when nonblocking and not ready).
  ssize_t Write(const void* buf, size_t len, int timeout_ms = kTimeoutMs);
  ssize_t Read(void* buf, size_t len, int timeout_ms = kTimeoutMs);
  // Loops Write until all is written; false on error/timeout.
  bool WriteAll(const void* buf, size_t len, int timeout_ms = kTimeoutMs);
  void set_nonblocking(bool nb) { nonblocking_ = nb; }

  short Poll(short events, int timeout_ms = 0);  // revents of the channel
  // Indices, flags and channel readiness, for failure messages.
  std::string Describe();
  SocketPage* page() const { return static_cast<SocketPage*>(base_); }
  void* base() const { return base_; }
  int channel() const { return channel_.get(); }
  int memfd() const { return memfd_.get(); }
  uint64_t id() const { return id_; }
  uint32_t order() const { return order_; }
  // Closes the app's channel end (the socket's last reference, unless duplicated).
  void CloseChannel() { channel_.reset(); }
  void Stuff();
  // Wake bytes whose send failed (EAGAIN: the channel was stuffed).
  int lost_wakes() const { return lost_wakes_.load(); }

 private:
  void SendByte(char b);
  int RecvToken(Clock::time_point deadline);
  bool WaitFor(short events, Clock::time_point deadline);

  UniqueFd channel_;
  UniqueFd memfd_;
  void* base_ = nullptr;
  size_t size_ = 0;
  uint64_t id_ = 0;
  uint32_t order_ = 0;
  bool nonblocking_ = false;
  std::atomic<int> lost_wakes_{0};
};

// ---- Host side ----

struct TcpListener {
  UniqueFd fd;
  int family = AF_INET;
  uint16_t port = 0;
  // Listens on 127.0.0.1 or ::1, ephemeral port.
  static TcpListener Open(int family, int backlog = 16);
  proto::SockAddr Addr() const;
  // Accepts one connection (blocking fd) or returns an invalid fd on timeout.
  UniqueFd Accept(int timeout_ms = kTimeoutMs);
};

proto::SockAddr LoopbackAddr(int family, uint16_t port);
// A loopback port nothing listens on (bound, then closed).
uint16_t ClosedPort(int family);

std::vector<uint8_t> Pattern(size_t n, uint64_t seed);
// Equal content, reported without dumping the bytes: "size 3 vs 5" or "differ at 17".
std::string Diff(std::span<const uint8_t> a, std::span<const uint8_t> b);
inline bool Same(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  return Diff(a, b).empty();
}
uint64_t Fnv1a(std::span<const uint8_t> data, uint64_t h = 0xcbf29ce484222325ull);

// Blocking host-side I/O with an overall timeout. Return false on error/timeout.
bool SendAll(int fd, std::span<const uint8_t> data, int timeout_ms = kTimeoutMs);
// Receives until EOF; *err gets 0, or the errno that ended the stream (e.g. ECONNRESET).
std::vector<uint8_t> RecvToEof(int fd, int* err, int timeout_ms = kTimeoutMs);
bool RecvExactly(int fd, std::span<uint8_t> out, int timeout_ms = kTimeoutMs);

// A thread joined when the scope ends. If the scope is left by a failed REQUIRE, `unblock`
// (a socket) is shut down first so that a thread blocked on it returns promptly.
class ScopedThread {
 public:
  ScopedThread() = default;
  template <class F>
  explicit ScopedThread(F f, int unblock = -1) : thread_(std::move(f)), unblock_(unblock) {}
  ScopedThread(ScopedThread&&) = default;
  ScopedThread& operator=(ScopedThread&& other) {
    join();
    thread_ = std::move(other.thread_);
    unblock_ = other.unblock_;
    return *this;
  }
  ~ScopedThread() {
    if (std::uncaught_exceptions() > 0 && unblock_ >= 0) shutdown(unblock_, SHUT_RDWR);
    join();
  }
  void join() {
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::thread thread_;
  int unblock_ = -1;
};

// Polls a predicate until it holds or timeout_ms passes.
template <class F>
bool Eventually(F pred, int timeout_ms = kTimeoutMs) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!pred()) {
    if (Clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  return true;
}

}  // namespace xsock::testing
