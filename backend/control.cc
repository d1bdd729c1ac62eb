#include "backend/control.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <string>
#include <type_traits>

#include "backend/errors.h"
#include "shared/socket_page.h"
#include "shared/unix_io.h"

namespace xsock::backend {
namespace {

// Requests handled per readiness event, so that one busy client cannot hold the loop.
constexpr int kMaxRequestsPerEvent = 64;

// A descriptor the reply owns (and closes once sent), so that a queued reply never refers
// to a number closed and reused meanwhile.
UniqueFd Dup(int fd) { return UniqueFd(fcntl(fd, F_DUPFD_CLOEXEC, 0)); }

// The control connection's request bucket: --max-request-rate per second, burst as large.
TokenBucket RequestBucket(const ControlContext& ctx) {
  const Limits* limits = ctx.sockets != nullptr ? ctx.sockets->limits() : nullptr;
  if (limits == nullptr) return TokenBucket(0, 0, std::chrono::steady_clock::now());
  const uint64_t rate = limits->options().max_request_rate;
  return TokenBucket(rate, rate, limits->Now());
}

}  // namespace

ControlClient::ControlClient(uint64_t id, UniqueFd fd, ClientIdentity identity, ControlContext ctx)
    : id_(id),
      fd_(std::move(fd)),
      identity_(std::move(identity)),
      cred_{identity_.pid, identity_.uid, identity_.gid},
      ctx_(ctx),
      request_rate_(RequestBucket(ctx_)) {}

absl::Status ControlClient::Start() {
  return ctx_.loop->Add(fd_.get(), EPOLLIN | EPOLLRDHUP, Token{Source::kClient, id_});
}

bool ControlClient::OnEvent(uint32_t events) {
  if (awaiting_lookup_) {
    // Only hang-ups are watched meanwhile: nobody is left to answer.
    if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) {
      return Drop(LogLevel::kInfo, "client_disconnect", "closed during a lookup");
    }
    return true;
  }
  if (pending_) {
    if (!FlushPending()) return false;
    if (pending_) return true;  // still no room
    WatchFor(EPOLLIN | EPOLLRDHUP);
  }
  if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) return ReadRequests();
  return true;
}

bool ControlClient::Drop(LogLevel level, const char* event, std::string_view reason) {
  Log(level, "event={} client={} pid={} uid={} exe={} reason={}", event, id_, cred_.pid, cred_.uid,
      Quoted(identity_.exe.empty() ? "?" : identity_.exe), Quoted(reason));
  return false;
}

void ControlClient::WatchFor(uint32_t events) {
  (void)ctx_.loop->Modify(fd_.get(), events, Token{Source::kClient, id_});
}

bool ControlClient::ReadRequests() {
  std::vector<uint8_t> buf;
  std::vector<int> raw_fds;
  for (int i = 0; i < kMaxRequestsPerEvent && !pending_ && !awaiting_lookup_; ++i) {
    const ssize_t n =
        RecvPacket(LibcSyscalls(), fd_.get(), buf, proto::kMaxMessageSize, raw_fds, MSG_DONTWAIT);
    std::vector<UniqueFd> fds;
    for (int fd : raw_fds) fds.emplace_back(fd);
    if (n == -EAGAIN) return true;
    if (n == -EMSGSIZE) {
      return Drop(LogLevel::kWarn, "protocol_error",
                  fmt::format("message longer than {} bytes or with more than {} descriptors",
                              proto::kMaxMessageSize, kMaxFdsPerMessage));
    }
    if (n < 0) {
      return Drop(LogLevel::kInfo, "client_disconnect",
                  fmt::format("recv: {}", ErrnoName(static_cast<int>(-n))));
    }
    // A zero-length packet reads like end of file; both end the connection.
    if (n == 0) return Drop(LogLevel::kInfo, "client_disconnect", "closed");
    if (!HandleMessage(buf, fds)) return false;
  }
  // Level-triggered: requests left unread raise the next event.
  return true;
}

