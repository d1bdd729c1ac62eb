#include "backend/resolver.h"

#include <netdb.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <system_error>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "backend/errors.h"
#include "backend/log.h"
#include "shared/resolve_codes.h"

namespace xsock::backend {
namespace {

constexpr int kTimerPeriodMs = 250;  // how often overdue lookups are looked for

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

uint32_t ErrnoOrZero(int e) { return e > 0 && e < 4096 ? static_cast<uint32_t>(e) : 0; }

// A name from the host's resolver, cut to what the wire carries. glibc's names are far
// shorter (DNS names are at most 253 bytes); only a pathological /etc/hosts line is cut.
std::string Bounded(const char* s) {
  std::string out(s);
  if (out.size() > proto::kMaxHostNameLen) out.resize(proto::kMaxHostNameLen);
  return out;
}

proto::Reply DoResolve(const proto::ResolveRequest& req) {
  addrinfo hints = {};
  hints.ai_flags = proto::AiFlagsFromWire(req.flags);
  hints.ai_family = req.family;
  hints.ai_socktype = req.socktype;
  hints.ai_protocol = req.protocol;
  addrinfo* res = nullptr;
  errno = 0;
  const int rc = getaddrinfo(req.host ? req.host->c_str() : nullptr,
                             req.service ? req.service->c_str() : nullptr, &hints, &res);
  const int saved_errno = errno;
  proto::ResolveReply reply;
  if (rc != 0) {
    reply.gai = proto::GaiToWire(rc);
    if (rc == EAI_SYSTEM) reply.sys_errno = ErrnoOrZero(saved_errno);
    return reply;
  }
  for (const addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    if (reply.entries.size() == proto::kMaxResolveEntries) break;  // the rest is dropped
    auto addr = proto::FromSockaddr(ai->ai_addr, ai->ai_addrlen);
    if (!addr.ok()) continue;  // not AF_INET/AF_INET6: cannot happen with these hints
    if (ai == res && ai->ai_canonname != nullptr) reply.canonname = Bounded(ai->ai_canonname);
    reply.entries.push_back(
        {.socktype = ai->ai_socktype, .protocol = ai->ai_protocol, .addr = *addr});
  }
  freeaddrinfo(res);
  if (reply.entries.empty()) {
    reply = proto::ResolveReply{.gai = static_cast<uint16_t>(proto::GaiCode::kFail)};
  }
  return reply;
}

proto::Reply DoNameInfo(const proto::NameInfoRequest& req) {
  sockaddr_storage ss;
  const socklen_t len = proto::ToSockaddr(req.addr, &ss);
  char host[NI_MAXHOST];
  char serv[proto::kMaxServiceLen + 1];
  errno = 0;
  const int rc =
      getnameinfo(reinterpret_cast<const sockaddr*>(&ss), len, req.want_host ? host : nullptr,
                  req.want_host ? sizeof(host) : 0, req.want_service ? serv : nullptr,
                  req.want_service ? sizeof(serv) : 0, proto::NiFlagsFromWire(req.flags));
  const int saved_errno = errno;
  proto::NameInfoReply reply;
  if (rc != 0) {
    reply.gai = proto::GaiToWire(rc);
    if (rc == EAI_SYSTEM) reply.sys_errno = ErrnoOrZero(saved_errno);
    return reply;
  }
  if (req.want_host) reply.host = Bounded(host);
  if (req.want_service) reply.service = serv;
  return reply;
}

// Size of the encoded reply, to keep it within kMaxMessageSize.
size_t HostEntSize(const proto::HostEntReply& r) {
  size_t n = proto::kHeaderSize + 20 + r.name.size() + r.addrs.size() * 16;
  for (const auto& a : r.aliases) n += 2 + a.size();
  return n;
}

proto::Reply DoHostEnt(const proto::HostEntRequest& req) {
  hostent he = {};
  hostent* result = nullptr;
  int herr = 0;
  int rc = 0;
  std::vector<char> buf(8192);
  for (;;) {
    if (req.op == proto::HostEntRequest::kByName) {
      rc = gethostbyname2_r(req.name.c_str(), req.family, &he, buf.data(), buf.size(), &result,
                            &herr);
    } else {
      rc = gethostbyaddr_r(req.addr.data(), static_cast<socklen_t>(req.addr.size()), req.family,
                           &he, buf.data(), buf.size(), &result, &herr);
    }
    if (rc == ERANGE && buf.size() < (size_t{1} << 20)) {
      buf.resize(buf.size() * 2);
      continue;
    }
    break;
  }
  proto::HostEntReply reply;
  const bool usable = result != nullptr &&
                      ((he.h_addrtype == AF_INET && he.h_length == 4) ||
                       (he.h_addrtype == AF_INET6 && he.h_length == 16)) &&
                      he.h_addr_list != nullptr && he.h_addr_list[0] != nullptr;
  if (!usable) {
    if (result != nullptr || herr == 0) herr = NO_RECOVERY;
    reply.herr = proto::HostErrToWire(herr);
    if (herr == NETDB_INTERNAL) reply.sys_errno = ErrnoOrZero(rc != 0 ? rc : errno);
    return reply;
  }
  reply.family = static_cast<uint16_t>(he.h_addrtype);
  reply.name = Bounded(he.h_name != nullptr ? he.h_name : "");
  for (char** a = he.h_aliases; a != nullptr && *a != nullptr; ++a) {
    if (reply.aliases.size() == proto::kMaxHostAliases) break;
    reply.aliases.push_back(Bounded(*a));
  }
  for (char** p = he.h_addr_list; *p != nullptr; ++p) {
    if (reply.addrs.size() == proto::kMaxHostAddrs) break;
    std::array<uint8_t, 16> a{};
    std::memcpy(a.data(), *p, static_cast<size_t>(he.h_length));
    reply.addrs.push_back(a);
  }
  // Aliases go first when the whole does not fit one message.
  while (HostEntSize(reply) > proto::kMaxMessageSize && !reply.aliases.empty()) {
    reply.aliases.pop_back();
  }
  if (HostEntSize(reply) > proto::kMaxMessageSize) reply.name.resize(256);
  return reply;
}

}  // namespace

bool IsLookup(proto::MsgType t) {
  return t == proto::MsgType::kResolve || t == proto::MsgType::kNameInfo ||
         t == proto::MsgType::kHostEnt;
}

proto::Reply LookupOnHost(const proto::Request& req) {
  if (const auto* r = std::get_if<proto::ResolveRequest>(&req)) return DoResolve(*r);
  if (const auto* r = std::get_if<proto::NameInfoRequest>(&req)) return DoNameInfo(*r);
  if (const auto* r = std::get_if<proto::HostEntRequest>(&req)) return DoHostEnt(*r);
  return LookupFailedReply(proto::TypeOf(req), EINVAL);
}

proto::Reply LookupFailedReply(proto::MsgType t, int err) {
  switch (t) {
    case proto::MsgType::kNameInfo:
      if (err != 0) return proto::NameInfoReply{.err = err};
      return proto::NameInfoReply{.gai = static_cast<uint16_t>(proto::GaiCode::kAgain)};
    case proto::MsgType::kHostEnt:
      if (err != 0) return proto::HostEntReply{.err = err};
      return proto::HostEntReply{.herr = static_cast<uint16_t>(proto::HostErr::kTryAgain)};
    default:
      if (err != 0) return proto::ResolveReply{.err = err};
      return proto::ResolveReply{.gai = static_cast<uint16_t>(proto::GaiCode::kAgain)};
  }
}

// ---- The worker pool ----

struct Resolver::Shared {
  struct Job {
    uint64_t ticket;
    proto::Request req;
  };
  struct Done {
    uint64_t ticket;
    proto::Reply reply;
  };
  std::mutex mu;
  std::condition_variable cv;
  std::deque<Job> queue;
  std::vector<Done> done;
  int threads = 0;
  int idle = 0;
  bool stop = false;
  UniqueFd wake;  // eventfd: done is not empty

