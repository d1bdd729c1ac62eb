// One control message per SOCK_SEQPACKET packet, with descriptors beside it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "shared/syscalls.h"

namespace xsock {

inline constexpr int kMaxFdsPerMessage = 4;

// Sends bytes (one packet) and fds with SCM_RIGHTS; retries EINTR. MSG_NOSIGNAL always.
// Returns 0 or -errno.
int SendPacket(const Syscalls& sys, int fd, std::span<const uint8_t> bytes,
               std::span<const int> fds, int flags = 0);

// Receives one packet into buf (resized to the packet's length) and up to
// kMaxFdsPerMessage descriptors (received with MSG_CMSG_CLOEXEC). A packet larger than
// buf's capacity, or one whose descriptors were truncated, is an error (-EMSGSIZE) and
// any descriptors received are closed. Returns the length (0 = peer closed) or -errno.
ssize_t RecvPacket(const Syscalls& sys, int fd, std::vector<uint8_t>& buf, size_t max_len,
                   std::vector<int>& fds, int flags = 0);

}  // namespace xsock
