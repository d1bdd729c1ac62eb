#include "backend/admin.h"

#include <sys/socket.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <map>

#include "absl/strings/numbers.h"
#include "backend/backend_socket.h"
#include "backend/errors.h"
#include "backend/log.h"
#include "backend/metrics.h"
#include "fmt/format.h"

namespace xsock::backend {
namespace {

using SteadyClock = std::chrono::steady_clock;

Cell Num(uint64_t v) { return Cell{std::to_string(v), true}; }
Cell Str(std::string v) { return Cell{std::move(v), false}; }
Cell Seconds(SteadyClock::duration d) {
  return Cell{fmt::format("{:.1f}", std::chrono::duration<double>(d).count()), true};
}

std::string Iso8601(std::chrono::system_clock::time_point t) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm;
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

std::string AddrText(int err, const proto::SockAddr& a) {
  if (err != 0 || a.family == 0) return "-";
  return proto::ToString(a);
}

// Per client: live sockets and what they carried so far.
struct LiveTotals {
  uint64_t sockets = 0;
  uint64_t to_host = 0;
  uint64_t from_host = 0;
};

absl::flat_hash_map<uint64_t, LiveTotals> LiveByClient(const SocketTable& sockets) {
  absl::flat_hash_map<uint64_t, LiveTotals> by;
  sockets.ForEach([&](const BackendSocket& s) {
    LiveTotals& t = by[s.params().client_id];
    t.sockets++;
    t.to_host += s.bytes_to_host();
    t.from_host += s.bytes_from_host();
  });
  return by;
}

// Ordered by id, so listings are stable.
template <class Map>
std::vector<uint64_t> SortedKeys(const Map& m) {
  std::vector<uint64_t> ids;
  ids.reserve(m.size());
  for (const auto& [id, v] : m) ids.push_back(id);
  std::sort(ids.begin(), ids.end());
  return ids;
}

std::string EscapeCell(const std::string& s) {
  std::string out;
  out.reserve(s.size());
  for (char c : s) {
    if (c == '\t') {
      out += "\\t";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\\') {
      out += "\\\\";
    } else {
      out.push_back(c);
    }
  }
  return out;
}

}  // namespace

Table ClientsTable(const AdminSources& src) {
  Table t;
  t.columns = {
      "client",         "pid",     "uid",       "gid",     "exe",   "netns", "cgroup", "sockets",
      "sockets_closed", "to_host", "from_host", "denials", "since", "age_s"};
  const auto live = LiveByClient(*src.sockets);
  const auto now = SteadyClock::now();
  for (uint64_t id : SortedKeys(*src.clients)) {
    const ControlClient& c = *src.clients->at(id);
    const ClientIdentity& who = c.identity();
    const auto it = live.find(id);
    const LiveTotals l = it == live.end() ? LiveTotals{} : it->second;
    const SocketTable::ClientTotals closed = src.sockets->ClosedTotals(id);
    t.rows.push_back({Num(id), Num(static_cast<uint64_t>(who.pid)), Num(who.uid), Num(who.gid),
                      Str(who.exe.empty() ? "?" : who.exe), Num(who.netns),
                      Str(who.cgroup.empty() ? "?" : who.cgroup), Num(l.sockets),
                      Num(closed.sockets_closed), Num(l.to_host + closed.bytes_to_host),
                      Num(l.from_host + closed.bytes_from_host), Num(c.denials()),
                      Str(Iso8601(c.connected_at())), Seconds(now - c.connected_steady())});
  }
  return t;
}

Table SocketsTable(const AdminSources& src, std::optional<uint64_t> client) {
  Table t;
  t.columns = {"client",  "socket",    "kind",    "state",    "local",     "remote",
               "to_host", "from_host", "in_fill", "out_fill", "ring_size", "age_s"};
  std::map<uint64_t, const BackendSocket*> sorted;
  src.sockets->ForEach([&](const BackendSocket& s) {
    if (!client || s.params().client_id == *client) sorted[s.id()] = &s;
  });
  const auto now = SteadyClock::now();
  for (const auto& [id, s] : sorted) {
    proto::SockAddr local, remote;
    const int lerr = s->GetSockName(&local);
    int rerr = s->GetPeerName(&remote);
    // A connecting (or failed) socket has no peer yet: show where it is going.
    if (rerr != 0 && s->destination().family != 0) {
      remote = s->destination();
      rerr = 0;
    }
    const bool listening = s->state() == SocketState::kListening;
    const BackendSocket::RingFill f = s->Fill();
    auto fill = [&](uint32_t v) {
      if (!f.present) return Str("-");
      if (f.corrupt) return Str("corrupt");
      return Num(v);
    };
    t.rows.push_back({Num(s->params().client_id), Num(id),
                      Str(listening ? "listener" : (s->accepted() ? "accepted" : "stream")),
                      Str(SocketStateName(s->state())), Str(AddrText(lerr, local)),
                      Str(listening ? "-" : AddrText(rerr, remote)), Num(s->bytes_to_host()),
                      Num(s->bytes_from_host()), fill(f.in), fill(f.out),
                      f.present ? Num(f.size) : Str("-"), Seconds(now - s->created())});
  }
  return t;
}

Table StatsTable(const AdminSources& src) {
  const Stats& s = *src.stats;
  Table t;
  t.columns = {"counter", "value"};
  for (const auto& [name, v] : StatsCounters(s)) t.rows.push_back({Str(name), Num(v)});
  return t;
}

std::string RenderText(const Table& t) {
  std::string out;
  for (size_t i = 0; i < t.columns.size(); ++i) {
    if (i) out.push_back('\t');
    out += t.columns[i];
  }
  out.push_back('\n');
  for (const auto& row : t.rows) {
    for (size_t i = 0; i < row.size(); ++i) {
      if (i) out.push_back('\t');
      out += EscapeCell(row[i].text);
    }
    out.push_back('\n');
  }
  return out;
}

std::string RenderJson(const Table& t, bool as_object) {
  std::string out;
  if (as_object) {
    out = "{";
    for (size_t r = 0; r < t.rows.size(); ++r) {
      out += fmt::format("{}{}: {}", r ? ", " : "", JsonQuoted(t.rows[r][0].text),
                         t.rows[r][1].number ? t.rows[r][1].text : JsonQuoted(t.rows[r][1].text));
    }
    return out + "}\n";
  }
  out = "[";
  for (size_t r = 0; r < t.rows.size(); ++r) {
    out += r ? ",\n {" : "{";
    const auto& row = t.rows[r];
    for (size_t i = 0; i < row.size(); ++i) {
      out += fmt::format("{}{}: {}", i ? ", " : "", JsonQuoted(t.columns[i]),
                         row[i].number ? row[i].text : JsonQuoted(row[i].text));
    }
    out += "}";
  }
  return out + "]\n";
}

std::string AnswerAdmin(std::string_view request, const AdminSources& src) {
  if (!request.empty() && request.back() == '\r') request.remove_suffix(1);
  std::vector<std::string_view> words;
  for (size_t pos = 0; pos < request.size();) {
    const size_t end = std::min(request.find(' ', pos), request.size());
    if (end > pos) words.push_back(request.substr(pos, end - pos));
    pos = end + 1;
  }
  if (words.empty()) return "error empty request\n";
  bool json = false;
  std::optional<uint64_t> client;
  for (size_t i = 1; i < words.size(); ++i) {
    const std::string_view w = words[i];
    uint64_t id = 0;
    if (w == "format=json") {
      json = true;
    } else if (w == "format=text") {
      json = false;
    } else if (w.substr(0, 7) == "client=" &&
               absl::SimpleAtoi(absl::string_view(w.data() + 7, w.size() - 7), &id)) {
      client = id;
    } else {
      return fmt::format("error unknown argument {}\n", JsonQuoted(w));
    }
  }
  const std::string_view verb = words[0];
  Table t;
  if (verb == "clients") {
    if (client) return "error client= applies to sockets only\n";
    t = ClientsTable(src);
  } else if (verb == "sockets") {
    t = SocketsTable(src, client);
  } else if (verb == "stats") {
    if (client) return "error client= applies to sockets only\n";
    t = StatsTable(src);
    return "ok\n" + (json ? RenderJson(t, true) : RenderText(t));
  } else {
    return fmt::format("error unknown request {} (expected clients, sockets or stats)\n",
                       JsonQuoted(verb));
  }
  return "ok\n" + (json ? RenderJson(t) : RenderText(t));
}

// ---- AdminServer ----

absl::StatusOr<std::unique_ptr<AdminServer>> AdminServer::Create(const AdminOptions& options,
                                                                 EventLoop* loop,
                                                                 AdminSources src) {
  std::unique_ptr<AdminServer> a(new AdminServer(options, loop, src));
  if (auto s = a->Init(); !s.ok()) return s;
  return a;
}

AdminServer::~AdminServer() { Close(); }

absl::Status AdminServer::Init() {
  timer_.reset(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC));
  if (!timer_.valid()) return ErrnoError(errno, "timerfd_create");
  if (auto s = loop_->Add(timer_.get(), EPOLLIN, Token{Source::kAdmin, kTimerId}); !s.ok())
    return s;
  if (!options_.socket_path.empty()) {
    // Root (or xsockd's own user) only: the file's mode is the gate, and each connection's
    // SO_PEERCRED is checked again in Accept.
    auto l = Listener::Open(options_.socket_path, 0600, SOCK_STREAM);
    if (!l.ok()) {
      return absl::Status(l.status().code(),
                          fmt::format("admin socket: {}", std::string(l.status().message())));
    }
    admin_.emplace(std::move(*l));
    if (auto s = loop_->Add(admin_->fd(), EPOLLIN, Token{Source::kAdmin, kAdminListenerId});
        !s.ok()) {
      return s;
    }
    Log(LogLevel::kInfo, "event=admin_listening socket={}", Quoted(admin_->path()));
  }
  if (!options_.metrics_address.empty()) {
    auto addr = ParseMetricsAddress(options_.metrics_address, options_.metrics_allow_remote);
    if (!addr.ok()) return addr.status();
    auto fd = OpenMetricsListener(*addr, &metrics_port_);
    if (!fd.ok()) return fd.status();
    metrics_ = std::move(*fd);
    if (auto s = loop_->Add(metrics_.get(), EPOLLIN, Token{Source::kAdmin, kMetricsListenerId});
        !s.ok()) {
      return s;
    }
    Log(LogLevel::kInfo, "event=metrics_listening addr={} port={}", Quoted(addr->text),
        metrics_port_);
  }
  return absl::OkStatus();
}