  // A worker: takes jobs until stopped. Holds `self`, so the state outlives the Resolver.
  static void Work(std::shared_ptr<Shared> self) {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);  // signals are the loop's business
    std::unique_lock lock(self->mu);
    for (;;) {
      ++self->idle;
      self->cv.wait(lock, [&] { return self->stop || !self->queue.empty(); });
      --self->idle;
      if (self->stop) break;
      Job job = std::move(self->queue.front());
      self->queue.pop_front();
      lock.unlock();
      proto::Reply reply = LookupOnHost(job.req);
      lock.lock();
      self->done.push_back({job.ticket, std::move(reply)});
      const uint64_t one = 1;
      (void)!write(self->wake.get(), &one, sizeof(one));
    }
    --self->threads;
  }
};

Resolver::Resolver(EventLoop* loop, Stats* stats, Deliver deliver, ResolverOptions options)
    : loop_(loop),
      stats_(stats),
      deliver_(std::move(deliver)),
      options_(options),
      shared_(std::make_shared<Shared>()) {}

Resolver::~Resolver() {
  if (shared_->wake.valid()) loop_->Remove(shared_->wake.get());
  if (timer_.valid()) loop_->Remove(timer_.get());
  std::lock_guard lock(shared_->mu);
  shared_->stop = true;
  shared_->queue.clear();
  shared_->cv.notify_all();
  // Workers are detached: one inside a lookup returns when the lookup does, then exits.
}

