#include "backend/sockopt_policy.h"

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

namespace xsock::backend {
namespace {

struct Rule {
  int level;
  int optname;
  OptAccess access;
};

constexpr Rule kRules[] = {
    {SOL_SOCKET, SO_KEEPALIVE, OptAccess::kGetSet},
    {SOL_SOCKET, SO_REUSEADDR, OptAccess::kGetSet},
    {SOL_SOCKET, SO_REUSEPORT, OptAccess::kGetSet},
    {SOL_SOCKET, SO_LINGER, OptAccess::kGetSet},
    {SOL_SOCKET, SO_RCVBUF, OptAccess::kGetSet},
    {SOL_SOCKET, SO_SNDBUF, OptAccess::kGetSet},
    {SOL_SOCKET, SO_RCVLOWAT, OptAccess::kGetSet},
    {SOL_SOCKET, SO_OOBINLINE, OptAccess::kGetSet},
    {SOL_SOCKET, SO_PRIORITY, OptAccess::kGetSet},
    {SOL_SOCKET, SO_ERROR, OptAccess::kGetOnly},
    {SOL_SOCKET, SO_TYPE, OptAccess::kGetOnly},
    {SOL_SOCKET, SO_DOMAIN, OptAccess::kGetOnly},
    {SOL_SOCKET, SO_PROTOCOL, OptAccess::kGetOnly},
    {SOL_SOCKET, SO_ACCEPTCONN, OptAccess::kGetOnly},
    // Reading them tells nothing about the host a client could not learn otherwise;
    // setting them would move traffic (device binding, source routes).
    {SOL_SOCKET, SO_BINDTODEVICE, OptAccess::kGetOnly},
    {IPPROTO_IP, IP_OPTIONS, OptAccess::kGetOnly},
    {IPPROTO_TCP, TCP_NODELAY, OptAccess::kGetSet},
    {IPPROTO_TCP, TCP_CORK, OptAccess::kGetSet},
    {IPPROTO_TCP, TCP_KEEPIDLE, OptAccess::kGetSet},
    {IPPROTO_TCP, TCP_KEEPINTVL, OptAccess::kGetSet},
    {IPPROTO_TCP, TCP_KEEPCNT, OptAccess::kGetSet},
    {IPPROTO_TCP, TCP_QUICKACK, OptAccess::kGetSet},
    {IPPROTO_TCP, TCP_USER_TIMEOUT, OptAccess::kGetSet},
    {IPPROTO_TCP, TCP_MAXSEG, OptAccess::kGetSet},
    {IPPROTO_TCP, TCP_NOTSENT_LOWAT, OptAccess::kGetSet},
    {IPPROTO_TCP, TCP_LINGER2, OptAccess::kGetSet},
    {IPPROTO_TCP, TCP_SYNCNT, OptAccess::kGetSet},
    {IPPROTO_TCP, TCP_WINDOW_CLAMP, OptAccess::kGetSet},
    {IPPROTO_TCP, TCP_DEFER_ACCEPT, OptAccess::kGetSet},
    {IPPROTO_TCP, TCP_FASTOPEN, OptAccess::kGetSet},
    {IPPROTO_TCP, TCP_INFO, OptAccess::kGetOnly},
    // Setting it would let a client pick algorithms restricted to CAP_NET_ADMIN.
    {IPPROTO_TCP, TCP_CONGESTION, OptAccess::kGetOnly},
    {IPPROTO_IP, IP_TOS, OptAccess::kGetSet},
    {IPPROTO_IP, IP_TTL, OptAccess::kGetSet},
    {IPPROTO_IPV6, IPV6_V6ONLY, OptAccess::kGetSet},
    {IPPROTO_IPV6, IPV6_TCLASS, OptAccess::kGetSet},
    {IPPROTO_IPV6, IPV6_UNICAST_HOPS, OptAccess::kGetSet},
};

// Priorities above 6 need CAP_NET_ADMIN, which xsockd may have and its client may not.
constexpr int kMaxUnprivilegedPriority = 6;

}  // namespace

OptAccess ClassifySockOpt(int level, int optname) {
  for (const Rule& rule : kRules) {
    if (rule.level == level && rule.optname == optname) return rule.access;
  }
  return OptAccess::kDenied;
}

int CheckSetSockOpt(int level, int optname, std::span<const uint8_t> value) {
  if (ClassifySockOpt(level, optname) != OptAccess::kGetSet) return ENOPROTOOPT;
  if (level == SOL_SOCKET && optname == SO_PRIORITY) {
    int priority = 0;
    if (value.size() < sizeof(priority)) return EINVAL;
    std::memcpy(&priority, value.data(), sizeof(priority));
    if (priority < 0 || priority > kMaxUnprivilegedPriority) return EPERM;
  }
  return 0;
}

}  // namespace xsock::backend