void AdminServer::Close() {
  for (auto& [id, c] : conns_) loop_->Remove(c.fd.get());
  conns_.clear();
  open_.store(0, std::memory_order_relaxed);
  if (metrics_.valid()) {
    loop_->Remove(metrics_.get());
    metrics_.reset();
  }
  if (admin_) {
    loop_->Remove(admin_->fd());
    admin_->Close();
    admin_.reset();
  }
}

void AdminServer::OnEvent(uint64_t id, uint32_t events) {
  if (id == kAdminListenerId) {
    if (admin_) Accept(Kind::kAdmin, admin_->fd());
  } else if (id == kMetricsListenerId) {
    if (metrics_.valid()) Accept(Kind::kMetrics, metrics_.get());
  } else if (id == kTimerId) {
    OnTimer();
  } else {
    OnConn(id, events);
  }
}

void AdminServer::Accept(Kind kind, int listen_fd) {
  // Bounded per wake-up like the control listener; the rest raises the next event.
  for (int i = 0; i < 16; ++i) {
    UniqueFd fd(accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC));
    if (!fd.valid()) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN) {
        Log(LogLevel::kWarn, "event=admin_accept_failed errno={}", ErrnoName(errno));
      }
      return;
    }
    if (conns_.size() >= kMaxAdminConnections) {
      Log(LogLevel::kWarn, "event=admin_refused reason=too_many_connections limit={}",
          kMaxAdminConnections);
      continue;  // closed by fd's destructor
    }
    Conn c{kind, std::move(fd), {}, {}, 0, false, false, SteadyClock::now() + options_.deadline};
    const uint64_t id = next_id_++;
    if (kind == Kind::kAdmin) {
      // Defence in depth behind the file mode (which a umask or a later chmod could loosen):
      // only root and xsockd's own user are answered.
      ucred cred = {};
      socklen_t len = sizeof(cred);
      if (getsockopt(c.fd.get(), SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0 ||
          (cred.uid != 0 && cred.uid != geteuid())) {
        Log(LogLevel::kWarn, "event=admin_refused reason=not_authorized pid={} uid={}", cred.pid,
            cred.uid);
        // Its request is still read, and answered with the refusal: closing with the request
        // unread would reset the connection (ECONNRESET) before the peer reads the reason.
        c.unauthorized = true;
      }
    }
    if (kind == Kind::kMetrics) {
      // A live scraper reads its reply at once; a stalled one should not pin megabytes of
      // kernel memory (TCP autotuning) until the deadline. The kernel doubles the value.
      const int sndbuf = 16 * 1024;
      setsockopt(c.fd.get(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
    }
    if (auto s = loop_->Add(c.fd.get(), EPOLLIN | EPOLLRDHUP, Token{Source::kAdmin, id}); !s.ok()) {
      continue;
    }
    conns_.emplace(id, std::move(c));
    open_.store(conns_.size(), std::memory_order_relaxed);
    ArmTimer();
  }
}

void AdminServer::OnConn(uint64_t id, uint32_t events) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;  // closed earlier in this batch
  Conn& c = it->second;
  if (c.replying) {
    if (events & (EPOLLERR | EPOLLHUP)) {
      CloseConn(id);
      return;
    }
    WriteReply(id, c);
    return;
  }
  ReadRequest(id, c);
}

