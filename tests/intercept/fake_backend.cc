#include "tests/intercept/fake_backend.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <stdexcept>

namespace xsock::testing {
namespace {

void Check(bool ok, const char* what) {
  if (!ok) throw std::runtime_error(std::string(what) + ": " + std::strerror(errno));
}

}  // namespace

uint64_t Fnv1a(const void* data, size_t n, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

std::string RandomBytes(size_t n, uint32_t seed) {
  std::string s(n, '\0');
  uint32_t x = seed * 2654435761u + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    s[i] = static_cast<char>(x >> 24);
  }
  return s;
}

FakeBackend::FakeBackend(Options options) : order_(options.order), socket_id_(options.socket_id) {
  const size_t size = SocketMemfdSize(order_);
  memfd_ = memfd_create("xsock-fake", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  Check(memfd_ >= 0, "memfd_create");
  Check(ftruncate(memfd_, static_cast<off_t>(size)) == 0, "ftruncate");
  base_ = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_, 0);
  Check(base_ != MAP_FAILED, "mmap");
  page_ = static_cast<SocketPage*>(base_);
  page_->magic = kSocketPageMagic;
  page_->version = kSocketPageVersion;
  page_->ring_order = order_;
  page_->socket_id = socket_id_;
  page_->state.store(static_cast<uint32_t>(options.state));
  // xsockd arms the flag in its first pass after the connect completes (an empty `out`),
  // before the app can write; a socket that starts connected starts armed.
  if (options.state == SocketState::kConnected) page_->out_data_wanted.store(1);
  Check(fcntl(memfd_, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) == 0, "seal");

  int pair[2];
  Check(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) == 0, "socketpair");
  backend_fd_ = pair[0];
  app_fd_ = pair[1];
  Check(fcntl(backend_fd_, F_SETFL, O_NONBLOCK) == 0, "O_NONBLOCK");
  kick_fd_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  Check(kick_fd_ >= 0, "eventfd");
  epoll_fd_ = epoll_create1(EPOLL_CLOEXEC);
  Check(epoll_fd_ >= 0, "epoll_create1");
  epoll_event ev = {};
  ev.events = EPOLLIN | EPOLLRDHUP | EPOLLET;
  ev.data.fd = backend_fd_;
  Check(epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, backend_fd_, &ev) == 0, "epoll_ctl channel");
  ev.events = EPOLLIN;
  ev.data.fd = kick_fd_;
  Check(epoll_ctl(epoll_fd_, EPOLL_CTL_ADD, kick_fd_, &ev) == 0, "epoll_ctl kick");
  thread_ = std::thread([this] { Run(); });
}

FakeBackend::~FakeBackend() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  Kick();
  thread_.join();
  if (backend_fd_ >= 0) close(backend_fd_);
  if (app_fd_ >= 0) close(app_fd_);
  close(kick_fd_);
  close(epoll_fd_);
  close(memfd_);
  munmap(base_, SocketMemfdSize(order_));
}

int FakeBackend::TakeAppChannel() {
  const int fd = app_fd_;
  app_fd_ = -1;
  return fd;
}

void* FakeBackend::MapForApp() const {
  void* p = mmap(nullptr, SocketMemfdSize(order_), PROT_READ | PROT_WRITE, MAP_SHARED, memfd_, 0);
  return p == MAP_FAILED ? nullptr : p;
}

void FakeBackend::Kick() {
  const uint64_t one = 1;
  (void)!write(kick_fd_, &one, sizeof(one));
}

void FakeBackend::Send(std::string bytes) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_ += bytes;
  }
  Kick();
}

void FakeBackend::Finish(int err) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    finish_requested_ = true;
    finish_err_ = err;
  }
  Kick();
}

void FakeBackend::FailWrites(int err) {
  page_->out_error.value.store(-err, std::memory_order_release);
  Kick();
}

void FakeBackend::PauseConsuming(bool paused) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    paused_ = paused;
  }
  Kick();
}

