#include "tests/intercept/fake_xsockd.h"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "shared/unix_io.h"

namespace xsock::testing {
namespace {

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

proto::SockAddr Loopback(uint16_t port) {
  proto::SockAddr a;
  a.family = AF_INET;
  a.port = port;
  a.addr[0] = 127;
  a.addr[3] = 1;
  return a;
}

}  // namespace

FakeXsockd::FakeXsockd(Options options) : options_(options) {
  char tmpl[] = "/tmp/xsock-fake-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) throw std::runtime_error("mkdtemp");
  dir_ = tmpl;
  path_ = dir_ + "/xsockd.sock";
  listen_fd_ = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path_.c_str(), sizeof(addr.sun_path) - 1);
  if (bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 ||
      listen(listen_fd_, 16) != 0) {
    throw std::runtime_error("bind/listen " + path_);
  }
  stop_fd_ = eventfd(0, EFD_CLOEXEC);
  thread_ = std::thread([this] { Run(); });
}

FakeXsockd::~FakeXsockd() {
  const uint64_t one = 1;
  (void)!write(stop_fd_, &one, sizeof(one));
  thread_.join();
  close(listen_fd_);
  close(stop_fd_);
  unlink(path_.c_str());
  rmdir(dir_.c_str());
}

std::vector<std::string> FakeXsockd::Log() {
  std::lock_guard<std::mutex> lock(mu_);
  return log_;
}

FakeBackend* FakeXsockd::backend(uint64_t id) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = backends_.find(id);
  return it == backends_.end() ? nullptr : it->second.get();
}

bool FakeXsockd::Owns(int client, uint64_t id) {
  auto it = owners_.find(id);
  return it != owners_.end() &&
         std::find(it->second.begin(), it->second.end(), client) != it->second.end();
}

void FakeXsockd::Run() {
  struct Conn {
    int fd;
    int serial;
  };
  std::vector<Conn> conns;
  int serial = 0;
  for (;;) {
    std::vector<pollfd> pfds = {{stop_fd_, POLLIN, 0}, {listen_fd_, POLLIN, 0}};
    for (const Conn& c : conns) pfds.push_back({c.fd, POLLIN, 0});
    int timeout = -1;
    {
      std::lock_guard<std::mutex> lock(mu_);
      for (const Pending& p : pending_) {
        const int64_t left = std::max<int64_t>(0, p.due_ms - NowMs());
        timeout = timeout < 0 ? static_cast<int>(left) : std::min(timeout, static_cast<int>(left));
      }
    }
    if (poll(pfds.data(), pfds.size(), timeout) < 0 && errno != EINTR) break;
    if (pfds[0].revents) break;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const int64_t now = NowMs();
      for (auto it = pending_.begin(); it != pending_.end();) {
        if (it->due_ms > now) {
          ++it;
          continue;
        }
        backends_[it->id]->CompleteConnect(options_.complete_err);
        it = pending_.erase(it);
      }
    }
    if (pfds[1].revents & POLLIN) {
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd >= 0) {
        conns.push_back({fd, ++serial});
        connections_.fetch_add(1);
      }
    }
    for (size_t i = 2; i < pfds.size(); ++i) {
      if (!pfds[i].revents) continue;
      Conn& c = conns[i - 2];
      std::vector<uint8_t> buf;
      std::vector<int> fds_in, fds_out;
      const ssize_t n = RecvPacket(LibcSyscalls(), c.fd, buf, proto::kMaxMessageSize, fds_in);
      if (n <= 0) {
        close(c.fd);
        c.fd = -1;
        continue;
      }
      auto req = proto::DecodeRequest(buf);
      if (!req.ok()) {
        std::lock_guard<std::mutex> lock(mu_);
        log_.push_back("bad request: " + std::string(req.status().message()));
        continue;
      }
      const bool hello = std::holds_alternative<proto::HelloRequest>(req->msg);
      proto::Reply reply = Handle(c.serial, req->msg, fds_in, fds_out);
      for (int fd : fds_in) close(fd);
      const uint32_t seq = options_.wrong_seq && !hello ? req->seq + 1 : req->seq;
      SendPacket(LibcSyscalls(), c.fd, proto::EncodeReply(seq, reply), fds_out);
      for (int fd : fds_out) close(fd);
    }
    conns.erase(std::remove_if(conns.begin(), conns.end(), [](const Conn& c) { return c.fd < 0; }),
                conns.end());
  }
  for (const Conn& c : conns) close(c.fd);
}