bool ControlClient::HandleMessage(std::span<const uint8_t> bytes, std::vector<UniqueFd>& fds) {
  auto decoded = proto::DecodeRequest(bytes);
  if (!decoded.ok()) {
    return Drop(LogLevel::kWarn, "protocol_error", std::string(decoded.status().message()));
  }
  const proto::MsgType type = proto::TypeOf(decoded->msg);
  const int want_fds = proto::FdsWithRequest(type);
  if (fds.size() != static_cast<size_t>(want_fds)) {
    return Drop(LogLevel::kWarn, "protocol_error",
                fmt::format("{}: {} descriptors attached, expected {}", proto::Name(type),
                            fds.size(), want_fds));
  }
  if (!hello_done_ && type != proto::MsgType::kHello) {
    return Drop(LogLevel::kWarn, "protocol_error",
                fmt::format("{}: request before hello", proto::Name(type)));
  }
  if (hello_done_ && type == proto::MsgType::kHello) {
    return Drop(LogLevel::kWarn, "protocol_error", "hello: repeated");
  }
  if (!RequestAllowed(type)) {
    // Over the request rate: answered at once with EAGAIN, the connection stays.
    const int err = Refuse(LimitKind::kRate);
    return Send(Outgoing{proto::EncodeReply(decoded->seq, RefusalReply(decoded->msg, err)), {}});
  }
  if (IsLookup(type)) return StartLookup(decoded->seq, std::move(decoded->msg));
  Outgoing out;
  const proto::Reply reply = Dispatch(decoded->msg, fds, &out.fds);
  out.bytes = proto::EncodeReply(decoded->seq, reply);
  return Send(std::move(out));
}

bool ControlClient::Send(Outgoing out) {
  std::vector<int> raw;
  for (const UniqueFd& fd : out.fds) raw.push_back(fd.get());
  const int rc = SendPacket(LibcSyscalls(), fd_.get(), out.bytes, raw, MSG_DONTWAIT);
  if (rc == 0) return true;  // our copies of the descriptors close with `out`
  if (rc == -EAGAIN) {
    // The client is not reading its replies: stop reading its requests until it does.
    pending_ = std::move(out);
    WatchFor(EPOLLOUT | EPOLLRDHUP);
    return true;
  }
  return Drop(LogLevel::kInfo, "client_disconnect", fmt::format("send: {}", ErrnoName(-rc)));
}

bool ControlClient::FlushPending() {
  Outgoing out = std::move(*pending_);
  pending_.reset();
  return Send(std::move(out));
}

BackendSocket* ControlClient::Authorized(uint64_t socket_id) {
  if (!authority_.contains(socket_id)) return nullptr;
  BackendSocket* s = ctx_.sockets->Find(socket_id);
  if (s == nullptr) authority_.erase(socket_id);
  return s;
}

int ControlClient::Refuse(LimitKind kind) {
  Limits* limits = ctx_.sockets->limits();
  limits->CountRefusal(kind);
  if (auto suppressed = limit_log_[static_cast<int>(kind)].Allow(limits->Now())) {
    const Limits::Usage u = limits->ClientUsage(id_);
    Log(LogLevel::kWarn,
        "event=limit kind={} client={} uid={} pid={} exe={} errno={} sockets={} ring_bytes={} "
        "pending_connects={} budget_used={} suppressed={}",
        LimitKindName(kind), id_, cred_.uid, cred_.pid,
        Quoted(identity_.exe.empty() ? "?" : identity_.exe), ErrnoName(LimitErrno(kind)), u.sockets,
        u.ring_bytes, u.pending_connects, limits->total_bytes(), *suppressed);
  }
  return LimitErrno(kind);
}

bool ControlClient::RequestAllowed(proto::MsgType type) {
  if (type == proto::MsgType::kHello || type == proto::MsgType::kRelease) return true;
  const Limits* limits = ctx_.sockets->limits();
  if (limits == nullptr || limits->options().max_request_rate == 0) return true;
  return request_rate_.Take(limits->Now());
}

int ControlClient::ConnectLimitRefusal(uint64_t socket_id) {
  Limits* limits = ctx_.sockets->limits();
  if (limits == nullptr) return 0;
  const BackendSocket* s = Authorized(socket_id);
  // Anything but a connect that would start is left to Handle(ConnectRequest).
  if (s == nullptr || s->state() != SocketState::kIdle) return 0;
  const uint64_t owner = limits->OwnerOf(socket_id);
  if (const auto refused = limits->CheckConnect(owner != 0 ? owner : id_)) return Refuse(*refused);
  return 0;
}

