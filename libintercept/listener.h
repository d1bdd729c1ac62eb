// The app side of a listening socket's listener channel (docs/channel.md, "Bound and
// listening sockets"): receiving one accepted connection, and keeping the descriptor
// unwritable as a listening TCP socket is. Nothing here touches the fd table or xsockd's
// control connection, so tests drive it with a socketpair.
#pragma once

#include "libintercept/result.h"
#include "shared/protocol.h"
#include "shared/syscalls.h"

namespace xsock::intercept {

// One connection taken off a listener channel. The descriptors are the caller's, both
// close-on-exec.
struct AcceptedConnection {
  int channel = -1;
  int memfd = -1;
  proto::AcceptRecord record;
};

// Receives one AcceptRecord with its two descriptors from the listener channel `fd`,
// blocking or not as the descriptor is (the kernel then gives accept()'s EAGAIN, EINTR
// and SO_RCVTIMEO behaviour). A record that is malformed, or arrives without exactly its
// two descriptors, is dropped with everything that came with it: ECONNABORTED, or EMFILE
// if the kernel could not install the descriptors (MSG_CTRUNC). The channel at end of
// stream (listener shut down, or xsockd went away) gives EINVAL, as accept() on a TCP
// socket that no longer listens.
Result ReceiveAccepted(const Syscalls& sys, int fd, AcceptedConnection* out);

// Fills the listener channel's send queue (with SO_SNDBUF at its minimum) so the
// descriptor never polls writable; xsockd never reads it. Returns 0 or -errno.
int MakeUnwritable(const Syscalls& sys, int fd);

}  // namespace xsock::intercept
