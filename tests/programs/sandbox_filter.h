// The seccomp-BPF filter the sandbox tests confine themselves with, built by hand (no
// libseccomp): roughly what OpenSSH's sandbox-seccomp-filter.c allows its
// pre-authentication child (read, write, poll/ppoll/select/pselect6, close, exit, futex,
// brk, mmap & co, the clocks and sleeps, getpid/gettid/getrandom, rt_sigprocmask,
// shutdown), open/stat failing with EACCES, and SIGSYS for the process on anything else.
// Header-only, shared by tests/programs and tests/intercept.
#pragma once

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/syscall.h>

#include <cstdint>
#include <initializer_list>
#include <vector>

namespace xsock::testprog {

#if defined(__x86_64__)
inline constexpr uint32_t kSandboxArch = AUDIT_ARCH_X86_64;
#elif defined(__aarch64__)
inline constexpr uint32_t kSandboxArch = AUDIT_ARCH_AARCH64;
#else
#error "add this architecture's AUDIT_ARCH"
#endif

// As OpenSSH builds its filter: check the architecture, then one comparison per call.
// `extra`: more calls to allow (a test harness's own needs, e.g. a sanitizer runtime's).
inline std::vector<sock_filter> SandboxFilter(std::initializer_list<long> extra = {}) {
  std::vector<sock_filter> f;
  auto stmt = [&](uint16_t code, uint32_t k) { f.push_back(BPF_STMT(code, k)); };
  auto allow = [&](long nr) {
    f.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(nr), 0, 1));
    stmt(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
  };
  auto deny = [&](long nr, int err) {
    f.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, static_cast<uint32_t>(nr), 0, 1));
    stmt(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (static_cast<uint32_t>(err) & SECCOMP_RET_DATA));
  };
  stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, arch));
  f.push_back(BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, kSandboxArch, 1, 0));
  stmt(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
  stmt(BPF_LD | BPF_W | BPF_ABS, offsetof(seccomp_data, nr));
#ifdef __NR_open
  deny(__NR_open, EACCES);
#endif
  deny(__NR_openat, EACCES);
#ifdef __NR_stat
  deny(__NR_stat, EACCES);
#endif
  deny(__NR_newfstatat, EACCES);
  deny(__NR_fstat, EACCES);
  for (long nr : {
           long{__NR_read}, long{__NR_write}, long{__NR_close}, long{__NR_exit},
           long{__NR_exit_group}, long{__NR_futex}, long{__NR_brk}, long{__NR_mmap},
           long{__NR_munmap}, long{__NR_mremap}, long{__NR_madvise}, long{__NR_clock_gettime},
           long{__NR_gettimeofday}, long{__NR_clock_nanosleep}, long{__NR_nanosleep},
           long{__NR_getpid}, long{__NR_gettid}, long{__NR_getrandom}, long{__NR_rt_sigprocmask},
           long{__NR_shutdown}, long{__NR_ppoll}, long{__NR_pselect6}, long{__NR_restart_syscall},
           long{__NR_rt_sigreturn},
#ifdef __NR_poll
           long{__NR_poll},
#endif
#ifdef __NR_select
           long{__NR_select},
#endif
       }) {
    allow(nr);
  }
  for (long nr : extra) allow(nr);
  stmt(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
  return f;
}

}  // namespace xsock::testprog