void AdminServer::ReadRequest(uint64_t id, Conn& c) {
  const size_t limit = c.kind == Kind::kAdmin ? kMaxAdminRequest : kMaxHttpRequest;
  char buf[1024];
  // Bounded: at most limit + sizeof(buf) bytes are ever read from one connection.
  for (;;) {
    const ssize_t n = recv(c.fd.get(), buf, sizeof(buf), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;  // wait for the rest (until the deadline)
      CloseConn(id);
      return;
    }
    if (n == 0) {
      // The peer ended its half before finishing the request: nothing to answer.
      Log(LogLevel::kDebug, "event=admin_closed reason=incomplete_request bytes={}", c.in.size());
      CloseConn(id);
      return;
    }
    c.in.append(buf, static_cast<size_t>(n));
    if (c.kind == Kind::kAdmin) {
      const size_t nl = c.in.find('\n');
      if (nl != std::string::npos && nl < limit) {
        StartReply(id, c,
                   c.unauthorized
                       ? "error permission denied: the admin socket serves root and xsockd's user\n"
                       : AnswerAdmin(std::string_view(c.in).substr(0, nl), src_));
        return;
      }
      if (c.in.size() >= limit) {
        StartReply(id, c, fmt::format("error request longer than {} bytes\n", limit - 1));
        return;
      }
    } else {
      size_t end = c.in.find("\r\n\r\n");
      if (end == std::string::npos) end = c.in.find("\n\n");
      if (end != std::string::npos && end < limit) {
        StartReply(id, c, AnswerHttp(std::string_view(c.in).substr(0, end), src_));
        return;
      }
      if (c.in.size() >= limit) {
        StartReply(id, c, HttpError(431, "Request Header Fields Too Large"));
        return;
      }
    }
  }
}

