// Recognising xsock channels this process did not make: descriptors inherited across
// exec (the library's memory is gone, the channel is not) and descriptors received with
// SCM_RIGHTS. The test must be cheap, because it runs at every start-up of every
// preloaded program, and must never contact xsockd for a process that holds nothing
// that could be a channel:
//
//   1. fstat: a socket (one system call per descriptor; most are not);
//   2. SO_DOMAIN AF_UNIX, SO_TYPE stream (a socket's channel) or seqpacket (a listener's);
//   3. neither end has a name: xsockd makes channels with socketpair(), whereas a
//      connection to a listening AF_UNIX socket (journald, D-Bus, X11...) has a named
//      peer;
//   4. SO_PEERCRED: the peer (the process that called socketpair) is another process.
//
// Only a descriptor that passes all four is a *candidate*; only then is xsockd asked who
// it is (its pid, SO_PEERCRED of the control connection), and only candidates whose peer
// is xsockd are adopted (attach request). So a descriptor of some other program is never
// sent to xsockd.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <functional>
#include <span>

#include "libintercept/result.h"
#include "shared/syscalls.h"

namespace xsock::intercept {

struct ChannelCandidate {
  int fd = -1;
  dev_t dev = 0;  // the socket's identity: two descriptors of one channel share it
  ino_t ino = 0;
  pid_t peer_pid = 0;
};

// Whether `fd` passes tests 1-4 above; fills *out if so.
bool ProbeChannelCandidate(const Syscalls& sys, int fd, ChannelCandidate* out);

// Calls fn(fd) for every open descriptor of this process, ascending: /proc/self/fd read
// with getdents64 into a stack buffer (no allocation), or, without /proc, every number
// below min(RLIMIT_NOFILE, 4096) that fcntl(F_GETFD) accepts.
void ForEachOpenFd(const std::function<void(int)>& fn);

// The candidates among this process's descriptors, at most out.size(); returns how many.
size_t FindChannelCandidates(const Syscalls& sys, std::span<ChannelCandidate> out);

struct AdoptOps {
  // xsockd's pid as this process sees it, or an error if it cannot be reached.
  std::function<Result()> server_pid;
  // Adopts a channel descriptor (Interceptor::AdoptInherited).
  std::function<Result(int fd)> adopt;
  // `dup` now refers to the channel already adopted as `first` (Interceptor::AfterDup).
  std::function<void(int first, int dup)> alias;
};

// Adopts the candidates whose peer is xsockd: the first descriptor of each channel is
// adopted, later ones (dup2'd stdin and stdout of an inetd-style child) become its
// duplicates. Asks server_pid() only if there is a candidate. Returns how many
// descriptors were adopted or aliased.
size_t AdoptChannels(std::span<const ChannelCandidate> candidates, const AdoptOps& ops);

}  // namespace xsock::intercept