proto::Reply FakeXsockd::Handle(int client, const proto::Request& request, std::vector<int>& fds_in,
                                std::vector<int>& fds_out) {
  std::lock_guard<std::mutex> lock(mu_);
  auto log = [this](std::string line) { log_.push_back(std::move(line)); };
  if (std::holds_alternative<proto::HelloRequest>(request)) {
    log("hello");
    return proto::HelloReply{0, proto::kVersion, proto::kAllCaps, static_cast<uint32_t>(getpid())};
  }
  if (const auto* m = std::get_if<proto::SocketRequest>(&request)) {
    log(std::string("socket ") + (m->domain == AF_INET6 ? "AF_INET6" : "AF_INET"));
    const uint64_t id = next_id_++;
    auto b = std::make_unique<FakeBackend>(
        FakeBackend::Options{.order = kMinRingOrder, .socket_id = id, .state = SocketState::kIdle});
    const int app = b->TakeAppChannel();
    struct stat st;
    fstat(app, &st);
    inodes_[id] = {st.st_dev, st.st_ino};
    owners_[id] = {client};
    fds_out = {app, dup(b->memfd())};
    backends_[id] = std::move(b);
    return proto::SocketReply{0, kMinRingOrder, id};
  }
  if (const auto* m = std::get_if<proto::AttachRequest>(&request)) {
    (void)m;
    struct stat st;
    if (fds_in.size() != 1 || fstat(fds_in[0], &st) != 0) return proto::AttachReply{EBADF};
    for (const auto& [id, ino] : inodes_) {
      if (ino.first != st.st_dev || ino.second != st.st_ino) continue;
      log("attach " + std::to_string(id));
      owners_[id].push_back(client);
      fds_out = {dup(backends_[id]->memfd())};
      return proto::AttachReply{0, kMinRingOrder, id, backends_[id]->page()->state.load()};
    }
    log("attach unknown");
    return proto::AttachReply{EBADF};
  }
  if (std::holds_alternative<proto::StatsRequest>(request)) {
    log("stats");
    return proto::StatsReply{};
  }
  // Everything else names a socket.
  const uint64_t id = std::visit(
      [](const auto& m) -> uint64_t {
        if constexpr (requires { m.socket_id; }) {
          return m.socket_id;
        } else {
          return 0;
        }
      },
      request);
  const bool owned = Owns(client, id);
  FakeBackend* b = owned ? backends_[id].get() : nullptr;
  const std::string sid = std::to_string(id);
  if (const auto* m = std::get_if<proto::ConnectRequest>(&request)) {
    log("connect " + sid + " " + proto::ToString(m->addr));
    if (!owned) return proto::ConnectReply{EBADF};
    switch (options_.connect) {
      case ConnectMode::kConnectedAtOnce:
        b->SetState(SocketState::kConnected);
        b->CompleteConnect(0);  // drains the stuffing
        return proto::ConnectReply{0};
      case ConnectMode::kInProgress:
        b->SetState(SocketState::kConnecting);
        pending_.push_back({id, NowMs() + options_.complete_after_ms});
        return proto::ConnectReply{EINPROGRESS};
      case ConnectMode::kRefusedAtOnce:
        // As xsockd does for a connect that fails synchronously: the reply carries the
        // error and the page is left alone (the socket stays idle and may be retried).
        // Completing it asynchronously here would race with the caller reading SO_ERROR.
        return proto::ConnectReply{ECONNREFUSED};
    }
  }
  if (const auto* m = std::get_if<proto::SetSockOptRequest>(&request)) {
    std::string line = "setsockopt " + sid + " " + std::to_string(m->level) + "/" +
                       std::to_string(m->optname) + " len " + std::to_string(m->value.size());
    if (m->value.size() == 4) {
      int v;
      std::memcpy(&v, m->value.data(), 4);
      line += " = " + std::to_string(v);
    }
    log(line);
    return proto::SetSockOptReply{owned ? 0 : EBADF};
  }
  if (const auto* m = std::get_if<proto::GetSockOptRequest>(&request)) {
    log("getsockopt " + sid + " " + std::to_string(m->level) + "/" + std::to_string(m->optname) +
        " room " + std::to_string(m->optlen));
    if (!owned) return proto::GetSockOptReply{EBADF, {}};
    const int v = 4242;
    std::vector<uint8_t> value(reinterpret_cast<const uint8_t*>(&v),
                               reinterpret_cast<const uint8_t*>(&v) + 4);
    value.resize(std::min<size_t>(value.size(), m->optlen));
    return proto::GetSockOptReply{0, value};
  }
  if (std::holds_alternative<proto::GetSockNameRequest>(request)) {
    log("getsockname " + sid);
    return proto::GetSockNameReply{owned ? 0 : EBADF, owned ? Loopback(40000) : proto::SockAddr{}};
  }
  if (std::holds_alternative<proto::GetPeerNameRequest>(request)) {
    log("getpeername " + sid);
    return proto::GetPeerNameReply{owned ? 0 : EBADF, owned ? Loopback(9) : proto::SockAddr{}};
  }
  if (const auto* m = std::get_if<proto::ShutdownRequest>(&request)) {
    log("shutdown " + sid + " " + std::to_string(m->how));
    return proto::ShutdownReply{owned ? 0 : EBADF};
  }
  if (std::holds_alternative<proto::ReleaseRequest>(request)) {
    log("release " + sid);
    return proto::ReleaseReply{owned ? 0 : EBADF};
  }
  log("unhandled");
  return proto::StatsReply{EINVAL};
}

}  // namespace xsock::testing
