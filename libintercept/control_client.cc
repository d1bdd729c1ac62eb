#include "libintercept/control_client.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "libintercept/mutex_lock.h"
#include "libintercept/own_fds.h"
#include "shared/unix_io.h"

namespace xsock::intercept {
namespace {

const char* ErrnoName(int e) {
  const char* n = strerrorname_np(e);
  return n != nullptr ? n : "unknown errno";
}

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

void CloseAll(const Syscalls& sys, std::vector<int>& fds) {
  for (int fd : fds) sys.close(fd);
  fds.clear();
}

}  // namespace

ControlClient::ControlClient(const Syscalls& sys, std::string path)
    : sys_(sys), path_(std::move(path)) {
  pthread_mutex_init(&mu_, nullptr);
}

ControlClient::~ControlClient() {
  {
    MutexLock lock(&mu_);
    DropLocked(/*close_fd=*/true);
  }
  pthread_mutex_destroy(&mu_);
}

absl::Status ControlClient::Open() {
  MutexLock lock(&mu_);
  return EnsureOpenLocked();
}

uint64_t ControlClient::generation() {
  MutexLock lock(&mu_);
  return generation_;
}

void ControlClient::DropLocked(bool close_fd) {
  if (fd_ >= 0) OwnFds::Remove(fd_);
  if (fd_ >= 0 && close_fd) sys_.close(fd_);
  fd_ = -1;
  fd_seen_.store(-1, std::memory_order_relaxed);
  generation_ = 0;
}

void ControlClient::ForgetIfOurs(int fd) {
  if (!IsOurs(fd)) return;
  MutexLock lock(&mu_);
  if (fd_ == fd) DropLocked(/*close_fd=*/false);
}

void ControlClient::ForgetIfInRange(unsigned first, unsigned last) {
  const int fd = fd_seen_.load(std::memory_order_relaxed);
  if (fd >= 0 && static_cast<unsigned>(fd) >= first && static_cast<unsigned>(fd) <= last) {
    ForgetIfOurs(fd);
  }
}

void ControlClient::AfterForkChild() {
  pthread_mutex_init(&mu_, nullptr);
  // The descriptor is a copy of the parent's connection: never speak on it here. Close
  // it only if it still is that connection (not a file of the application's).
  DropLocked(/*close_fd=*/fd_ >= 0 && StillOursLocked());
}

bool ControlClient::StillOursLocked() const {
  struct stat st;
  return fstat(fd_, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == dev_ && st.st_ino == ino_;
}

int ControlClient::HighFdFloor() {
  rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return -1;
  // At most 1024: the kernel grows a process's descriptor table to the next power of two
  // above its highest number, and 1024 is what every process starts with.
  const rlim_t cap = rl.rlim_cur < 1024 ? rl.rlim_cur : 1024;
  // Below 128 the "high" number would crowd the application's own numbers.
  return cap >= 128 ? static_cast<int>(cap) - 64 : -1;
}

absl::StatusOr<pid_t> ControlClient::ServerPid() {
  MutexLock lock(&mu_);
  if (absl::Status s = EnsureOpenLocked(); !s.ok()) return s;
  return server_pid_;
}

absl::Status ControlClient::EnsureOpenLocked() {
  if (fd_ >= 0 && pid_ != getpid()) DropLocked(/*close_fd=*/true);  // forked without atfork
  // Closed behind our back (a raw close, close_range or dup2 the hooks did not see): the
  // number may now be the application's. Forget it, never close or write to it.
  if (fd_ >= 0 && !StillOursLocked()) DropLocked(/*close_fd=*/false);
  if (fd_ >= 0) return absl::OkStatus();

  auto unreachable = [this](int e) {
    return absl::UnavailableError(
        absl::StrCat("cannot reach xsockd at ", path_, " (", ErrnoName(e), ")"));
  };
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  if (path_.empty() || path_.size() >= sizeof(addr.sun_path)) return unreachable(ENAMETOOLONG);
  std::memcpy(addr.sun_path, path_.data(), path_.size());

  int fd = sys_.socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) return unreachable(errno);
  if (sys_.connect(fd, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    const int e = errno;
    sys_.close(fd);
    return unreachable(e);
  }
  if (const int floor = HighFdFloor(); floor > fd) {
    // Best effort: with every number above the floor taken it stays where it is.
    if (const int high = sys_.fcntl(fd, F_DUPFD_CLOEXEC, floor); high >= 0) {
      sys_.close(fd);
      fd = high;
    }
  }
  struct stat st;
  ucred cred = {};
  socklen_t cred_len = sizeof(cred);
  if (fstat(fd, &st) != 0 || sys_.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &cred_len) != 0) {
    const int e = errno;
    sys_.close(fd);
    return unreachable(e);
  }
  dev_ = st.st_dev;
  ino_ = st.st_ino;
  server_pid_ = cred.pid;
  OwnFds::Add(fd);
  fd_ = fd;
  fd_seen_.store(fd, std::memory_order_relaxed);
  pid_ = getpid();
  generation_ = ++opened_ + (static_cast<uint64_t>(pid_) << 32);

  auto hello = ExchangeLocked(proto::HelloRequest{.caps = proto::kAllCaps}, {});
  if (!hello.ok()) {
    DropLocked(/*close_fd=*/true);
    return unreachable(ECONNREFUSED);
  }
  const auto* reply = std::get_if<proto::HelloReply>(&hello->reply);
  if (reply == nullptr || reply->err != 0) {
    DropLocked(/*close_fd=*/true);
    return absl::UnavailableError(absl::StrCat("xsockd at ", path_, " refused hello (",
                                               ErrnoName(reply ? reply->err : EPROTO), ")"));
  }
  return absl::OkStatus();
}

absl::StatusOr<ControlClient::Response> ControlClient::ExchangeLocked(const proto::Request& req,
                                                                      std::span<const int> fds) {
  const uint32_t seq = ++seq_;
  const std::vector<uint8_t> bytes = proto::EncodeRequest(seq, req);
  if (const int r = SendPacket(sys_, fd_, bytes, fds); r < 0) {
    return absl::UnavailableError(absl::StrCat("send to xsockd: ", ErrnoName(-r)));
  }
  const int64_t deadline = NowMs() + kReplyTimeoutMs;
  std::vector<uint8_t> buf;
  Response out;
  for (;;) {
    pollfd p = {fd_, POLLIN, 0};
    const int64_t left = deadline - NowMs();
    const int r = left <= 0 ? 0 : sys_.poll(&p, 1, static_cast<int>(left));
    if (r < 0 && errno == EINTR) continue;  // never abandon a request half way
    if (r <= 0) return absl::DeadlineExceededError("no reply from xsockd");
    const ssize_t n = RecvPacket(sys_, fd_, buf, proto::kMaxMessageSize, out.fds, MSG_DONTWAIT);
    if (n == -EAGAIN || n == -EWOULDBLOCK) continue;
    if (n < 0) return absl::UnavailableError(absl::StrCat("recv from xsockd: ", ErrnoName(-n)));
    if (n == 0) return absl::UnavailableError("xsockd closed the control connection");
    break;
  }
  auto decoded = proto::DecodeReply(buf);
  if (!decoded.ok()) {
    CloseAll(sys_, out.fds);
    return absl::DataLossError(absl::StrCat("bad reply: ", decoded.status().message()));
  }
  const proto::MsgType type = proto::TypeOf(decoded->msg);
  const size_t want_fds = static_cast<size_t>(proto::FdsWithReply(decoded->msg));
  if (decoded->seq != seq || type != proto::TypeOf(req) || out.fds.size() != want_fds) {
    CloseAll(sys_, out.fds);
    return absl::DataLossError(absl::StrCat("reply ", proto::Name(type), " seq ", decoded->seq,
                                            " with ", out.fds.size(), " fds does not answer ",
                                            proto::Name(proto::TypeOf(req)), " seq ", seq));
  }
  out.reply = std::move(decoded->msg);
  out.generation = generation_;
  return out;
}

absl::StatusOr<ControlClient::Response> ControlClient::Call(const proto::Request& req,
                                                            std::span<const int> fds) {
  MutexLock lock(&mu_);
  if (absl::Status s = EnsureOpenLocked(); !s.ok()) return s;
  auto r = ExchangeLocked(req, fds);
  if (!r.ok()) DropLocked(/*close_fd=*/true);
  return r;
}

absl::StatusOr<std::optional<ControlClient::Response>> ControlClient::AttachLocked(
    uint64_t socket_id, int channel_fd) {
  const int fds[] = {channel_fd};
  auto r = ExchangeLocked(proto::AttachRequest{}, fds);
  if (!r.ok()) return r.status();
  // Only the socket's identity matters here; we have the memory mapped already.
  CloseAll(sys_, r->fds);
  const auto& reply = std::get<proto::AttachReply>(r->reply);
  if (reply.err != 0) return std::optional<Response>(std::move(*r));
  if (reply.socket_id != socket_id) {
    return absl::DataLossError(
        absl::StrCat("attach answered socket ", reply.socket_id, " for socket ", socket_id));
  }
  return std::optional<Response>();
}

absl::StatusOr<ControlClient::Response> ControlClient::CallForSocket(const proto::Request& req,
                                                                     uint64_t socket_id,
                                                                     int channel_fd,
                                                                     uint64_t known_on) {
  MutexLock lock(&mu_);
  if (absl::Status s = EnsureOpenLocked(); !s.ok()) return s;
  if (known_on != generation_) {
    auto attached = AttachLocked(socket_id, channel_fd);
    if (!attached.ok()) {
      DropLocked(/*close_fd=*/true);
      return attached.status();
    }
    if (attached->has_value()) return std::move(**attached);
  }
  auto r = ExchangeLocked(req, {});
  if (!r.ok()) DropLocked(/*close_fd=*/true);
  return r;
}

}  // namespace xsock::intercept