bool ControlClient::StartLookup(uint32_t seq, proto::Request req) {
  const proto::MsgType type = proto::TypeOf(req);
  if (!(caps_ & proto::kCapResolve) || ctx_.resolver == nullptr) {
    return Send(Outgoing{proto::EncodeReply(seq, LookupFailedReply(type, EOPNOTSUPP)), {}});
  }
  if (!ctx_.resolver->Submit(id_, cred_.pid, seq, std::move(req))) {
    return Send(Outgoing{proto::EncodeReply(seq, LookupFailedReply(type, 0)), {}});
  }
  awaiting_lookup_ = true;
  WatchFor(EPOLLRDHUP);
  return true;
}

bool ControlClient::DeliverLookup(uint32_t seq, const proto::Reply& reply) {
  awaiting_lookup_ = false;
  if (!Send(Outgoing{proto::EncodeReply(seq, reply), {}})) return false;
  // Requests that arrived meanwhile raise an event as soon as EPOLLIN is watched again.
  if (!pending_) WatchFor(EPOLLIN | EPOLLRDHUP);
  return true;
}

proto::Reply ControlClient::Dispatch(const proto::Request& req, std::vector<UniqueFd>& fds,
                                     std::vector<UniqueFd>* reply_fds) {
  return std::visit(
      [&](const auto& m) -> proto::Reply {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, proto::SocketRequest> ||
                      std::is_same_v<T, proto::ListenRequest>) {
          return Handle(m, reply_fds);
        } else if constexpr (std::is_same_v<T, proto::AttachRequest>) {
          return Handle(m, fds, reply_fds);
        } else if constexpr (std::is_same_v<T, proto::ResolveRequest> ||
                             std::is_same_v<T, proto::NameInfoRequest> ||
                             std::is_same_v<T, proto::HostEntRequest>) {
          return LookupFailedReply(proto::TypeOf(req), EINVAL);  // StartLookup's, never here
        } else {
          return Handle(m);
        }
      },
      req);
}

proto::Reply ControlClient::Handle(const proto::HelloRequest& req) {
  proto::HelloReply reply;  // on refusal: err and the version xsockd speaks, the rest 0
  if (req.min_version > proto::kVersion || req.max_version < proto::kVersion) {
    reply.err = EPROTONOSUPPORT;
    return reply;
  }
  reply.server_pid = static_cast<uint32_t>(getpid());
  hello_done_ = true;
  caps_ = req.caps & proto::kAllCaps;
  reply.caps = caps_;
  Log(LogLevel::kDebug, "event=hello client={} caps={:#x}", id_, caps_);
  return reply;
}

proto::Reply ControlClient::Handle(const proto::SocketRequest& req,
                                   std::vector<UniqueFd>* reply_fds) {
  proto::SocketReply reply;
  if (req.domain == AF_INET6 && !(caps_ & proto::kCapIpv6)) {
    reply.err = EAFNOSUPPORT;
    return reply;
  }
  SocketParams params;
  params.client_id = id_;
  params.client_pid = static_cast<uint32_t>(cred_.pid);
  params.client_uid = cred_.uid;
  params.client_exe = identity_.exe;
  params.domain = static_cast<int>(req.domain);
  params.ring_order = req.ring_order != 0 ? req.ring_order : ctx_.default_ring_order;
  // Limits: sockets and ring memory of this client, the global budget. An order out of
  // range is refused by Create (EINVAL).
  if (const Limits* limits = ctx_.sockets->limits(); limits != nullptr &&
                                                     params.ring_order >= kMinRingOrder &&
                                                     params.ring_order <= kMaxRingOrder) {
    if (const auto refused = limits->CheckSocket(id_, SocketRingBytes(params.ring_order))) {
      reply.err = Refuse(*refused);
      return reply;
    }
  }
  UniqueFd app_end;
  auto created = ctx_.sockets->Create(params, &app_end);
  if (!created.ok()) {
    Log(LogLevel::kWarn, "event=socket_create_failed client={} pid={} error={}", id_, cred_.pid,
        Quoted(std::string(created.status().message())));
    reply.err = ErrnoOf(created.status(), ENOMEM);
    return reply;
  }
  BackendSocket* s = *created;
  // The app's end closes with the failed reply, so the socket frees itself.
  UniqueFd memfd = Dup(s->memfd());
  if (!memfd.valid()) {
    reply.err = errno;
    return reply;
  }
  authority_.insert(s->id());
  Log(LogLevel::kInfo, "event=socket_create {} domain={} ring_order={}", s->Who(),
      req.domain == AF_INET ? "inet" : "inet6", params.ring_order);
  reply.ring_order = params.ring_order;
  reply.socket_id = s->id();
  // Order fixed by the protocol: [channel app end, memfd].
  reply_fds->push_back(std::move(app_end));
  reply_fds->push_back(std::move(memfd));
  return reply;
}

