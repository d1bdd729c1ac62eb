#include "backend/unix_diag.h"

#include <linux/inet_diag.h>  // INET_DIAG_NOCOOKIE, shared by every sock_diag family
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>

#include "backend/fd.h"

namespace xsock::backend {

UnixPresence LookUpUnixSocketByNetlink(ino_t ino, uint64_t* cookie) {
  // A socket per lookup: lookups are rare (an event on a finished socket's channel), and
  // nothing is shared between servers that tests run on several threads.
  UniqueFd nl(socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG));
  if (!nl.valid()) return UnixPresence::kUnknown;
  struct {
    nlmsghdr nlh;
    unix_diag_req req;
  } msg = {};
  msg.nlh.nlmsg_len = sizeof(msg);
  msg.nlh.nlmsg_type = SOCK_DIAG_BY_FAMILY;
  msg.nlh.nlmsg_flags = NLM_F_REQUEST;  // no NLM_F_DUMP: an exact lookup by inode
  msg.nlh.nlmsg_seq = 1;
  msg.req.sdiag_family = AF_UNIX;
  msg.req.udiag_states = ~0u;
  msg.req.udiag_ino = static_cast<uint32_t>(ino);
  if (*cookie != 0) {
    std::memcpy(msg.req.udiag_cookie, cookie, sizeof(*cookie));
  } else {
    msg.req.udiag_cookie[0] = msg.req.udiag_cookie[1] = INET_DIAG_NOCOOKIE;
  }
  sockaddr_nl kernel = {};
  kernel.nl_family = AF_NETLINK;
  if (sendto(nl.get(), &msg, sizeof(msg), 0, reinterpret_cast<sockaddr*>(&kernel),
             sizeof(kernel)) != static_cast<ssize_t>(sizeof(msg))) {
    return UnixPresence::kUnknown;
  }
  alignas(nlmsghdr) char buf[1024];
  // The kernel answers synchronously, inside sendto(): the reply is already queued.
  const ssize_t n = recv(nl.get(), buf, sizeof(buf), MSG_DONTWAIT);
  if (n < static_cast<ssize_t>(sizeof(nlmsghdr))) return UnixPresence::kUnknown;
  const auto* h = reinterpret_cast<const nlmsghdr*>(buf);
  if (!NLMSG_OK(h, static_cast<size_t>(n))) return UnixPresence::kUnknown;
  if (h->nlmsg_type == NLMSG_ERROR) {
    const auto* e = static_cast<const nlmsgerr*>(NLMSG_DATA(h));
    // ENOENT: no socket has this inode; ESTALE: one has, but not the one we knew.
    if (e->error == -ENOENT || e->error == -ESTALE) return UnixPresence::kGone;
    return UnixPresence::kUnknown;
  }
  if (h->nlmsg_type != SOCK_DIAG_BY_FAMILY || h->nlmsg_len < NLMSG_LENGTH(sizeof(unix_diag_msg))) {
    return UnixPresence::kUnknown;
  }
  const auto* m = static_cast<const unix_diag_msg*>(NLMSG_DATA(h));
  if (m->udiag_ino != static_cast<uint32_t>(ino)) return UnixPresence::kUnknown;
  if (*cookie == 0) std::memcpy(cookie, m->udiag_cookie, sizeof(*cookie));
  return UnixPresence::kAlive;
}

UnixPresence LookUpUnixSocketInProc(ino_t ino) {
  // /proc/net/unix: "Num RefCount Protocol Flags Type St Inode [Path]", one socket of this
  // network namespace per line, unnamed socketpairs included.
  FILE* f = std::fopen("/proc/net/unix", "re");
  if (f == nullptr) return UnixPresence::kUnknown;
  char line[512];
  bool header = true;
  UnixPresence found = UnixPresence::kGone;
  while (std::fgets(line, sizeof(line), f) != nullptr) {
    if (std::exchange(header, false)) continue;
    unsigned long long inode = 0;
    if (std::sscanf(line, "%*s %*s %*s %*s %*s %*s %llu", &inode) == 1 &&
        inode == static_cast<unsigned long long>(ino)) {
      found = UnixPresence::kAlive;
      break;
    }
  }
  std::fclose(f);
  return found;
}

namespace {

// Whether this kernel answers unix_diag lookups. Without the unix_diag module (a minimal
// guest's initramfs, no modprobe to autoload it) sock_diag answers -ENOENT for every
// request, the same error as "no such socket": asked once about a socket that exists.
bool NetlinkAnswers() {
  static const bool answers = [] {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) return false;
    UniqueFd a(pair[0]), b(pair[1]);
    struct stat st;
    if (fstat(a.get(), &st) != 0) return false;
    uint64_t cookie = 0;
    return LookUpUnixSocketByNetlink(st.st_ino, &cookie) == UnixPresence::kAlive;
  }();
  return answers;
}

}  // namespace

UnixPresence LookUpUnixSocket(ino_t ino, uint64_t* cookie) {
  if (NetlinkAnswers()) return LookUpUnixSocketByNetlink(ino, cookie);
  return LookUpUnixSocketInProc(ino);
}

}  // namespace xsock::backend
