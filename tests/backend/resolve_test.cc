// xsockd's name resolution: lookups answered with this host's resolver, compared with the
// same libc calls made here (differential), through a real in-process server; and the
// Resolver's bounds and deadline, with no worker threads so that nothing ever finishes.
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "backend/resolver.h"
#include "shared/resolve_codes.h"
#include "shared/unix_io.h"
#include "test_client.h"

namespace xsock::testing {
namespace {

using proto::GaiCode;

// What the host's getaddrinfo says, as wire entries.
proto::ResolveReply Direct(const char* host, const char* service, int flags, int family,
                           int socktype) {
  addrinfo hints = {};
  hints.ai_flags = flags;
  hints.ai_family = family;
  hints.ai_socktype = socktype;
  addrinfo* res = nullptr;
  proto::ResolveReply out;
  const int rc = getaddrinfo(host, service, &hints, &res);
  out.gai = proto::GaiToWire(rc);
  if (rc != 0) return out;
  for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    if (ai == res && ai->ai_canonname != nullptr) out.canonname = ai->ai_canonname;
    out.entries.push_back(
        {ai->ai_socktype, ai->ai_protocol, *proto::FromSockaddr(ai->ai_addr, ai->ai_addrlen)});
  }
  freeaddrinfo(res);
  return out;
}

proto::ResolveRequest Req(const char* host, const char* service, int flags, int family,
                          int socktype) {
  proto::ResolveRequest r;
  r.flags = *proto::AiFlagsToWire(flags);
  r.family = static_cast<uint16_t>(family);
  r.socktype = socktype;
  if (host != nullptr) r.host = host;
  if (service != nullptr) r.service = service;
  return r;
}

TEST_CASE("resolve answers what this host's getaddrinfo answers", "[backend][resolve]") {
  struct Case {
    const char* host;
    const char* service;
    int flags;
    int family;
    int socktype;
  };
  for (const Case& c : {Case{"127.0.0.1", "80", AI_NUMERICHOST, AF_UNSPEC, 0},
                        Case{"::1", "22", AI_CANONNAME, AF_INET6, SOCK_STREAM},
                        Case{"localhost", "http", AI_CANONNAME, AF_UNSPEC, SOCK_STREAM},
                        Case{"localhost", nullptr, 0, AF_INET, 0},
                        Case{nullptr, "8080", AI_PASSIVE, AF_UNSPEC, SOCK_STREAM},
                        Case{"127.0.0.1", "80", AI_V4MAPPED, AF_INET6, SOCK_DGRAM},
                        Case{"not a number", nullptr, AI_NUMERICHOST, AF_UNSPEC, 0},
                        Case{"localhost", "no-such-service-xsock", 0, AF_UNSPEC, 0},
                        Case{"127.0.0.1", "80", 0, AF_UNSPEC, 77}}) {
    INFO((c.host ? c.host : "(null)") << " " << (c.service ? c.service : "(null)"));
    const proto::ResolveReply want = Direct(c.host, c.service, c.flags, c.family, c.socktype);
    const auto got = std::get<proto::ResolveReply>(
        backend::LookupOnHost(Req(c.host, c.service, c.flags, c.family, c.socktype)));
    CHECK(got == want);
  }
}

TEST_CASE("nameinfo and hostent answer what getnameinfo and gethostbyaddr_r answer here",
          "[backend][resolve]") {
  sockaddr_in sin = {};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(22);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  char host[NI_MAXHOST];
  char serv[NI_MAXSERV];
  for (int flags : {0, NI_NUMERICHOST | NI_NUMERICSERV, NI_NAMEREQD, NI_DGRAM}) {
    INFO("flags " << flags);
    const int rc = getnameinfo(reinterpret_cast<sockaddr*>(&sin), sizeof(sin), host, sizeof(host),
                               serv, sizeof(serv), flags);
    proto::NameInfoRequest req{
        .addr = *proto::FromSockaddr(reinterpret_cast<sockaddr*>(&sin), sizeof(sin)),
        .flags = *proto::NiFlagsToWire(flags),
        .want_host = true,
        .want_service = true};
    const auto got = std::get<proto::NameInfoReply>(backend::LookupOnHost(req));
    CHECK(got.gai == proto::GaiToWire(rc));
    if (rc == 0) {
      CHECK(got.host == host);
      CHECK(got.service == serv);
    }
  }
  const in_addr lo{htonl(INADDR_LOOPBACK)};
  const hostent* he = gethostbyaddr(&lo, sizeof(lo), AF_INET);
  const int herr = h_errno;
  proto::HostEntRequest req{
      .op = proto::HostEntRequest::kByAddr, .family = AF_INET, .addr = {127, 0, 0, 1}};
  const auto got = std::get<proto::HostEntReply>(backend::LookupOnHost(req));
  if (he == nullptr) {
    CHECK(got.herr == proto::HostErrToWire(herr));
  } else {
    CHECK(got.herr == 0);
    CHECK(got.name == he->h_name);
    CHECK(got.family == AF_INET);
    size_t n = 0;
    while (he->h_aliases[n] != nullptr) ++n;
    CHECK(got.aliases.size() == n);
  }
  const auto none = std::get<proto::HostEntReply>(backend::LookupOnHost(
      proto::HostEntRequest{.family = AF_INET, .name = "no-such-host.invalid"}));
  CHECK(none.herr != 0);
}

TEST_CASE("lookups go through xsockd's control connection and leave it usable",
          "[backend][resolve]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello();
  const auto r =
      ctl.CallAs<proto::ResolveReply>(Req("127.0.0.1", "80", AI_NUMERICHOST, AF_INET, SOCK_STREAM));
  CHECK(r.err == 0);
  CHECK(r.gai == 0);
  REQUIRE(r.entries.size() == 1);
  CHECK(proto::ToString(r.entries[0].addr) == "127.0.0.1:80");
  const auto bad = ctl.CallAs<proto::ResolveReply>(Req("x.invalid", nullptr, AI_NUMERICHOST, 0, 0));
  CHECK(bad.gai == static_cast<uint16_t>(GaiCode::kNoName));
  const auto ni = ctl.CallAs<proto::NameInfoReply>(
      proto::NameInfoRequest{.addr = r.entries[0].addr,
                             .flags = proto::kNiNumericHost | proto::kNiNumericServ,
                             .want_host = true,
                             .want_service = true});
  CHECK(ni.host == "127.0.0.1");
  CHECK(ni.service == "80");
  // Several lookups back to back, then an ordinary request on the same connection.
  for (int i = 0; i < 20; ++i) {
    CHECK(ctl.CallAs<proto::ResolveReply>(Req("::1", nullptr, AI_NUMERICHOST, 0, 0)).gai == 0);
  }
  CHECK(ctl.Stats().err == 0);
}

TEST_CASE("a client that did not offer the resolve capability gets EOPNOTSUPP",
          "[backend][resolve]") {
  TestServer server;
  Control ctl(server.path());
  ctl.Hello(proto::kCapIpv6);
  CHECK(ctl.CallAs<proto::ResolveReply>(Req("::1", nullptr, AI_NUMERICHOST, 0, 0)).err ==
        EOPNOTSUPP);
  CHECK(
      ctl.CallAs<proto::HostEntReply>(proto::HostEntRequest{.family = AF_INET, .name = "a"}).err ==
      EOPNOTSUPP);
}

// Pumps the loop until `done` or the timeout; the Resolver's events only.
template <class Pred>
bool Pump(backend::EventLoop& loop, backend::Resolver& resolver, Pred done, int timeout_ms) {
  const auto end = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!done()) {
    if (Clock::now() > end) return false;
    epoll_event ev[4];
    const int n = loop.Wait(ev, 50);
    for (int i = 0; i < n; ++i) {
      const backend::Token t = backend::DecodeToken(ev[i].data.u64);
      if (t.source == backend::Source::kResolver) resolver.OnEvent(t.id);
    }
  }
  return true;
}

