// Who a local client is, as the kernel says: SO_PEERCRED of its control connection and,
// for that pid, /proc (executable, network namespace, cgroup). Nothing here comes from
// what the client sends.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <cstdint>
#include <string>

namespace xsock::backend {

struct ClientIdentity {
  pid_t pid = 0;
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  // readlink of /proc/PID/exe; "" when unknown (pid gone, or not readable).
  std::string exe;
  // Inode of /proc/PID/ns/net (the namespace's identity, as `lsns` shows it); 0 if unknown.
  uint64_t netns = 0;
  // The cgroup v2 path ("0::/..." line of /proc/PID/cgroup), else the first line's path;
  // "" if unknown.
  std::string cgroup;
  // False when the pid had exited (or was not visible) when /proc was read: then exe,
  // netns and cgroup stay empty/0, and only the SO_PEERCRED fields are known.
  bool proc_read = false;
};

// The identity of the peer of a connected AF_UNIX socket. SO_PEERCRED records the peer's
// credentials at connect() time, so uid/gid/pid are the kernel's even if the process
// changed them since. The /proc part is read at once (at accept): a pid can exit and be
// reused, so a later read could describe another process; reading once, immediately,
// narrows that window to the time between the client's connect() and our accept() — a
// process that exits in that window leaves its fields empty (proc_read false), and a
// reused pid inside it cannot be told apart from /proc alone (a pidfd from SO_PEERPIDFD
// would, on Linux 6.5+).
ClientIdentity PeerIdentity(int fd);

// The /proc part for a pid (fills exe, netns, cgroup, proc_read); pid, uid and gid are
// kept as given. `proc` is the procfs root (tests may pass another).
void ReadProcIdentity(ClientIdentity* id, const std::string& proc = "/proc");

}  // namespace xsock::backend