proto::Reply ControlClient::Handle(const proto::ConnectRequest& req) {
  if (const int err = ConnectLimitRefusal(req.socket_id); err != 0)
    return proto::ConnectReply{.err = err};
  proto::ConnectReply reply;
  BackendSocket* s = Authorized(req.socket_id);
  if (s == nullptr) {
    reply.err = EBADF;
    return reply;
  }
  if (req.addr.family == AF_INET6 && !(caps_ & proto::kCapIpv6)) {
    reply.err = EAFNOSUPPORT;
    return reply;
  }
  // Access policy (backend/policy.h), for a connect that would start: the rules see the
  // destination the app asked for; an allowed one may be rewritten for the host.
  proto::SockAddr target = req.addr;
  if (std::shared_ptr<const Policy> policy = ctx_.policy ? ctx_.policy->current() : nullptr;
      policy != nullptr && s->state() == SocketState::kIdle) {
    if (const auto dest = PolicyEndpoint(req.addr)) {
      const PolicyDecision d = DecidePolicyConnect(*policy, identity_, *dest);
      if (!d.allowed) {
        NoteDenial();
        Log(LogLevel::kInfo,
            "event=deny op=connect client={} uid={} pid={} exe={} socket={} dest={} rule={} "
            "errno={}",
            id_, cred_.uid, cred_.pid, Quoted(identity_.exe.empty() ? "?" : identity_.exe),
            req.socket_id, proto::ToString(req.addr), d.RuleName(), ErrnoName(d.err));
        reply.err = d.err;
        return reply;
      }
      if (d.rewritten) {
        target = PolicySockAddr(*d.rewritten, req.addr);
        Log(LogLevel::kInfo,
            "event=rewrite op=connect client={} uid={} pid={} exe={} socket={} dest={} to={} "
            "rule={}#rewrite{}",
            id_, cred_.uid, cred_.pid, Quoted(identity_.exe.empty() ? "?" : identity_.exe),
            req.socket_id, proto::ToString(req.addr), proto::ToString(target), d.client->name,
            d.rewrite_rule);
      }
    }
  }
  reply.err = s->Connect(target);
  ctx_.sockets->Settle(s);
  return reply;
}

proto::Reply ControlClient::Handle(const proto::ReleaseRequest& req) {
  proto::ReleaseReply reply;
  BackendSocket* s = Authorized(req.socket_id);
  if (s == nullptr) {
    reply.err = EBADF;
    return reply;
  }
  // Only this connection's claim goes: the socket lives as long as the app's channel end.
  authority_.erase(req.socket_id);
  Log(LogLevel::kInfo, "event=release socket={} client={} pid={}", req.socket_id, id_, cred_.pid);
  return reply;
}

proto::Reply ControlClient::Handle(const proto::ShutdownRequest& req) {
  proto::ShutdownReply reply;
  BackendSocket* s = Authorized(req.socket_id);
  if (s == nullptr) {
    reply.err = EBADF;
    return reply;
  }
  reply.err = s->Shutdown(static_cast<int>(req.how));
  ctx_.sockets->Settle(s);
  return reply;
}

proto::Reply ControlClient::Handle(const proto::GetSockNameRequest& req) {
  proto::GetSockNameReply reply;
  BackendSocket* s = Authorized(req.socket_id);
  reply.err = s == nullptr ? EBADF : s->GetSockName(&reply.addr);
  if (reply.err != 0) reply.addr = {};
  return reply;
}

proto::Reply ControlClient::Handle(const proto::GetPeerNameRequest& req) {
  proto::GetPeerNameReply reply;
  BackendSocket* s = Authorized(req.socket_id);
  reply.err = s == nullptr ? EBADF : s->GetPeerName(&reply.addr);
  if (reply.err != 0) reply.addr = {};
  return reply;
}

proto::Reply ControlClient::Handle(const proto::SetSockOptRequest& req) {
  proto::SetSockOptReply reply;
  BackendSocket* s = Authorized(req.socket_id);
  reply.err = s == nullptr ? EBADF : s->SetSockOpt(req.level, req.optname, req.value);
  return reply;
}

