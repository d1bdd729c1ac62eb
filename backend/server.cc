#include "backend/server.h"

#include <signal.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <array>
#include <cerrno>

#include "backend/errors.h"
#include "backend/identity.h"
#include "backend/log.h"

namespace xsock::backend {
namespace {

constexpr int kMaxEvents = 64;

sigset_t StopSignals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGHUP);  // re-read the policy file
  return set;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Server>> Server::Create(const ServerOptions& options) {
  // The policy first: a bad file stops the start before the socket file exists.
  PolicyHolder policy(options.policy_path, options.policy_required);
  if (auto s = policy.Load(); !s.ok()) return s;
  auto loop = EventLoop::Create();
  if (!loop.ok()) return loop.status();
  auto listener = Listener::Open(options.socket_path);
  if (!listener.ok()) return listener.status();
  std::unique_ptr<Server> server(new Server(options, std::move(*loop), std::move(*listener)));
  server->policy_ = std::move(policy);
  if (auto s = server->Init(); !s.ok()) return s;
  Log(LogLevel::kInfo, "event=listening socket={} pid={} ring_order={} version={}",
      Quoted(server->socket_path()), getpid(), options.ring_order, XSOCK_VERSION);
  return server;
}

Server::Server(const ServerOptions& options, EventLoop loop, Listener listener)
    : options_(options),
      loop_(std::move(loop)),
      listener_(std::move(listener)),
      limits_(options.limits, &stats_),
      sockets_(&loop_, &stats_),
      resolver_(
          &loop_, &stats_,
          [this](uint64_t client_id, uint32_t seq, proto::Reply reply) {
            OnLookupDone(client_id, seq, reply);
          },
          options.resolver) {}

Server::~Server() { Shutdown(nullptr); }

absl::Status Server::Init() {
  sockets_.SetLimits(&limits_);
  if (auto s = sockets_.Init(); !s.ok()) return s;
  if (auto s = resolver_.Init(); !s.ok()) return s;
  if (!options_.admin.socket_path.empty() || !options_.admin.metrics_address.empty()) {
    auto admin =
        AdminServer::Create(options_.admin, &loop_, AdminSources{&stats_, &sockets_, &clients_});
    if (!admin.ok()) return admin.status();
    admin_ = std::move(*admin);
  }
  if (auto s = loop_.Add(listener_.fd(), EPOLLIN, Token{Source::kListener, 0}); !s.ok()) return s;
  stop_fd_.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!stop_fd_.valid()) return ErrnoError(errno, "eventfd");
  if (auto s = loop_.Add(stop_fd_.get(), EPOLLIN, Token{Source::kStop, 0}); !s.ok()) return s;
  if (options_.handle_signals) {
    const sigset_t set = StopSignals();
    if (int rc = pthread_sigmask(SIG_BLOCK, &set, nullptr); rc != 0) {
      return ErrnoError(rc, "block SIGTERM/SIGINT/SIGHUP");
    }
    signal_fd_.reset(signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC));
    if (!signal_fd_.valid()) return ErrnoError(errno, "signalfd");
    if (auto s = loop_.Add(signal_fd_.get(), EPOLLIN, Token{Source::kSignal, 0}); !s.ok()) {
      return s;
    }
  }
  return absl::OkStatus();
}

void Server::RequestStop() {
  // The release store (acquired when the stop event is handled) orders what the caller
  // did before asking, for ThreadSanitizer, which does not see eventfd as synchronisation.
  stop_requested_.store(true, std::memory_order_release);
  const uint64_t one = 1;
  (void)!write(stop_fd_.get(), &one, sizeof(one));
}

