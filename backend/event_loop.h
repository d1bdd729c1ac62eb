// A thin epoll wrapper. Every registration carries a token naming its source and an id,
// so an event for an object freed earlier in the same batch is looked up and ignored
// instead of touching freed memory.
#pragma once

#include <sys/epoll.h>

#include <cstdint>
#include <span>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "backend/fd.h"

namespace xsock::backend {

enum class Source : uint8_t {
  kListener = 0,
  kSignal = 1,
  kStop = 2,
  kTimer = 3,
  kClient = 4,    // id: client id
  kChannel = 5,   // id: socket id; xsockd's end of the socket's channel
  kHost = 6,      // id: socket id; the host TCP socket
  kResolver = 7,  // id 0: lookups finished, 1: lookup deadline timer (backend/resolver.h)
  kAdmin = 8,     // admin socket, metrics endpoint and their connections (backend/admin.h)
};

struct Token {
  Source source;
  uint64_t id = 0;
};

uint64_t EncodeToken(Token token);
Token DecodeToken(uint64_t raw);

class EventLoop {
 public:
  static absl::StatusOr<EventLoop> Create();

  absl::Status Add(int fd, uint32_t events, Token token);
  absl::Status Modify(int fd, uint32_t events, Token token);
  // Stops watching fd (closing fd does the same).
  void Remove(int fd);
  // Waits up to timeout_ms (-1: forever). Returns the number of events or -errno.
  int Wait(std::span<epoll_event> events, int timeout_ms);

 private:
  explicit EventLoop(UniqueFd epfd) : epfd_(std::move(epfd)) {}
  UniqueFd epfd_;
};

}  // namespace xsock::backend
