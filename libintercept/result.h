// The core's return type: a count or an errno, converted to libc's convention (-1 and
// errno) in exactly one place, ToLibc(), which only the hooks call.
#pragma once

#include <sys/types.h>

#include <cerrno>

namespace xsock::intercept {

// A non-negative value or a positive errno, the kernel's own convention made explicit.
class Result {
 public:
  static constexpr Result Ok(ssize_t value = 0) { return Result(value); }
  static constexpr Result Err(int err) { return Result(-static_cast<ssize_t>(err)); }
  // Wraps a libc-style return: -1 means "look at errno".
  static Result FromLibc(ssize_t r) { return r < 0 ? Err(errno) : Ok(r); }

  constexpr bool ok() const { return v_ >= 0; }
  constexpr ssize_t value() const { return v_ < 0 ? -1 : v_; }
  constexpr int error() const { return v_ < 0 ? static_cast<int>(-v_) : 0; }

 private:
  explicit constexpr Result(ssize_t v) : v_(v) {}
  ssize_t v_;
};

// libc's convention: the value, or -1 with errno set.
template <class T = ssize_t>
inline T ToLibc(Result r) {
  if (r.ok()) return static_cast<T>(r.value());
  errno = r.error();
  return static_cast<T>(-1);
}

}  // namespace xsock::intercept
