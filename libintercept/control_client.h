// The per-process control connection to xsockd (docs/channel.md "Objects"): AF_UNIX
// SOCK_SEQPACKET, strictly request -> reply, serialised by a mutex. Opened on first use
// (the first routed connect), reopened after fork, after xsockd went away, or after the
// application closed its descriptor behind our back.
//
// The descriptor is kept out of the application's way: it is moved to a high number
// (programs that expect socket() or open() to return the lowest free numbers still get
// them, and a number they pick for dup2 rarely collides), it is
// registered in OwnFds so the close_range/closefrom hooks step around it, and before
// every use it is checked to still be the socket we connected (st_dev/st_ino recorded at
// connect): if the application closed it with a raw system call and the number now
// holds one of its own files, the connection is forgotten and a new one opened, so no
// protocol byte is ever written into the application's descriptor.
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "shared/protocol.h"
#include "shared/syscalls.h"

namespace xsock::intercept {

class ControlClient {
 public:
  // How long one reply may take before the connection is given up (xsockd hung).
  static constexpr int kReplyTimeoutMs = 10000;

  ControlClient(const Syscalls& sys, std::string path);
  ~ControlClient();
  ControlClient(const ControlClient&) = delete;
  ControlClient& operator=(const ControlClient&) = delete;

  struct Response {
    proto::Reply reply;
    std::vector<int> fds;     // descriptors that came with it (close-on-exec), caller owns
    uint64_t generation = 0;  // the connection that carried it (see generation())
  };

  // Sends `req` with `fds` and waits for its reply, opening the connection (with hello)
  // first if needed. Unavailable: xsockd cannot be reached (the message says where and
  // why, e.g. "cannot reach xsockd at /run/xsock/xsockd.sock (ENOENT)"). Any other error
  // is a broken exchange; the connection is dropped so the next call starts afresh.
  absl::StatusOr<Response> Call(const proto::Request& req, std::span<const int> fds = {});

  // Call() for a request naming socket `socket_id`. If the socket is not known on the
  // current connection (`known_on` differs from its generation), first attaches it by
  // passing its channel `channel_fd`; both exchanges happen under one lock hold. A failed
  // attach comes back as its AttachReply (err set); the caller records
  // Response::generation as the socket's new `known_on`.
  absl::StatusOr<Response> CallForSocket(const proto::Request& req, uint64_t socket_id,
                                         int channel_fd, uint64_t known_on);

  // Identifies the current connection: xsockd honours a socket id only on the connection
  // that created or attached it, so a socket remembers the generation it is known on.
  // Each new connection gets a new value; 0 means none was ever opened.
  uint64_t generation();

  // Opens the connection now if it is not open (e.g. before chroot() hides xsockd's
  // socket path). Unavailable if xsockd cannot be reached.
  absl::Status Open();

  // The application is closing or replacing descriptor `fd`; if it is ours, forget it
  // (without closing it: the application's call does that).
  void ForgetIfOurs(int fd);
  // Same for every descriptor in [first, last] (close_range).
  void ForgetIfInRange(unsigned first, unsigned last);
  // Cheap test used by the close/dup hooks.
  bool IsOurs(int fd) const { return fd >= 0 && fd_seen_.load(std::memory_order_relaxed) == fd; }

  // pthread_atfork child handler: the mutex may be held by a thread that does not exist
  // in the child, and the connection belongs to the parent.
  void AfterForkChild();

  const std::string& path() const { return path_; }

  // The pid of the process at the other end of the connection (SO_PEERCRED, as seen from
  // this process's pid namespace), opening it first if needed. Used to recognise
  // channels xsockd made: their peer is the same process.
  absl::StatusOr<pid_t> ServerPid();

  // The lowest number the connection is moved to: min(RLIMIT_NOFILE, 1024) - 64, or no
  // move (-1) when the limit is too small to leave room below it.
  static int HighFdFloor();

 private:
  // Whether fd_ still refers to the socket we connected.
  bool StillOursLocked() const;
  absl::Status EnsureOpenLocked();
  absl::StatusOr<Response> ExchangeLocked(const proto::Request& req, std::span<const int> fds);
  void DropLocked(bool close_fd);
  // Attaches socket `socket_id` (channel `channel_fd`) to the open connection. Returns
  // nullopt on success, else the reply to hand back.
  absl::StatusOr<std::optional<Response>> AttachLocked(uint64_t socket_id, int channel_fd);

  const Syscalls& sys_;
  const std::string path_;
  pthread_mutex_t mu_;
  int fd_ = -1;
  std::atomic<int> fd_seen_{-1};
  dev_t dev_ = 0;  // identity of fd_'s socket, recorded at connect
  ino_t ino_ = 0;
  pid_t server_pid_ = 0;
  pid_t pid_ = 0;
  uint32_t seq_ = 0;
  uint64_t generation_ = 0;
  uint64_t opened_ = 0;
};

}  // namespace xsock::intercept