void AdminServer::StartReply(uint64_t id, Conn& c, std::string reply) {
  c.replying = true;
  c.in.clear();
  c.out = std::move(reply);
  // Whatever else the client sends is not read: the reply is all it gets.
  (void)loop_->Modify(c.fd.get(), EPOLLOUT, Token{Source::kAdmin, id});
  WriteReply(id, c);
}

void AdminServer::WriteReply(uint64_t id, Conn& c) {
  while (c.sent < c.out.size()) {
    const ssize_t n =
        send(c.fd.get(), c.out.data() + c.sent, c.out.size() - c.sent, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) return;  // EPOLLOUT brings us back (or the deadline closes it)
      CloseConn(id);
      return;
    }
    c.sent += static_cast<size_t>(n);
  }
  CloseConn(id);
}

void AdminServer::CloseConn(uint64_t id) {
  auto it = conns_.find(id);
  if (it == conns_.end()) return;
  loop_->Remove(it->second.fd.get());
  conns_.erase(it);
  open_.store(conns_.size(), std::memory_order_relaxed);
}

void AdminServer::OnTimer() {
  uint64_t expirations;
  while (read(timer_.get(), &expirations, sizeof(expirations)) > 0) {
  }
  timer_armed_ = false;
  const auto now = SteadyClock::now();
  std::vector<uint64_t> late;
  for (const auto& [id, c] : conns_) {
    if (now >= c.deadline) late.push_back(id);
  }
  for (uint64_t id : late) {
    Log(LogLevel::kInfo, "event=admin_closed reason=deadline replying={}",
        conns_.at(id).replying ? 1 : 0);
    CloseConn(id);
  }
  ArmTimer();
}

void AdminServer::ArmTimer() {
  if (timer_armed_ || conns_.empty()) return;
  // The earliest deadline, at least 10 ms ahead (a deadline just passed fires at once).
  auto first = SteadyClock::time_point::max();
  for (const auto& [id, c] : conns_) first = std::min(first, c.deadline);
  auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(first - SteadyClock::now());
  wait = std::max(wait, std::chrono::milliseconds(10));
  itimerspec spec = {};
  spec.it_value.tv_sec = wait.count() / 1000;
  spec.it_value.tv_nsec = (wait.count() % 1000) * 1000000L;
  timerfd_settime(timer_.get(), 0, &spec, nullptr);
  timer_armed_ = true;
}

}  // namespace xsock::backend
