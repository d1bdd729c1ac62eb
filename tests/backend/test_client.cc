#include "test_client.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "backend/log.h"
#include "ringbuf/ring.h"
#include "shared/unix_io.h"

namespace xsock::testing {
namespace {

Clock::time_point Deadline(int timeout_ms) {
  return Clock::now() + std::chrono::milliseconds(timeout_ms);
}

int MsLeft(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

bool PollFd(int fd, short events, Clock::time_point deadline, short* revents = nullptr) {
  for (;;) {
    pollfd p = {fd, events, 0};
    const int n = poll(&p, 1, MsLeft(deadline));
    if (n > 0) {
      if (revents != nullptr) *revents = p.revents;
      return true;
    }
    if (n == 0) return false;
    if (errno != EINTR) return false;
  }
}

}  // namespace

// ---- TempDir ----

TempDir::TempDir() {
  char tmpl[] = "/tmp/xsockd-test-XXXXXX";
  const char* p = mkdtemp(tmpl);
  REQUIRE(p != nullptr);
  path_ = p;
}

TempDir::~TempDir() {
  nftw(
      path_.c_str(), [](const char* f, const struct stat*, int, FTW*) { return ::remove(f); }, 16,
      FTW_DEPTH | FTW_PHYS);
}

// ---- LogCapture ----

namespace {
bool EchoLog() { return std::getenv("XSOCK_TEST_LOG") != nullptr; }

// Outside a LogCapture, xsockd's lines are dropped unless XSOCK_TEST_LOG is set.
void InstallDefaultSink() {
  backend::SetLogSink([](std::string_view line) {
    if (EchoLog()) std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
  });
}
const bool kDefaultSinkInstalled = (InstallDefaultSink(), true);
}  // namespace

LogCapture::LogCapture() {
  (void)kDefaultSinkInstalled;
  const bool echo = EchoLog();
  backend::SetLogSink([this, echo](std::string_view line) {
    if (echo) std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
    std::lock_guard<std::mutex> lock(mu_);
    lines_.emplace_back(line);
  });
}

LogCapture::~LogCapture() { InstallDefaultSink(); }

std::string LogCapture::WaitFor(std::vector<std::string> fragments, int timeout_ms) {
  std::string found;
  Eventually(
      [&] {
        std::lock_guard<std::mutex> lock(mu_);
        for (const std::string& line : lines_) {
          bool all = true;
          for (const std::string& f : fragments) all = all && line.find(f) != std::string::npos;
          if (all) {
            found = line;
            return true;
          }
        }
        return false;
      },
      timeout_ms);
  return found;
}

std::vector<std::string> LogCapture::Lines() {
  std::lock_guard<std::mutex> lock(mu_);
  return lines_;
}

// ---- TestServer ----

TestServer::TestServer(uint32_t ring_order) : TestServer(Visibility{false, false}, ring_order) {}

TestServer::TestServer(Visibility visibility, uint32_t ring_order) {
  signal(SIGPIPE, SIG_IGN);
  path_ = dir_.path() + "/run/xsockd.sock";
  backend::ServerOptions options;
  if (visibility.admin) options.admin.socket_path = dir_.path() + "/run/xsockd-admin.sock";
  if (visibility.metrics) options.admin.metrics_address = "127.0.0.1:0";
  options.admin.deadline = std::chrono::milliseconds(visibility.deadline_ms);
  options.socket_path = path_;
  options.ring_order = ring_order;
  options.handle_signals = false;
  auto server = backend::Server::Create(options);
  INFO(server.status().ToString());
  REQUIRE(server.ok());
  server_ = std::move(*server);
  thread_ = std::thread([s = server_.get()] { (void)s->Run(); });
}

TestServer::~TestServer() {
  server_->RequestStop();
  thread_.join();
  server_.reset();
}

// ---- Control ----

Control::Control(const std::string& path) {
  fd_.reset(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  REQUIRE(fd_.valid());
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
  REQUIRE(connect(fd_.get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) == 0);
}

Control::Answer Control::Call(const proto::Request& req, std::span<const int> fds) {
  const uint32_t seq = seq_++;
  const std::vector<uint8_t> bytes = proto::EncodeRequest(seq, req);
  REQUIRE(SendPacket(LibcSyscalls(), fd_.get(), bytes, fds) == 0);
  REQUIRE(PollFd(fd_.get(), POLLIN, Deadline(kTimeoutMs)));
  std::vector<uint8_t> buf;
  std::vector<int> raw;
  const ssize_t n = RecvPacket(LibcSyscalls(), fd_.get(), buf, proto::kMaxMessageSize, raw);
  REQUIRE(n > 0);
  Answer a;
  for (int fd : raw) a.fds.emplace_back(fd);
  auto decoded = proto::DecodeReply(buf);
  INFO(decoded.status().ToString());
  REQUIRE(decoded.ok());
  REQUIRE(decoded->seq == seq);
  REQUIRE(proto::TypeOf(decoded->msg) == proto::TypeOf(req));
  a.reply = decoded->msg;
  return a;
}

proto::HelloReply Control::Hello(uint32_t caps) {
  proto::HelloRequest h;
  h.caps = caps;
  auto r = CallAs<proto::HelloReply>(h);
  REQUIRE(r.err == 0);
  return r;
}

proto::StatsReply Control::Stats() {
  auto r = CallAs<proto::StatsReply>(proto::StatsRequest{});
  REQUIRE(r.err == 0);
  return r;
}

void Control::SendRaw(std::span<const uint8_t> bytes, std::span<const int> fds) {
  REQUIRE(SendPacket(LibcSyscalls(), fd_.get(), bytes, fds) == 0);
}

bool Control::WaitDisconnected(int timeout_ms) {
  const auto deadline = Deadline(timeout_ms);
  for (;;) {
    if (!PollFd(fd_.get(), POLLIN, deadline)) return false;
    char buf[proto::kMaxMessageSize];
    const ssize_t n = recv(fd_.get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0) return true;
    if (n < 0 && errno == ECONNRESET) return true;
  }
}

// ---- AppSocket ----

std::unique_ptr<AppSocket> AppSocket::Create(Control& ctl, int domain, uint32_t ring_order) {
  proto::SocketRequest req;
  req.domain = static_cast<uint32_t>(domain);
  req.type = SOCK_STREAM;
  req.ring_order = ring_order;
  std::vector<UniqueFd> fds;
  auto reply = ctl.CallAs<proto::SocketReply>(req, &fds);
  REQUIRE(reply.err == 0);
  REQUIRE(fds.size() == 2);
  return std::make_unique<AppSocket>(std::move(fds[0]), std::move(fds[1]), reply.socket_id,
                                     reply.ring_order);
}

AppSocket::AppSocket(UniqueFd channel, UniqueFd memfd, uint64_t id, uint32_t order)
    : channel_(std::move(channel)), memfd_(std::move(memfd)), id_(id), order_(order) {
  size_ = SocketMemfdSize(order);
  base_ = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_SHARED, memfd_.get(), 0);
  REQUIRE(base_ != MAP_FAILED);
  // As the library does before installing the channel: the smallest send queue, so that
  // one stuffing chunk makes the descriptor unwritable.
  const int one = 1;
  REQUIRE(setsockopt(channel_.get(), SOL_SOCKET, SO_SNDBUF, &one, sizeof(one)) == 0);
}

AppSocket::~AppSocket() {
  if (base_ != nullptr && base_ != MAP_FAILED) munmap(base_, size_);
}

void AppSocket::SendByte(char b) {
  // May fail with EAGAIN while the channel is stuffed: xsockd then finds out by itself.
  if (send(channel_.get(), &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0 && errno == EAGAIN) {
    lost_wakes_++;
  }
}

void AppSocket::Stuff() {
  static const char chunk[kStuffChunk] = {};
  while (send(channel_.get(), chunk, sizeof(chunk), MSG_DONTWAIT | MSG_NOSIGNAL) > 0) {
  }
}

bool AppSocket::WaitFor(short events, Clock::time_point deadline) {
  return PollFd(channel_.get(), events, deadline);
}

short AppSocket::Poll(short events, int timeout_ms) {
  short revents = 0;
  if (!PollFd(channel_.get(), events, Deadline(timeout_ms), &revents)) return 0;
  return revents;
}

std::string AppSocket::Describe() {
  SocketPage* p = page();
  int queued = 0;
  ioctl(channel_.get(), FIONREAD, &queued);
  int outq = 0;
  ioctl(channel_.get(), TIOCOUTQ, &outq);
  return "state=" + std::to_string(p->state.load()) +
         " in=" + std::to_string(p->in_cons.value.load()) + ".." +
         std::to_string(p->in_prod.value.load()) +
         " out=" + std::to_string(p->out_cons.value.load()) + ".." +
         std::to_string(p->out_prod.value.load()) +
         " in_error=" + std::to_string(p->in_error.value.load()) +
         " out_error=" + std::to_string(p->out_error.value.load()) +
         " in_token=" + std::to_string(p->in_token.load()) +
         " out_data_wanted=" + std::to_string(p->out_data_wanted.load()) +
         " in_room_wanted=" + std::to_string(p->in_room_wanted.load()) +
         " channel_revents=" + std::to_string(Poll(POLLIN | POLLOUT)) +
         " channel_inq=" + std::to_string(queued) + " channel_outq=" + std::to_string(outq);
}

int AppSocket::Connect(Control& ctl, const proto::SockAddr& addr) {
  Stuff();
  proto::ConnectRequest req;
  req.socket_id = id_;
  req.addr = addr;
  return ctl.CallAs<proto::ConnectReply>(req).err;
}

SocketState AppSocket::WaitConnectDone(int timeout_ms) {
  WaitFor(POLLOUT, Deadline(timeout_ms));
  return static_cast<SocketState>(page()->state.load(std::memory_order_acquire));
}

int AppSocket::RecvToken(Clock::time_point deadline) {
  for (;;) {
    char b;
    const ssize_t n = recv(channel_.get(), &b, 1, MSG_DONTWAIT);
    if (n == 1) return 0;
    if (n == 0) return -ECONNRESET;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return -errno;
    if (!WaitFor(POLLIN, deadline)) return -ETIMEDOUT;
  }
}

ssize_t AppSocket::Write(const void* buf, size_t len, int timeout_ms) {
  const auto deadline = Deadline(timeout_ms);
  for (;;) {
    const int32_t err = page()->out_error.value.load(std::memory_order_acquire);
    if (err != 0) return err < 0 ? err : -EPIPE;
    ring::Producer p(OutRing(base_, order_));
    const int64_t n = p.Write(buf, len);
    if (n < 0) return -EPROTO;
    if (n > 0) {
      // Pairs with xsockd's fence between arming out_data_wanted and re-reading out_prod.
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (page()->out_data_wanted.exchange(0) == 1) SendByte(kWakeByte);
      return n;
    }
    Stuff();
    const ring::Regions room = ring::Producer(OutRing(base_, order_)).Reserve(1);
    if (room.corrupt) return -EPROTO;
    if (room.bytes > 0) continue;
    if (nonblocking_) return -EAGAIN;
    if (!WaitFor(POLLOUT, deadline)) return -ETIMEDOUT;
  }
}

bool AppSocket::WriteAll(const void* buf, size_t len, int timeout_ms) {
  const auto* p = static_cast<const uint8_t*>(buf);
  const auto deadline = Deadline(timeout_ms);
  while (len > 0) {
    const ssize_t n = Write(p, len, MsLeft(deadline));
    if (n <= 0) return false;
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

ssize_t AppSocket::Read(void* buf, size_t len, int timeout_ms) {
  if (len == 0) return 0;
  const auto deadline = Deadline(timeout_ms);
  auto* dst = static_cast<uint8_t*>(buf);
  size_t got = 0;
  for (;;) {
    ring::Consumer c(InRing(base_, order_));
    // Read the error word first: it is written after the last byte, so once it is seen
    // set, an empty ring means no data will follow.
    const int32_t err = c.Error();
    const int64_t n = c.Read(dst + got, len - got);
    if (n < 0) return -EPROTO;
    if (n > 0) {
      got += static_cast<size_t>(n);
      // Pairs with xsockd's fence between arming in_room_wanted and re-reading in_cons.
      std::atomic_thread_fence(std::memory_order_seq_cst);
      if (page()->in_room_wanted.exchange(0) == 1) SendByte(kWakeByte);
    }
    const ring::Regions left = c.Peek(1);
    if (left.corrupt) return -EPROTO;
    if (left.bytes == 0) {
      // Empty ring: no token may stay queued. This also removes a token whose exchange in
      // xsockd raced with our read of the bytes it announced.
      if (page()->in_token.exchange(0) == 1) {
        const int rc = RecvToken(deadline);
        if (rc < 0) return got > 0 ? static_cast<ssize_t>(got) : rc;
      }
      const ring::Regions again = c.Peek(1);
      if (again.corrupt) return -EPROTO;
      if (again.bytes > 0) {
        if (got < len) continue;
        SendByte(kWakeByte);  // bytes but no token: xsockd re-queues it
        return static_cast<ssize_t>(got);
      }
    }
    if (got > 0) return static_cast<ssize_t>(got);
    if (err != 0) return err == kRingEof ? 0 : err;
    if (nonblocking_) return -EAGAIN;
    if (!WaitFor(POLLIN, deadline)) return -ETIMEDOUT;
    // Readable, yet no data, no token and no error: xsockd closed its end.
    char b;
    if (c.Peek(1).bytes == 0 && c.Error() == 0 &&
        page()->in_token.load(std::memory_order_acquire) == 0 &&
        recv(channel_.get(), &b, 1, MSG_PEEK | MSG_DONTWAIT) == 0) {
      return -ECONNRESET;
    }
  }
}

// ---- Host side ----

proto::SockAddr LoopbackAddr(int family, uint16_t port) {
  proto::SockAddr a;
  a.family = static_cast<uint16_t>(family);
  a.port = port;
  if (family == AF_INET) {
    const in_addr lo = {htonl(INADDR_LOOPBACK)};
    std::memcpy(a.addr.data(), &lo, 4);
  } else {
    std::memcpy(a.addr.data(), &in6addr_loopback, 16);
  }
  return a;
}

TcpListener TcpListener::Open(int family, int backlog) {
  TcpListener l;
  l.family = family;
  l.fd.reset(socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  REQUIRE(l.fd.valid());
  sockaddr_storage ss;
  const socklen_t len = proto::ToSockaddr(LoopbackAddr(family, 0), &ss);
  REQUIRE(bind(l.fd.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
  REQUIRE(listen(l.fd.get(), backlog) == 0);
  socklen_t got = sizeof(ss);
  REQUIRE(getsockname(l.fd.get(), reinterpret_cast<sockaddr*>(&ss), &got) == 0);
  l.port = proto::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), got)->port;
  return l;
}

proto::SockAddr TcpListener::Addr() const { return LoopbackAddr(family, port); }

UniqueFd TcpListener::Accept(int timeout_ms) {
  if (!PollFd(fd.get(), POLLIN, Deadline(timeout_ms))) return UniqueFd();
  return UniqueFd(accept4(fd.get(), nullptr, nullptr, SOCK_CLOEXEC));
}

uint16_t ClosedPort(int family) {
  UniqueFd s(socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_storage ss;
  const socklen_t len = proto::ToSockaddr(LoopbackAddr(family, 0), &ss);
  REQUIRE(bind(s.get(), reinterpret_cast<sockaddr*>(&ss), len) == 0);
  socklen_t got = sizeof(ss);
  REQUIRE(getsockname(s.get(), reinterpret_cast<sockaddr*>(&ss), &got) == 0);
  return proto::FromSockaddr(reinterpret_cast<sockaddr*>(&ss), got)->port;
}

std::vector<uint8_t> Pattern(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  for (size_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    v[i] = static_cast<uint8_t>(x >> 24);
  }
  return v;
}

std::string Diff(std::span<const uint8_t> a, std::span<const uint8_t> b) {
  const size_t n = std::min(a.size(), b.size());
  for (size_t i = 0; i < n; ++i) {
    if (a[i] != b[i]) return "differ at byte " + std::to_string(i);
  }
  if (a.size() != b.size()) {
    return "sizes " + std::to_string(a.size()) + " and " + std::to_string(b.size());
  }
  return "";
}

uint64_t Fnv1a(std::span<const uint8_t> data, uint64_t h) {
  for (uint8_t b : data) {
    h ^= b;
    h *= 0x100000001b3ull;
  }
  return h;
}

bool SendAll(int fd, std::span<const uint8_t> data, int timeout_ms) {
  const auto deadline = Deadline(timeout_ms);
  size_t off = 0;
  while (off < data.size()) {
    const ssize_t n = send(fd, data.data() + off, data.size() - off, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno != EAGAIN && errno != EINTR) return false;
    if (!PollFd(fd, POLLOUT, deadline)) return false;
  }
  return true;
}

std::vector<uint8_t> RecvToEof(int fd, int* err, int timeout_ms) {
  const auto deadline = Deadline(timeout_ms);
  std::vector<uint8_t> out;
  uint8_t buf[65536];
  *err = 0;
  for (;;) {
    const ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n > 0) {
      out.insert(out.end(), buf, buf + n);
      continue;
    }
    if (n == 0) return out;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      *err = errno;
      return out;
    }
    if (!PollFd(fd, POLLIN, deadline)) {
      *err = ETIMEDOUT;
      return out;
    }
  }
}

bool RecvExactly(int fd, std::span<uint8_t> out, int timeout_ms) {
  const auto deadline = Deadline(timeout_ms);
  size_t off = 0;
  while (off < out.size()) {
    const ssize_t n = recv(fd, out.data() + off, out.size() - off, MSG_DONTWAIT);
    if (n > 0) {
      off += static_cast<size_t>(n);
      continue;
    }
    if (n == 0) return false;
    if (errno != EAGAIN && errno != EINTR) return false;
    if (!PollFd(fd, POLLIN, deadline)) return false;
  }
  return true;
}

}  // namespace xsock::testing