absl::Status Resolver::Init() {
  shared_->wake.reset(eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC));
  if (!shared_->wake.valid()) return ErrnoError(errno, "resolver eventfd");
  timer_.reset(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer_.valid()) return ErrnoError(errno, "resolver timerfd");
  if (auto s = loop_->Add(shared_->wake.get(), EPOLLIN, Token{Source::kResolver, 0}); !s.ok()) {
    return s;
  }
  return loop_->Add(timer_.get(), EPOLLIN, Token{Source::kResolver, 1});
}

bool Resolver::Submit(uint64_t client_id, pid_t pid, uint32_t seq, proto::Request req) {
  stats_->lookups++;
  const proto::MsgType type = proto::TypeOf(req);
  int& mine = per_pid_[pid];
  if (pending_.size() >= static_cast<size_t>(options_.max_outstanding) ||
      mine >= options_.max_per_pid) {
    if (mine == 0) per_pid_.erase(pid);
    stats_->lookups_refused++;
    Log(LogLevel::kWarn, "event=lookup_refused client={} pid={} type={} outstanding={}", client_id,
        pid, proto::Name(type), pending_.size());
    return false;
  }
  const uint64_t ticket = next_ticket_++;
  {
    std::lock_guard lock(shared_->mu);
    if (shared_->idle == 0 && shared_->threads < options_.threads) {
      try {
        std::thread(Shared::Work, shared_).detach();
        ++shared_->threads;
      } catch (const std::system_error& e) {
        Log(LogLevel::kWarn, "event=resolver_thread_failed error={}", Quoted(e.what()));
        if (shared_->threads == 0) {
          if (mine == 0) per_pid_.erase(pid);
          stats_->lookups_refused++;
          return false;
        }
      }
    }
    shared_->queue.push_back({ticket, std::move(req)});
    shared_->cv.notify_one();
  }
  ++mine;
  pending_[ticket] = Pending{client_id, pid, seq, type, NowMs() + options_.deadline_ms};
  ArmTimer(true);
  return true;
}

void Resolver::OnEvent(uint64_t id) {
  if (id == 1) {
    uint64_t ticks;
    (void)!read(timer_.get(), &ticks, sizeof(ticks));
    ExpireOverdue();
    return;
  }
  uint64_t n;
  (void)!read(shared_->wake.get(), &n, sizeof(n));
  std::vector<Shared::Done> done;
  {
    std::lock_guard lock(shared_->mu);
    done.swap(shared_->done);
  }
  for (Shared::Done& d : done) Complete(d.ticket, std::move(d.reply));
  if (pending_.empty()) ArmTimer(false);
}

void Resolver::Complete(uint64_t ticket, proto::Reply reply) {
  auto it = pending_.find(ticket);
  if (it == pending_.end()) return;  // answered EAI_AGAIN at its deadline already
  const Pending p = it->second;
  pending_.erase(it);
  if (--per_pid_[p.pid] <= 0) per_pid_.erase(p.pid);
  const int code = std::visit(
      [](const auto& m) -> int {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, proto::HostEntReply>) {
          return m.herr;
        } else if constexpr (std::is_same_v<T, proto::ResolveReply> ||
                             std::is_same_v<T, proto::NameInfoReply>) {
          return m.gai;
        } else {
          return -1;
        }
      },
      reply);
  Log(LogLevel::kDebug, "event=lookup client={} pid={} type={} result={}", p.client_id, p.pid,
      proto::Name(p.type), code);
  deliver_(p.client_id, p.seq, std::move(reply));
}

void Resolver::ExpireOverdue() {
  const int64_t now = NowMs();
  std::vector<uint64_t> overdue;
  for (const auto& [ticket, p] : pending_) {
    if (p.deadline_ms <= now) overdue.push_back(ticket);
  }
  if (!overdue.empty()) {
    // A job still queued is not started at all.
    std::lock_guard lock(shared_->mu);
    std::erase_if(shared_->queue, [&](const Shared::Job& j) {
      return std::find(overdue.begin(), overdue.end(), j.ticket) != overdue.end();
    });
  }
  for (uint64_t ticket : overdue) {
    const Pending p = pending_[ticket];
    stats_->lookups_timed_out++;
    Log(LogLevel::kInfo, "event=lookup_timeout client={} pid={} type={} after_ms={}", p.client_id,
        p.pid, proto::Name(p.type), options_.deadline_ms);
    Complete(ticket, LookupFailedReply(p.type, 0));
  }
  if (pending_.empty()) ArmTimer(false);
}

void Resolver::ArmTimer(bool on) {
  if (on == timer_armed_) return;
  itimerspec spec = {};
  if (on) {
    spec.it_value.tv_nsec = kTimerPeriodMs * 1000000L;
    spec.it_interval = spec.it_value;
  }
  timerfd_settime(timer_.get(), 0, &spec, nullptr);
  timer_armed_ = on;
}

}  // namespace xsock::backend
