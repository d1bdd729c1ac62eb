#include "libintercept/inherited.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <vector>

#include "libintercept/raw_syscall.h"

namespace xsock::intercept {
namespace {

int GetInt(const Syscalls& sys, int fd, int name) {
  int v = -1;
  socklen_t len = sizeof(v);
  return sys.getsockopt(fd, SOL_SOCKET, name, &v, &len) == 0 ? v : -1;
}

// An unnamed AF_UNIX address (socketpair, or an unbound end) is just the family.
// getsockname/getpeername are hooked; the raw system calls keep this out of the hooks.
bool Unnamed(int fd, bool peer) {
  sockaddr_storage ss;
  socklen_t len = sizeof(ss);
  const long r = RawSyscall(peer ? SYS_getpeername : SYS_getsockname, fd, &ss, &len);
  return r == 0 && len <= sizeof(sa_family_t);
}

struct LinuxDirent64 {
  uint64_t d_ino;
  int64_t d_off;
  unsigned short d_reclen;
  unsigned char d_type;
  char d_name[];
};

bool ScanProc(const std::function<void(int)>& fn) {
  const int dir = static_cast<int>(
      RawSyscall(SYS_openat, AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dir < 0) return false;
  alignas(8) char buf[4096];
  // Bounded: a directory of N entries takes at most N / (entries per buffer) + 1 reads.
  for (;;) {
    const long n = RawSyscall(SYS_getdents64, dir, buf, sizeof(buf));
    if (n <= 0) break;
    for (long off = 0; off < n;) {
      const auto* d = reinterpret_cast<const LinuxDirent64*>(buf + off);
      off += d->d_reclen;
      int fd = 0;
      bool digits = d->d_name[0] != '\0';
      for (const char* p = d->d_name; *p != '\0' && digits; ++p) {
        digits = *p >= '0' && *p <= '9' && fd < 100000000;
        fd = fd * 10 + (*p - '0');
      }
      if (digits && fd != dir) fn(fd);
    }
  }
  RawSyscall(SYS_close, dir);
  return true;
}

}  // namespace

bool ProbeChannelCandidate(const Syscalls& sys, int fd, ChannelCandidate* out) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return false;
  if (GetInt(sys, fd, SO_DOMAIN) != AF_UNIX) return false;
  const int type = GetInt(sys, fd, SO_TYPE);
  if (type != SOCK_STREAM && type != SOCK_SEQPACKET) return false;
  if (!Unnamed(fd, /*peer=*/false) || !Unnamed(fd, /*peer=*/true)) return false;
  ucred cred = {};
  socklen_t len = sizeof(cred);
  if (sys.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return false;
  if (cred.pid <= 0 || cred.pid == getpid()) return false;
  *out = {fd, st.st_dev, st.st_ino, cred.pid};
  return true;
}

void ForEachOpenFd(const std::function<void(int)>& fn) {
  if (ScanProc(fn)) return;
  rlimit rl;
  rlim_t limit = 1024;
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0) limit = rl.rlim_cur < 4096 ? rl.rlim_cur : 4096;
  for (int fd = 0; static_cast<rlim_t>(fd) < limit; ++fd) {
    if (RawSyscall(SYS_fcntl, fd, F_GETFD) >= 0) fn(fd);
  }
}

size_t FindChannelCandidates(const Syscalls& sys, std::span<ChannelCandidate> out) {
  size_t n = 0;
  ForEachOpenFd([&](int fd) {
    ChannelCandidate c;
    if (n < out.size() && ProbeChannelCandidate(sys, fd, &c)) out[n++] = c;
  });
  return n;
}

size_t AdoptChannels(std::span<const ChannelCandidate> candidates, const AdoptOps& ops) {
  if (candidates.empty()) return 0;
  const Result server = ops.server_pid();
  if (!server.ok()) return 0;
  std::vector<bool> ok(candidates.size(), false);
  size_t adopted = 0;
  for (size_t i = 0; i < candidates.size(); ++i) {
    const ChannelCandidate& c = candidates[i];
    if (c.peer_pid != static_cast<pid_t>(server.value())) continue;
    // A descriptor of a channel already adopted here is a duplicate of it.
    size_t first = i;
    for (size_t j = 0; j < i && first == i; ++j) {
      const ChannelCandidate& e = candidates[j];
      if (ok[j] && e.dev == c.dev && e.ino == c.ino) first = j;
    }
    if (first != i) {
      ops.alias(candidates[first].fd, c.fd);
    } else if (!ops.adopt(c.fd).ok()) {
      continue;
    }
    ok[i] = true;
    ++adopted;
  }
  return adopted;
}

}  // namespace xsock::intercept
