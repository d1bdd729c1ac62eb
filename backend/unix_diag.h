// Whether an AF_UNIX socket still exists, asked by inode with NETLINK_SOCK_DIAG (an
// exact lookup). xsockd uses it for a finished socket whose channel end it has shut down
// both ways: that end then polls HUP for good, so its HUP no longer says "the app closed
// its end"; the release of the app's end still wakes it, and this lookup tells.
#pragma once

#include <sys/types.h>

#include <cstdint>

namespace xsock::backend {

enum class UnixPresence { kAlive, kGone, kUnknown };

// Looks the socket with inode `ino` up. `*cookie` (the kernel's socket cookie; 0: not known
// yet) is filled on the first successful lookup and checked on later ones, so that a new
// socket that reuses the inode number is not taken for the old one. kUnknown: the lookup
// itself failed (out of memory, neither lookup available).
//
// Without unix_diag in the kernel (checked once: sock_diag then answers -ENOENT for every
// socket, the same error as "gone") it scans /proc/net/unix instead, which has no cookie:
// inode numbers of sockets only repeat after the counter wraps.
UnixPresence LookUpUnixSocket(ino_t ino, uint64_t* cookie);

// The two lookups, for tests.
UnixPresence LookUpUnixSocketByNetlink(ino_t ino, uint64_t* cookie);
UnixPresence LookUpUnixSocketInProc(ino_t ino);

}  // namespace xsock::backend
