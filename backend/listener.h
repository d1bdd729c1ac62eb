// The control socket's place in the filesystem: a listening AF_UNIX socket (SOCK_SEQPACKET
// for the control socket; the admin socket is SOCK_STREAM, mode 0600) at a path whose directory is
// checked (or created 0755), a stale socket file replaced only when nothing answers on it, and the
// file removed again on exit if it is still ours.
#pragma once

#include <sys/socket.h>
#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"
#include "backend/fd.h"

namespace xsock::backend {

class Listener {
 public:
  // Binds and listens at path (nonblocking, close-on-exec). Errors name the path and the
  // errno, e.g. "another xsockd is already listening on /run/xsock/xsockd.sock".
  // mode: the socket file's permissions; type: SOCK_SEQPACKET or SOCK_STREAM (also what
  // the stale-file probe connects with).
  static absl::StatusOr<Listener> Open(const std::string& path, mode_t mode = 0666,
                                       int type = SOCK_SEQPACKET);

  Listener(Listener&& other) noexcept;
  Listener& operator=(Listener&&) = delete;
  ~Listener();

  int fd() const { return fd_.get(); }
  const std::string& path() const { return path_; }
  // Closes the socket and removes the file if it is still the one we bound.
  void Close();

 private:
  Listener(UniqueFd fd, std::string path, dev_t dev, ino_t ino)
      : fd_(std::move(fd)), path_(std::move(path)), dev_(dev), ino_(ino) {}

  UniqueFd fd_;
  std::string path_;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

}  // namespace xsock::backend
