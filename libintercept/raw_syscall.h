// System calls that do not go through libc's syscall(): libxsock.so hooks syscall()
// itself (hooks_syscall.cc), so the library's own raw calls — the start-up stand-ins of
// real_calls.cc, the channel reads and writes, the /proc scan — must not re-enter it.
// Same convention as syscall(2): the result, or -1 with errno set.
#pragma once

#include <cerrno>
#include <type_traits>

namespace xsock::intercept {

#if defined(__x86_64__) || defined(__aarch64__)
#define XSOCK_HAVE_RAW_SYSCALL 1

inline long RawSyscall6(long nr, long a1, long a2, long a3, long a4, long a5, long a6) noexcept {
  long ret;
#if defined(__x86_64__)
  register long r10 __asm__("r10") = a4;
  register long r8 __asm__("r8") = a5;
  register long r9 __asm__("r9") = a6;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(nr), "D"(a1), "S"(a2), "d"(a3), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
#else
  register long x8 __asm__("x8") = nr;
  register long x0 __asm__("x0") = a1;
  register long x1 __asm__("x1") = a2;
  register long x2 __asm__("x2") = a3;
  register long x3 __asm__("x3") = a4;
  register long x4 __asm__("x4") = a5;
  register long x5 __asm__("x5") = a6;
  __asm__ volatile("svc 0"
                   : "+r"(x0)
                   : "r"(x8), "r"(x1), "r"(x2), "r"(x3), "r"(x4), "r"(x5)
                   : "memory");
  ret = x0;
#endif
  // The kernel returns -errno in [-4095, -1].
  if (static_cast<unsigned long>(ret) > -4096UL) {
    errno = static_cast<int>(-ret);
    return -1;
  }
  return ret;
}

#else
// Elsewhere syscall() is not hooked, so libc's own is safe to use.
#define XSOCK_HAVE_RAW_SYSCALL 0
}  // namespace xsock::intercept
#include <unistd.h>
namespace xsock::intercept {
inline long RawSyscall6(long nr, long a1, long a2, long a3, long a4, long a5, long a6) noexcept {
  return ::syscall(nr, a1, a2, a3, a4, a5, a6);
}
#endif

// Any argument type that fits a machine word (descriptors, sizes, pointers).
template <class T>
inline long SyscallArg(T v) noexcept {
  if constexpr (std::is_pointer_v<T>) {
    return reinterpret_cast<long>(v);
  } else {
    return static_cast<long>(v);
  }
}

template <class... A>
inline long RawSyscall(long nr, A... args) noexcept {
  static_assert(sizeof...(A) <= 6, "at most six system call arguments");
  long a[6] = {SyscallArg(args)...};
  return RawSyscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
}

}  // namespace xsock::intercept