void FakeBackend::CompleteConnect(int err) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    connect_result_ = err;
  }
  Kick();
}

void FakeBackend::ShutdownChannelRead() {
  std::lock_guard<std::mutex> lock(mu_);
  if (backend_fd_ >= 0) shutdown(backend_fd_, SHUT_RD);
}

void FakeBackend::Die() {
  std::lock_guard<std::mutex> lock(mu_);
  dead_ = true;
  if (backend_fd_ >= 0) close(backend_fd_);
  backend_fd_ = -1;
}

std::string FakeBackend::Received() {
  std::lock_guard<std::mutex> lock(mu_);
  return received_;
}

size_t FakeBackend::ReceivedSize() {
  std::lock_guard<std::mutex> lock(mu_);
  return received_.size();
}

bool FakeBackend::WaitReceived(size_t n, int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                      [&] { return received_.size() >= n; });
}

bool FakeBackend::WaitProduced(int timeout_ms) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, std::chrono::milliseconds(timeout_ms),
                      [&] { return pending_.empty(); });
}

std::string FakeBackend::Describe() {
  std::lock_guard<std::mutex> lock(mu_);
  const auto in = InRing(base_, order_);
  const auto out = OutRing(base_, order_);
  int queued = -1;
  if (backend_fd_ >= 0) ioctl(backend_fd_, FIONREAD, &queued);
  return "in " + std::to_string(in.cons->load()) + ".." + std::to_string(in.prod->load()) +
         " err " + std::to_string(in.error->load()) + " | out " + std::to_string(out.cons->load()) +
         ".." + std::to_string(out.prod->load()) + " err " + std::to_string(out.error->load()) +
         " | in_token " + std::to_string(page_->in_token.load()) + " in_room_wanted " +
         std::to_string(page_->in_room_wanted.load()) + " out_data_wanted " +
         std::to_string(page_->out_data_wanted.load()) + " state " +
         std::to_string(page_->state.load()) + " | pending " + std::to_string(pending_.size()) +
         " received " + std::to_string(received_.size()) + " dirty " +
         std::to_string(channel_dirty_) + " queued-at-backend " + std::to_string(queued) +
         " passes " + std::to_string(passes_.load()) + " wakes " + std::to_string(wakes_.load());
}

void FakeBackend::Run() {
  for (;;) {
    epoll_event evs[4];
    const int n = epoll_wait(epoll_fd_, evs, 4, -1);
    if (n < 0 && errno != EINTR) return;
    bool channel_event = false;
    for (int i = 0; i < n; ++i) {
      if (evs[i].data.fd == kick_fd_) {
        uint64_t v;
        (void)!read(kick_fd_, &v, sizeof(v));
      } else {
        channel_event = true;
      }
    }
    std::lock_guard<std::mutex> lock(mu_);
    if (stop_) return;
    if (dead_) continue;
    Pass(channel_event);
    cv_.notify_all();
  }
}

