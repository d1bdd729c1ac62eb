#include "backend/listener.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>

#include "backend/errors.h"
#include "backend/log.h"
#include "fmt/format.h"

namespace xsock::backend {
namespace {

constexpr mode_t kDirMode = 0755;
// Any local user may connect for now; a later policy layer decides who may do what.

absl::Status Failed(std::string message) { return absl::FailedPreconditionError(message); }

// Splits "/a/b/c.sock" into "/a/b" and "c.sock"; a bare name lives in ".".
std::string DirName(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

// Creates dir (its last component only) 0755, or checks an existing one: not a symlink,
// a directory, owned by us or root, and not writable by others unless sticky.
absl::Status PrepareDirectory(const std::string& dir) {
  bool created = false;
  if (mkdir(dir.c_str(), kDirMode) == 0) {
    created = true;
  } else if (errno != EEXIST) {
    return ErrnoError(errno, fmt::format("mkdir {}", dir));
  }
  UniqueFd dfd(open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (!dfd.valid()) {
    if (errno == ELOOP || errno == ENOTDIR) {
      struct stat lst;
      if (lstat(dir.c_str(), &lst) == 0 && S_ISLNK(lst.st_mode)) {
        return Failed(fmt::format("{} is a symbolic link; refusing to follow it", dir));
      }
      return Failed(fmt::format("{} is not a directory", dir));
    }
    return ErrnoError(errno, fmt::format("open {}", dir));
  }
  if (created && fchmod(dfd.get(), kDirMode) != 0) {  // undo the umask
    return ErrnoError(errno, fmt::format("chmod {}", dir));
  }
  struct stat st;
  if (fstat(dfd.get(), &st) != 0) return ErrnoError(errno, fmt::format("stat {}", dir));
  if (st.st_uid != geteuid() && st.st_uid != 0) {
    return Failed(fmt::format("{} is owned by uid {}, not by us (uid {}) or root", dir, st.st_uid,
                              geteuid()));
  }
  if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0 && (st.st_mode & S_ISVTX) == 0) {
    return Failed(
        fmt::format("{} is writable by group or others (mode {:04o}); another user "
                    "could replace the socket",
                    dir, st.st_mode & 07777));
  }
  return absl::OkStatus();
}

// Whether something accepts connections at path.
absl::StatusOr<bool> SomethingListens(const std::string& path, const sockaddr_un& addr, int type) {
  UniqueFd probe(socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!probe.valid()) return ErrnoError(errno, "socket");
  if (connect(probe.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) == 0) {
    return true;
  }
  switch (errno) {
    case ECONNREFUSED:
      return false;  // a file with no listener behind it: stale
    case EAGAIN:     // a live listener with a full backlog
    case EINPROGRESS:
      return true;
    case EPROTOTYPE:
      return Failed(
          fmt::format("{} is in use by a program that is not xsockd "
                      "(not a {} socket)",
                      path, type == SOCK_STREAM ? "SOCK_STREAM" : "SOCK_SEQPACKET"));
    default:
      return ErrnoError(errno, fmt::format("connect {}", path));
  }
}

}  // namespace

absl::StatusOr<Listener> Listener::Open(const std::string& path, mode_t mode, int type) {
  if (path.empty()) return absl::InvalidArgumentError("socket path is empty");
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof(addr.sun_path)) {
    return absl::InvalidArgumentError(
        fmt::format("socket path {} is {} bytes long; the limit is {}", path, path.size(),
                    sizeof(addr.sun_path) - 1));
  }
  path.copy(addr.sun_path, path.size());

  if (auto s = PrepareDirectory(DirName(path)); !s.ok()) return s;

  struct stat st;
  if (lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) {
      return Failed(fmt::format("{} exists and is not a socket; refusing to remove it", path));
    }
    auto live = SomethingListens(path, addr, type);
    if (!live.ok()) return live.status();
    if (*live) return Failed(fmt::format("another xsockd is already listening on {}", path));
    if (unlink(path.c_str()) != 0 && errno != ENOENT) {
      return ErrnoError(errno, fmt::format("unlink stale {}", path));
    }
    Log(LogLevel::kInfo, "event=stale_socket_removed path={}", Quoted(path));
  } else if (errno != ENOENT) {
    return ErrnoError(errno, fmt::format("lstat {}", path));
  }

  UniqueFd fd(socket(AF_UNIX, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return ErrnoError(errno, "socket");
  if (bind(fd.get(), reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    if (errno == EADDRINUSE) {
      // Someone bound the path between our check and our bind.
      return Failed(fmt::format("another xsockd is already listening on {}", path));
    }
    return ErrnoError(errno, fmt::format("bind {}", path));
  }
  if (lstat(path.c_str(), &st) != 0) return ErrnoError(errno, fmt::format("lstat {}", path));
  Listener listener(std::move(fd), path, st.st_dev, st.st_ino);
  if (chmod(path.c_str(), mode) != 0) return ErrnoError(errno, fmt::format("chmod {}", path));
  if (listen(listener.fd(), SOMAXCONN) != 0)
    return ErrnoError(errno, fmt::format("listen {}", path));
  return listener;
}

Listener::Listener(Listener&& other) noexcept
    : fd_(std::move(other.fd_)), path_(std::move(other.path_)), dev_(other.dev_), ino_(other.ino_) {
  other.path_.clear();
}

Listener::~Listener() { Close(); }

void Listener::Close() {
  if (!fd_.valid()) return;
  fd_.reset();
  // Only our own file: a successor may already have replaced it.
  struct stat st;
  if (!path_.empty() && lstat(path_.c_str(), &st) == 0 && st.st_dev == dev_ && st.st_ino == ino_) {
    unlink(path_.c_str());
  }
}

}  // namespace xsock::backend