proto::Reply ControlClient::Handle(const proto::GetSockOptRequest& req) {
  proto::GetSockOptReply reply;
  BackendSocket* s = Authorized(req.socket_id);
  reply.err =
      s == nullptr ? EBADF : s->GetSockOpt(req.level, req.optname, req.optlen, &reply.value);
  if (reply.err != 0) reply.value.clear();
  return reply;
}

proto::Reply ControlClient::Handle(const proto::AttachRequest&, std::vector<UniqueFd>& fds,
                                   std::vector<UniqueFd>* reply_fds) {
  proto::AttachReply reply;
  struct stat st;
  if (fstat(fds[0].get(), &st) != 0) {
    reply.err = EBADF;
    return reply;
  }
  if (!S_ISSOCK(st.st_mode)) {
    reply.err = ENOTSOCK;
    return reply;
  }
  BackendSocket* s = ctx_.sockets->FindByInode(st.st_dev, st.st_ino);
  if (s == nullptr) {
    reply.err = EBADF;
    return reply;
  }
  // A listener has no memory: its channel is all the app needs (ring_order 0, no fd).
  const bool listening = s->state() == SocketState::kListening;
  UniqueFd memfd;
  if (!listening) {
    memfd = Dup(s->memfd());
    if (!memfd.valid()) {
      reply.err = errno;
      return reply;
    }
  }
  authority_.insert(s->id());
  ctx_.sockets->Adopt(*s, id_);  // limits: takes over the charge if its client is gone
  Log(LogLevel::kInfo, "event=attach socket={} client={} pid={} state={}", s->id(), id_, cred_.pid,
      listening ? "listening" : "stream");
  reply.ring_order = s->ring_order();
  reply.socket_id = s->id();
  reply.state = static_cast<uint32_t>(s->state());
  if (!listening) reply_fds->push_back(std::move(memfd));
  return reply;
}

proto::Reply ControlClient::Handle(const proto::StatsRequest&) {
  proto::StatsReply reply;
  if (!(caps_ & proto::kCapStats)) {
    reply.err = EOPNOTSUPP;
    return reply;
  }
  const Stats& st = *ctx_.stats;
  reply.clients_now = st.clients_now;
  reply.clients_total = st.clients_total;
  reply.sockets_now = st.sockets_now;
  reply.sockets_total = st.sockets_total;
  reply.connects_ok = st.connects_ok;
  reply.connects_failed = st.connects_failed;
  reply.bytes_to_host = st.bytes_to_host;
  reply.bytes_from_host = st.bytes_from_host;
  return reply;
}

proto::Reply ControlClient::Handle(const proto::BindRequest& req) {
  proto::BindReply reply;
  BackendSocket* s = Authorized(req.socket_id);
  if (s == nullptr) {
    reply.err = EBADF;
    return reply;
  }
  if (req.addr.family == AF_INET6 && !(caps_ & proto::kCapIpv6)) {
    reply.err = EAFNOSUPPORT;
    return reply;
  }
  if (std::shared_ptr<const Policy> policy = ctx_.policy ? ctx_.policy->current() : nullptr;
      policy != nullptr && s->state() == SocketState::kIdle) {
    if (const auto local = PolicyEndpoint(req.addr)) {
      const PolicyDecision d = DecidePolicyBind(*policy, identity_, *local);
      if (!d.allowed) {
        NoteDenial();
        Log(LogLevel::kInfo,
            "event=deny op=bind client={} uid={} pid={} exe={} socket={} dest={} rule={} "
            "errno={}",
            id_, cred_.uid, cred_.pid, Quoted(identity_.exe.empty() ? "?" : identity_.exe),
            req.socket_id, proto::ToString(req.addr), d.RuleName(), ErrnoName(d.err));
        reply.err = d.err;
        return reply;
      }
    }
  }
  reply.err = ctx_.sockets->Bind(s, req.addr, &reply.addr);
  if (reply.err != 0) reply.addr = {};
  return reply;
}

proto::Reply ControlClient::Handle(const proto::ListenRequest& req,
                                   std::vector<UniqueFd>* reply_fds) {
  proto::ListenReply reply;
  BackendSocket* s = Authorized(req.socket_id);
  if (s == nullptr) {
    reply.err = EBADF;
    return reply;
  }
  UniqueFd app_end;
  reply.err = ctx_.sockets->Listen(s, req.backlog, &app_end);  // s may be freed now
  if (reply.err == 0) reply_fds->push_back(std::move(app_end));
  return reply;
}

}  // namespace xsock::backend