void FakeBackend::SendToken() {
  // xsockd's rule: a token per 0 -> 1 transition of in_token.
  if (page_->in_token.exchange(1, std::memory_order_seq_cst) == 0) {
    (void)send(backend_fd_, &kTokenByte, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
  }
}

bool FakeBackend::Produce() {
  bool published = false;
  ring::Producer p(InRing(base_, order_));
  while (!pending_.empty()) {
    ring::Regions r =
        p.Reserve(static_cast<uint32_t>(std::min<size_t>(pending_.size(), UINT32_MAX)));
    if (r.corrupt) {
      corrupt_ = true;
      return published;
    }
    if (r.bytes == 0) {
      // Sleep until the app makes room, then look once more (it may have just done so).
      page_->in_room_wanted.store(1, std::memory_order_seq_cst);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      r = p.Reserve(static_cast<uint32_t>(std::min<size_t>(pending_.size(), UINT32_MAX)));
      if (r.bytes == 0 || r.corrupt) return published;
    }
    size_t off = 0;
    for (int i = 0; i < r.count; ++i) {
      std::memcpy(r.iov[i].iov_base, pending_.data() + off, r.iov[i].iov_len);
      off += r.iov[i].iov_len;
    }
    p.Commit(r.bytes);
    pending_.erase(0, r.bytes);
    published = true;
  }
  return published;
}

void FakeBackend::Consume() {
  if (paused_) return;
  ring::Consumer c(OutRing(base_, order_));
  for (;;) {
    ring::Regions r = c.Peek();
    if (r.corrupt) {
      corrupt_ = true;
      return;
    }
    if (r.bytes == 0) {
      page_->out_data_wanted.store(1, std::memory_order_seq_cst);
      std::atomic_thread_fence(std::memory_order_seq_cst);
      r = c.Peek();
      if (r.bytes == 0 || r.corrupt) return;
    }
    for (int i = 0; i < r.count; ++i) {
      received_.append(static_cast<const char*>(r.iov[i].iov_base), r.iov[i].iov_len);
    }
    c.Release(r.bytes);
  }
}

bool FakeBackend::OutFull() const {
  const auto refs = OutRing(base_, order_);
  return refs.prod->load(std::memory_order_acquire) - refs.cons->load(std::memory_order_relaxed) >=
         refs.size;
}

void FakeBackend::Pass(bool channel_event) {
  passes_.fetch_add(1);
  if (channel_event) channel_dirty_ = true;
  // Draining consumes wake bytes, so every drain that read something must be followed by
  // another look at the rings: a wake that arrived after this pass looked, but before the
  // drain read it, would otherwise be lost (epoll reports no edge for bytes already read).
  for (int round = 0; round < 8; ++round) {
    LookAtRings();
    if (!Drain()) break;
  }
}

void FakeBackend::LookAtRings() {
  if (connect_result_ >= 0) {
    if (connect_result_ == 0) {
      page_->state.store(static_cast<uint32_t>(SocketState::kConnected), std::memory_order_release);
    } else {
      page_->so_error.store(connect_result_, std::memory_order_release);
      page_->state.store(static_cast<uint32_t>(SocketState::kFailed), std::memory_order_release);
      page_->in_error.value.store(-connect_result_, std::memory_order_release);
      SendToken();
      shutdown(backend_fd_, SHUT_WR);
      finished_ = true;
    }
    connect_result_ = -1;
  }
  if (Produce()) SendToken();
  if (pending_.empty() && finish_requested_ && !finished_) {
    page_->in_error.value.store(finish_err_ == 0 ? kRingEof : -finish_err_,
                                std::memory_order_release);
    SendToken();
    shutdown(backend_fd_, SHUT_WR);
    finished_ = true;
  }
  Consume();
  // Re-check the token invariant on every wake (docs/channel.md).
  const auto in = InRing(base_, order_);
  if (in.prod->load(std::memory_order_relaxed) != in.cons->load(std::memory_order_acquire)) {
    SendToken();
  }
}

bool FakeBackend::Drain() {
  const auto state = static_cast<SocketState>(page_->state.load(std::memory_order_acquire));
  // Before completion the stuffing keeps a connecting descriptor unwritable; while `out`
  // is full it keeps the descriptor unwritable.
  if (!channel_dirty_ || state == SocketState::kConnecting || state == SocketState::kIdle ||
      OutFull()) {
    return false;
  }
  bool any = false;
  char buf[65536];
  for (;;) {
    const ssize_t n = read(backend_fd_, buf, sizeof(buf));
    if (n <= 0) break;
    any = true;
    drained_.fetch_add(static_cast<size_t>(n));
    for (ssize_t i = 0; i < n; ++i) {
      if (buf[i] == kWakeByte) wakes_.fetch_add(1);
    }
  }
  channel_dirty_ = false;
  return any;
}

}  // namespace xsock::testing