TEST_CASE(
    "the resolver bounds lookups per process and overall, and answers EAI_AGAIN at "
    "the deadline",
    "[backend][resolve]") {
  auto loop = backend::EventLoop::Create();
  REQUIRE(loop.ok());
  backend::Stats stats;
  std::vector<std::pair<uint64_t, proto::Reply>> delivered;
  // No worker threads: nothing is ever looked up, so every lookup meets its deadline.
  backend::Resolver resolver(
      &*loop, &stats,
      [&](uint64_t client, uint32_t, proto::Reply reply) { delivered.emplace_back(client, reply); },
      backend::ResolverOptions{
          .threads = 0, .max_outstanding = 3, .max_per_pid = 2, .deadline_ms = 300});
  REQUIRE(resolver.Init().ok());
  const proto::Request req = Req("a", nullptr, 0, 0, 0);
  CHECK(resolver.Submit(1, 100, 1, req));
  CHECK(resolver.Submit(2, 100, 1, req));
  CHECK_FALSE(resolver.Submit(3, 100, 1, req));  // third of pid 100
  CHECK(resolver.Submit(4, 200, 1, req));
  CHECK_FALSE(resolver.Submit(5, 300, 1, req));  // fourth overall
  CHECK(stats.lookups_refused == 2);
  const auto start = Clock::now();
  REQUIRE(Pump(
      *loop, resolver, [&] { return delivered.size() == 3; }, kTimeoutMs));
  CHECK(Clock::now() - start >= std::chrono::milliseconds(250));
  for (const auto& [client, reply] : delivered) {
    const auto& r = std::get<proto::ResolveReply>(reply);
    CHECK(r.err == 0);
    CHECK(r.gai == static_cast<uint16_t>(GaiCode::kAgain));
  }
  CHECK(resolver.outstanding() == 0);
  CHECK(stats.lookups_timed_out == 3);
  CHECK(resolver.Submit(6, 100, 1, req));  // room again
}

