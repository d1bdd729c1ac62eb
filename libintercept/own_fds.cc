#include "libintercept/own_fds.h"

#include <algorithm>
#include <atomic>

namespace xsock::intercept {
namespace {

// -1: free. constinit: usable from the first hook call, never destroyed.
constinit std::atomic<int> g_slots[OwnFds::kSlots] = {-1, -1, -1, -1, -1, -1, -1, -1};

}  // namespace

void OwnFds::Add(int fd) noexcept {
  if (fd < 0) return;
  for (auto& slot : g_slots) {
    int expected = -1;
    if (slot.compare_exchange_strong(expected, fd, std::memory_order_acq_rel)) return;
  }
}

void OwnFds::Remove(int fd) noexcept {
  if (fd < 0) return;
  for (auto& slot : g_slots) {
    int expected = fd;
    if (slot.compare_exchange_strong(expected, -1, std::memory_order_acq_rel)) return;
  }
}

size_t OwnFds::Snapshot(std::span<int, kSlots> out) noexcept {
  size_t n = 0;
  for (auto& slot : g_slots) {
    const int fd = slot.load(std::memory_order_acquire);
    if (fd >= 0) out[n++] = fd;
  }
  std::sort(out.begin(), out.begin() + static_cast<std::ptrdiff_t>(n));
  return n;
}

}  // namespace xsock::intercept
