// Descriptors the library itself keeps open in the application's process (the control
// connection to xsockd), so that close_range() and closefrom() can step around them:
// OpenSSH and many daemons call closefrom(3) before or after fork, which would otherwise
// close our connection under us (and we would reconnect, losing every attachment).
// A fixed handful of lock-free slots: the hooks read them on every close_range call.
#pragma once

#include <cstddef>
#include <span>

namespace xsock::intercept {

class OwnFds {
 public:
  static constexpr size_t kSlots = 8;
  // Registers `fd` (a full table is ignored: the descriptor is then only unprotected).
  static void Add(int fd) noexcept;
  static void Remove(int fd) noexcept;
  // Copies the registered descriptors into `out`, ascending; returns how many.
  static size_t Snapshot(std::span<int, kSlots> out) noexcept;
};

// Calls fn(a, b) for each maximal sub-range [a, b] of [first, last] that contains none of
// `skip` (ascending, may hold values outside the range), in ascending order; stops at the
// first call returning non-zero and returns that value, else 0. first <= last.
template <class Fn>
int ForEachRangeSkipping(unsigned first, unsigned last, std::span<const int> skip, Fn&& fn) {
  unsigned a = first;
  for (int s : skip) {
    if (s < 0) continue;
    const unsigned u = static_cast<unsigned>(s);
    if (u < a || u > last) continue;
    if (u > a) {
      if (const int r = fn(a, u - 1); r != 0) return r;
    }
    if (u == last) return 0;
    a = u + 1;
  }
  return fn(a, last);
}

}  // namespace xsock::intercept