TEST_CASE("the resolver's workers answer lookups and post them to the loop", "[backend][resolve]") {
  auto loop = backend::EventLoop::Create();
  REQUIRE(loop.ok());
  backend::Stats stats;
  std::vector<proto::Reply> delivered;
  backend::Resolver resolver(&*loop, &stats,
                             [&](uint64_t, uint32_t, proto::Reply r) { delivered.push_back(r); });
  REQUIRE(resolver.Init().ok());
  for (int i = 0; i < 8; ++i) {
    REQUIRE(resolver.Submit(static_cast<uint64_t>(i + 1), 1000 + i, 1,
                            Req("127.0.0.1", "80", AI_NUMERICHOST, AF_INET, SOCK_STREAM)));
  }
  REQUIRE(Pump(
      *loop, resolver, [&] { return delivered.size() == 8; }, kTimeoutMs));
  for (const auto& r : delivered) CHECK(std::get<proto::ResolveReply>(r).entries.size() == 1);
  CHECK(stats.lookups == 8);
}

// xsockd in this process with a resolver that has no workers: every lookup waits for its
// deadline, which makes "a lookup is outstanding" last as long as a test needs.
class StuckResolverServer {
 public:
  explicit StuckResolverServer(int max_per_pid = 8) {
    path_ = dir_.path() + "/xsockd.sock";
    backend::ServerOptions options;
    options.socket_path = path_;
    options.handle_signals = false;
    options.resolver = {.threads = 0, .max_per_pid = max_per_pid, .deadline_ms = 400};
    auto server = backend::Server::Create(options);
    REQUIRE(server.ok());
    server_ = std::move(*server);
    thread_ = std::thread([s = server_.get()] { (void)s->Run(); });
  }
  ~StuckResolverServer() {
    server_->RequestStop();
    thread_.join();
  }
  const std::string& path() const { return path_; }

