#include "backend/event_loop.h"

#include <cerrno>

#include "backend/errors.h"

namespace xsock::backend {

// Ids are counters that never reach 2^60, so four bits hold the source.
uint64_t EncodeToken(Token token) { return (token.id << 4) | static_cast<uint64_t>(token.source); }

Token DecodeToken(uint64_t raw) { return Token{static_cast<Source>(raw & 15), raw >> 4}; }

absl::StatusOr<EventLoop> EventLoop::Create() {
  const int fd = epoll_create1(EPOLL_CLOEXEC);
  if (fd < 0) return ErrnoError(errno, "epoll_create1");
  return EventLoop(UniqueFd(fd));
}

absl::Status EventLoop::Add(int fd, uint32_t events, Token token) {
  epoll_event ev = {};
  ev.events = events;
  ev.data.u64 = EncodeToken(token);
  if (epoll_ctl(epfd_.get(), EPOLL_CTL_ADD, fd, &ev) != 0)
    return ErrnoError(errno, "epoll_ctl add");
  return absl::OkStatus();
}

absl::Status EventLoop::Modify(int fd, uint32_t events, Token token) {
  epoll_event ev = {};
  ev.events = events;
  ev.data.u64 = EncodeToken(token);
  if (epoll_ctl(epfd_.get(), EPOLL_CTL_MOD, fd, &ev) != 0)
    return ErrnoError(errno, "epoll_ctl mod");
  return absl::OkStatus();
}

void EventLoop::Remove(int fd) { epoll_ctl(epfd_.get(), EPOLL_CTL_DEL, fd, nullptr); }

int EventLoop::Wait(std::span<epoll_event> events, int timeout_ms) {
  const int n = epoll_wait(epfd_.get(), events.data(), static_cast<int>(events.size()), timeout_ms);
  return n < 0 ? -errno : n;
}

}  // namespace xsock::backend