absl::Status Server::Run() {
  std::array<epoll_event, kMaxEvents> events;
  const char* stop_reason = nullptr;
  while (stop_reason == nullptr) {
    const int n = loop_.Wait(events, -1);
    if (n == -EINTR) continue;
    if (n < 0) {
      Shutdown("error");
      return ErrnoError(-n, "epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      const Token token = DecodeToken(events[i].data.u64);
      const uint32_t ev = events[i].events;
      switch (token.source) {
        case Source::kListener:
          Accept();
          break;
        case Source::kClient:
          OnClientEvent(token.id, ev);
          break;
        case Source::kChannel:
        case Source::kHost:
        case Source::kTimer:
          sockets_.Dispatch(token, ev);
          break;
        case Source::kResolver:
          resolver_.OnEvent(token.id);
          break;
        case Source::kAdmin:
          if (admin_) admin_->OnEvent(token.id, ev);
          break;
        case Source::kSignal:
          if (const char* sig = ReadSignal(); sig != nullptr) stop_reason = sig;
          break;
        case Source::kStop:
          if (!stop_requested_.load(std::memory_order_acquire)) break;
          stop_reason = "stop_request";
          break;
      }
    }
  }
  Shutdown(stop_reason);
  return absl::OkStatus();
}

void Server::Accept() {
  for (;;) {
    UniqueFd fd(accept4(listener_.fd(), nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd.valid()) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN) Log(LogLevel::kWarn, "event=accept_failed errno={}", ErrnoName(errno));
      return;
    }
    // Read once, now: SO_PEERCRED and /proc of the peer (see identity.h for the pid race).
    ClientIdentity who = PeerIdentity(fd.get());
    const uint64_t id = next_client_id_++;
    auto client = std::make_unique<ControlClient>(
        id, std::move(fd), who,
        ControlContext{&loop_, &sockets_, &stats_, options_.ring_order, &resolver_, &policy_});
    if (auto s = client->Start(); !s.ok()) {
      Log(LogLevel::kWarn, "event=accept_failed error={}", Quoted(std::string(s.message())));
      continue;
    }
    stats_.clients_now++;
    stats_.clients_total++;
    Log(LogLevel::kInfo,
        "event=client_connect client={} pid={} uid={} gid={} exe={} netns={} cgroup={}", id,
        who.pid, who.uid, who.gid, Quoted(who.exe.empty() ? "?" : who.exe), who.netns,
        Quoted(who.cgroup.empty() ? "?" : who.cgroup));
    sockets_.AddClient(id);
    clients_[id] = std::move(client);
  }
}

void Server::OnClientEvent(uint64_t id, uint32_t events) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  if (!it->second->OnEvent(events)) DropClient(id);
}

void Server::DropClient(uint64_t id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  loop_.Remove(it->second->fd());
  clients_.erase(it);
  sockets_.RemoveClient(id);
  stats_.clients_now--;
}

void Server::OnLookupDone(uint64_t client_id, uint32_t seq, const proto::Reply& reply) {
  auto it = clients_.find(client_id);
  if (it == clients_.end()) return;  // gone meanwhile
  if (!it->second->DeliverLookup(seq, reply)) DropClient(client_id);
}

const char* Server::ReadSignal() {
  signalfd_siginfo info;
  const char* name = nullptr;
  while (read(signal_fd_.get(), &info, sizeof(info)) == static_cast<ssize_t>(sizeof(info))) {
    if (info.ssi_signo == SIGTERM) name = "SIGTERM";
    if (info.ssi_signo == SIGINT) name = "SIGINT";
    if (info.ssi_signo == SIGHUP) {
      Log(LogLevel::kInfo, "event=signal signal=SIGHUP action=policy_reload");
      policy_.Reload(&stats_);
    }
  }
  return name;
}

void Server::Shutdown(const char* reason) {
  if (stopped_) return;
  stopped_ = true;
  if (reason != nullptr) {
    Log(LogLevel::kInfo, "event=shutdown reason={} clients={} sockets={}", reason, clients_.size(),
        sockets_.size());
  }
  if (admin_) admin_->Close();
  for (auto& [id, client] : clients_) loop_.Remove(client->fd());
  stats_.clients_now -= clients_.size();
  clients_.clear();
  sockets_.CloseAll();
  listener_.Close();
}

}  // namespace xsock::backend
