// A fake xsockd for one socket: a thread that plays the backend's side of
// docs/channel.md on a socketpair and a memfd holding a SocketPage. It produces into
// `in` (with readiness tokens and in_room_wanted), consumes `out` (with out_data_wanted),
// drains the channel only when `out` has room, and can report EOF, errors, a finished
// connect, or die. It is purely event driven, like xsockd: a wake-up the app forgets to
// send shows up as a stall (and a test timeout), not as a silent retry.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>

#include "shared/socket_page.h"

namespace xsock::testing {

class FakeBackend {
 public:
  struct Options {
    uint32_t order = kMinRingOrder;
    uint64_t socket_id = 7;
    SocketState state = SocketState::kConnected;
  };
  explicit FakeBackend(Options options);
  FakeBackend() : FakeBackend(Options()) {}
  ~FakeBackend();
  FakeBackend(const FakeBackend&) = delete;
  FakeBackend& operator=(const FakeBackend&) = delete;

  // The app's end of the channel (ownership passes to the caller) and the memfd.
  int TakeAppChannel();
  int memfd() const { return memfd_; }
  // A fresh mapping of the socket memory for the app side.
  void* MapForApp() const;
  uint32_t order() const { return order_; }
  uint64_t socket_id() const { return socket_id_; }
  SocketPage* page() const { return page_; }

  // Host -> app bytes, produced into `in` as room allows.
  void Send(std::string bytes);
  // After everything sent so far: end of stream (err 0) or an error (positive errno),
  // then shutdown(SHUT_WR) of the backend end, as xsockd does on host FIN/RST.
  void Finish(int err = 0);
  // Host writes fail from now on: out_error = -err.
  void FailWrites(int err);
  // The host stops (true) or resumes (false) reading: `out` is not consumed meanwhile.
  void PauseConsuming(bool paused);
  // The host connect finished: err 0 connects, else kFailed with so_error = err.
  void CompleteConnect(int err);
  // Sets the state word directly (e.g. kConnecting when a connect request arrives).
  void SetState(SocketState s) { page_->state.store(static_cast<uint32_t>(s)); }
  // Shuts the backend end of the channel down for reading, which shuts the app end down
  // for sending: with Finish() before it, the app end polls POLLHUP, as a TCP socket
  // whose two directions are both closed (the behaviour proposed for xsockd once the
  // app's SHUT_WR is flushed and `in` has ended, or after a reset).
  void ShutdownChannelRead();
  // xsockd dies: its end of the channel closes and nothing more happens.
  void Die();

  // Bytes consumed from `out` so far.
  std::string Received();
  size_t ReceivedSize();
  // Waits until at least n bytes were consumed; false on timeout.
  bool WaitReceived(size_t n, int timeout_ms);
  // Waits until every byte given to Send() is in `in` (or consumed); false on timeout.
  bool WaitProduced(int timeout_ms);
  // Wake bytes and stuffing bytes drained from the channel so far.
  size_t wakes() const { return wakes_.load(); }
  size_t drained() const { return drained_.load(); }
  // Passes over the socket (each one is a reaction to an event).
  size_t passes() const { return passes_.load(); }
  bool saw_corrupt_index() const { return corrupt_.load(); }
  // The page's indices and flags and the backend's queues, for failure messages.
  std::string Describe();

 private:
  void Run();
  void Pass(bool channel_event);
  void LookAtRings();
  bool Drain();  // true if it read anything
  void Kick();
  void SendToken();
  bool Produce();  // true if anything was published
  void Consume();
  bool OutFull() const;

  const uint32_t order_;
  const uint64_t socket_id_;
  int memfd_ = -1;
  void* base_ = nullptr;
  SocketPage* page_ = nullptr;
  int backend_fd_ = -1;
  int app_fd_ = -1;
  int kick_fd_ = -1;  // eventfd
  int epoll_fd_ = -1;
  std::thread thread_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::string pending_;   // to produce into `in`
  std::string received_;  // consumed from `out`
  bool finish_requested_ = false;
  int finish_err_ = 0;
  bool finished_ = false;
  int connect_result_ = -1;  // -1: none pending
  bool paused_ = false;
  bool dead_ = false;
  bool stop_ = false;
  bool channel_dirty_ = false;

  std::atomic<size_t> wakes_{0};
  std::atomic<size_t> drained_{0};
  std::atomic<size_t> passes_{0};
  std::atomic<bool> corrupt_{false};
};

// FNV-1a, for comparing streams by content.
uint64_t Fnv1a(const void* data, size_t n, uint64_t h = 1469598103934665603ull);
// Deterministic pseudo-random bytes.
std::string RandomBytes(size_t n, uint32_t seed);

}  // namespace xsock::testing