 private:
  TempDir dir_;
  std::string path_;
  std::unique_ptr<backend::Server> server_;
  std::thread thread_;
};

// The next reply on `fd`, within the test timeout.
proto::Decoded<proto::Reply> NextReply(int fd) {
  pollfd p = {fd, POLLIN, 0};
  REQUIRE(poll(&p, 1, kTimeoutMs) == 1);
  std::vector<uint8_t> buf;
  std::vector<int> fds;
  REQUIRE(RecvPacket(LibcSyscalls(), fd, buf, proto::kMaxMessageSize, fds) > 0);
  auto d = proto::DecodeReply(buf);
  REQUIRE(d.ok());
  return *d;
}

TEST_CASE(
    "requests sent during a lookup are answered after it, in order; the lookup gets "
    "EAI_AGAIN at its deadline",
    "[backend][resolve]") {
  StuckResolverServer server;
  Control ctl(server.path());
  ctl.Hello();
  const auto start = Clock::now();
  ctl.SendRaw(proto::EncodeRequest(100, Req("a.example", nullptr, 0, 0, 0)));
  ctl.SendRaw(proto::EncodeRequest(101, proto::StatsRequest{}));
  ctl.SendRaw(proto::EncodeRequest(
      102, proto::HostEntRequest{
               .op = proto::HostEntRequest::kByName, .family = AF_INET, .name = "b.example"}));
  const auto first = NextReply(ctl.fd());
  CHECK(Clock::now() - start >= std::chrono::milliseconds(350));
  CHECK(first.seq == 100);
  CHECK(std::get<proto::ResolveReply>(first.msg).gai == static_cast<uint16_t>(GaiCode::kAgain));
  const auto second = NextReply(ctl.fd());
  CHECK(second.seq == 101);
  CHECK(std::get<proto::StatsReply>(second.msg).err == 0);
  const auto third = NextReply(ctl.fd());
  CHECK(third.seq == 102);
  CHECK(std::get<proto::HostEntReply>(third.msg).herr ==
        static_cast<uint16_t>(proto::HostErr::kTryAgain));
}

TEST_CASE("a client that hangs up during a lookup is dropped, the server goes on",
          "[backend][resolve]") {
  LogCapture log;
  StuckResolverServer server;
  {
    Control ctl(server.path());
    ctl.Hello();
    ctl.SendRaw(proto::EncodeRequest(7, Req("a.example", nullptr, 0, 0, 0)));
    // Make sure xsockd has the lookup before the hang-up.
    CHECK_FALSE(log.WaitFor({"event=client_connect"}).empty());
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  CHECK_FALSE(log.WaitFor({"event=client_disconnect", "closed during a lookup"}).empty());
  // Its lookup's deadline passes with nobody to answer; others are served as before.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  Control other(server.path());
  other.Hello();
  CHECK(other.Stats().err == 0);
}

TEST_CASE("lookups beyond the per-process bound get EAI_AGAIN at once", "[backend][resolve]") {
  LogCapture log;
  StuckResolverServer server(/*max_per_pid=*/1);
  Control a(server.path());
  Control b(server.path());
  a.Hello();
  b.Hello();
  a.SendRaw(proto::EncodeRequest(1, Req("a.example", nullptr, 0, 0, 0)));
  CHECK_FALSE(log.WaitFor({"event=client_connect"}).empty());
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const auto start = Clock::now();
  const auto r = b.CallAs<proto::ResolveReply>(Req("b.example", nullptr, 0, 0, 0));
  CHECK(Clock::now() - start < std::chrono::milliseconds(300));  // not the deadline
  CHECK(r.gai == static_cast<uint16_t>(GaiCode::kAgain));
  CHECK_FALSE(log.WaitFor({"event=lookup_refused", "type=resolve"}).empty());
  CHECK(NextReply(a.fd()).seq == 1);  // a's own lookup at its deadline
}

}  // namespace
}  // namespace xsock::testing
