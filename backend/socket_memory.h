// The memory one routed socket shares with the application: a sealed memfd holding
// [SocketPage][in ring][out ring], created, initialised and mapped once by xsockd.
#pragma once

#include <cstdint>

#include "absl/status/statusor.h"
#include "backend/fd.h"
#include "shared/socket_page.h"

namespace xsock::backend {

class SocketMemory {
 public:
  // Creates a memfd of SocketMemfdSize(order) bytes, writes the immutable page header and
  // the app's process-shared robust mutexes, seals the size and maps it.
  static absl::StatusOr<SocketMemory> Create(uint64_t socket_id, uint32_t order);

  SocketMemory(SocketMemory&& other) noexcept;
  SocketMemory& operator=(SocketMemory&&) = delete;
  SocketMemory(const SocketMemory&) = delete;
  ~SocketMemory();

  void* base() const { return base_; }
  SocketPage* page() const { return static_cast<SocketPage*>(base_); }
  uint32_t order() const { return order_; }
  // The memfd, kept open so that attach can hand it out again.
  int fd() const { return fd_.get(); }

 private:
  SocketMemory(UniqueFd fd, void* base, size_t size, uint32_t order)
      : fd_(std::move(fd)), base_(base), size_(size), order_(order) {}

  UniqueFd fd_;
  void* base_ = nullptr;
  size_t size_ = 0;
  uint32_t order_ = 0;
};

}  // namespace xsock::backend
