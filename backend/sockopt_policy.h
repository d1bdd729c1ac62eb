// Which socket options a client may use on its host socket. xsockd runs with more
// privilege than its clients (often root), so options that need a capability or that
// change where traffic goes (SO_BINDTODEVICE, SO_MARK, IP_TRANSPARENT, TCP_REPAIR, ...)
// are refused with ENOPROTOOPT until a policy layer decides otherwise.
#pragma once

#include <cstdint>
#include <span>

namespace xsock::backend {

enum class OptAccess {
  kDenied,   // ENOPROTOOPT
  kGetOnly,  // getsockopt allowed; setsockopt gets ENOPROTOOPT
  kGetSet,
};

OptAccess ClassifySockOpt(int level, int optname);

// 0 if a setsockopt of this value may reach the host socket, else a positive errno.
// Checks the access class and option-specific limits.
int CheckSetSockOpt(int level, int optname, std::span<const uint8_t> value);

}  // namespace xsock::backend
