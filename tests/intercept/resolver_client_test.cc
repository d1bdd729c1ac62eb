// The library's name resolution core (libintercept/resolver_client.h): the addrinfo and
// hostent it builds, and ResolverClient against a real xsockd child ($XSOCKD), compared
// with the same glibc calls made here (differential). No preload.
#include <arpa/inet.h>
#include <fcntl.h>
#include <malloc.h>
#include <netdb.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "libintercept/resolver_client.h"

namespace xsock::intercept {
namespace {

constexpr int kTimeoutMs = 10000;

class Xsockd {
 public:
  Xsockd() {
    char tmpl[] = "/tmp/xsock-resolve.XXXXXX";
    REQUIRE(mkdtemp(tmpl) != nullptr);
    dir_ = tmpl;
    path_ = dir_ + "/xsockd.sock";
    const char* exe = getenv("XSOCKD");
    REQUIRE(exe != nullptr);
    pid_ = fork();
    REQUIRE(pid_ >= 0);
    if (pid_ == 0) {
      const std::string log = dir_ + "/xsockd.log";
      const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd >= 0) dup2(fd, 2);
      execl(exe, exe, "--socket", path_.c_str(), static_cast<char*>(nullptr));
      _exit(127);
    }
    for (int i = 0; i < kTimeoutMs / 10; ++i) {
      struct stat st;
      if (stat(path_.c_str(), &st) == 0) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    FAIL("xsockd did not create " << path_);
  }
  ~Xsockd() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
    std::string cmd = "rm -rf '" + dir_ + "'";
    (void)system(cmd.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string dir_, path_;
  pid_t pid_ = -1;
};

std::vector<std::string> g_log;
void Capture(absl::string_view line) { g_log.emplace_back(line); }

// An addrinfo list as text, one line per node, for differential comparison.
std::string Describe(const addrinfo* res) {
  std::string out;
  for (const addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    char host[NI_MAXHOST] = "?";
    char serv[NI_MAXSERV] = "?";
    getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), serv, sizeof(serv),
                NI_NUMERICHOST | NI_NUMERICSERV);
    out += std::to_string(ai->ai_flags) + " " + std::to_string(ai->ai_family) + " " +
           std::to_string(ai->ai_socktype) + " " + std::to_string(ai->ai_protocol) + " " +
           std::to_string(ai->ai_addrlen) + " " + host + " " + serv + " " +
           (ai->ai_canonname ? ai->ai_canonname : "-") + "\n";
  }
  return out;
}

std::string DescribeHostent(const hostent* he) {
  if (he == nullptr) return "(null)";
  std::string out = std::string(he->h_name) + " af=" + std::to_string(he->h_addrtype) +
                    " len=" + std::to_string(he->h_length) + " aliases:";
  for (char** a = he->h_aliases; *a != nullptr; ++a) out += std::string(" ") + *a;
  out += " addrs:";
  for (char** a = he->h_addr_list; *a != nullptr; ++a) {
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(he->h_addrtype, *a, buf, sizeof(buf));
    out += std::string(" ") + buf;
  }
  return out;
}

TEST_CASE("an addrinfo list is laid out as glibc lays it out, so glibc's freeaddrinfo frees it",
          "[intercept][resolve]") {
  proto::ResolveReply reply;
  reply.canonname = "canon.example";
  proto::SockAddr v4;
  v4.family = AF_INET;
  v4.port = 443;
  v4.addr = {10, 77, 0, 9};
  proto::SockAddr v6;
  v6.family = AF_INET6;
  v6.port = 443;
  v6.addr[15] = 1;
  v6.scope_id = 3;
  reply.entries = {{SOCK_STREAM, IPPROTO_TCP, v4}, {SOCK_DGRAM, IPPROTO_UDP, v6}};
  addrinfo* res = nullptr;
  REQUIRE(ToAddrinfoList(reply, AI_CANONNAME | AI_ADDRCONFIG, &res) == 0);
  REQUIRE(res != nullptr);
  REQUIRE(res->ai_next != nullptr);
  CHECK(res->ai_next->ai_next == nullptr);
  for (const addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
    CHECK(ai->ai_flags == (AI_CANONNAME | AI_ADDRCONFIG));
    // The address is inside the node's own block, right after the struct.
    CHECK(reinterpret_cast<const char*>(ai->ai_addr) ==
          reinterpret_cast<const char*>(ai) + sizeof(addrinfo));
    CHECK(malloc_usable_size(const_cast<addrinfo*>(ai)) >= sizeof(addrinfo) + ai->ai_addrlen);
  }
  CHECK(std::string(res->ai_canonname) == "canon.example");
  CHECK(res->ai_next->ai_canonname == nullptr);
  const auto* sin = reinterpret_cast<const sockaddr_in*>(res->ai_addr);
  CHECK(res->ai_addrlen == sizeof(sockaddr_in));
  CHECK(sin->sin_family == AF_INET);
  CHECK(ntohs(sin->sin_port) == 443);
  const auto* sin6 = reinterpret_cast<const sockaddr_in6*>(res->ai_next->ai_addr);
  CHECK(res->ai_next->ai_addrlen == sizeof(sockaddr_in6));
  CHECK(sin6->sin6_scope_id == 3);
  CHECK(res->ai_next->ai_socktype == SOCK_DGRAM);
  freeaddrinfo(res);  // glibc's: frees each node and ai_canonname with free()
}

TEST_CASE("a hostent is written into the caller's buffer, ERANGE when it does not fit",
          "[intercept][resolve]") {
  proto::HostEntReply reply;
  reply.family = AF_INET;
  reply.name = "only-in-test.xsock.test";
  reply.aliases = {"a1.xsock.test", "a2"};
  reply.addrs = {{10, 77, 0, 9}, {10, 77, 0, 10}};
  std::vector<char> buf(4096);
  size_t fits = 0;
  for (size_t n = 0; n < 512; ++n) {
    hostent he = {};
    // An odd start shows the pointer arrays get aligned.
    if (ToHostent(reply, &he, buf.data() + 1, n) == 0) {
      fits = n;
      CHECK(DescribeHostent(&he) ==
            "only-in-test.xsock.test af=2 len=4 aliases: a1.xsock.test a2 addrs: 10.77.0.9 "
            "10.77.0.10");
      break;
    }
  }
  CHECK(fits > 0);
  CHECK(ToHostent(reply, nullptr, nullptr, 0) == ERANGE);
}

TEST_CASE("host names gethostbyname answers itself are recognised as numeric",
          "[intercept][resolve]") {
  for (const char* n : {"10.77.0.9", "127.1", "123", "::1", "fe80::1%2", "::", "a:b"}) {
    INFO(n);
    CHECK(IsNumericHostName(n));
  }
  for (const char* n :
       {"", "localhost", "10.77.0.9.", "only-in-test.xsock.test", "1a.example", "x:y"}) {
    INFO(n);
    CHECK_FALSE(IsNumericHostName(n));
  }
}

TEST_CASE("through xsockd, getaddrinfo gives what glibc gives here, numeric hosts stay local",
          "[intercept][resolve]") {
  Xsockd xsockd;
  ResolverClient client(LibcSyscalls(), xsockd.path(), {::getaddrinfo, Capture});
  struct Case {
    const char* node;
    const char* service;
    int flags;
    int family;
    int socktype;
    bool local;  // answered without xsockd
  };
  for (const Case& c : {Case{"localhost", "http", AI_CANONNAME, AF_UNSPEC, SOCK_STREAM, false},
                        Case{"localhost", nullptr, 0, AF_INET, 0, false},
                        Case{"localhost", "80", AI_NUMERICSERV | AI_CANONNAME, AF_UNSPEC, 0, false},
                        Case{"no-such-host.invalid", nullptr, 0, AF_UNSPEC, 0, false},
                        Case{"localhost", "no-such-service-xsock", 0, AF_UNSPEC, 0, true},
                        Case{"127.0.0.1", "22", AI_CANONNAME, AF_UNSPEC, 0, true},
                        Case{"::1", "22", 0, AF_INET6, SOCK_STREAM, true},
                        Case{"x", nullptr, AI_NUMERICHOST, AF_UNSPEC, 0, true},
                        Case{nullptr, "80", AI_PASSIVE, AF_UNSPEC, 0, true}}) {
    INFO((c.node ? c.node : "(null)") << " " << (c.service ? c.service : "(null)"));
    addrinfo hints = {};
    hints.ai_flags = c.flags;
    hints.ai_family = c.family;
    hints.ai_socktype = c.socktype;
    addrinfo* want = nullptr;
    const int want_rc = ::getaddrinfo(c.node, c.service, &hints, &want);
    addrinfo* got = nullptr;
    const std::optional<int> rc = client.GetAddrInfo(c.node, c.service, &hints, &got);
    if (c.node == nullptr || (c.flags & AI_NUMERICHOST)) {
      CHECK_FALSE(rc.has_value());  // the hook calls the real function
    } else {
      REQUIRE(rc.has_value());
      CHECK(*rc == want_rc);
      if (*rc == 0) CHECK(Describe(got) == Describe(want));
      if (got != nullptr) freeaddrinfo(got);
    }
    if (want != nullptr) freeaddrinfo(want);
  }
  // NULL hints mean glibc's defaults (AI_V4MAPPED | AI_ADDRCONFIG).
  addrinfo* want = nullptr;
  addrinfo* got = nullptr;
  REQUIRE(::getaddrinfo("localhost", "ssh", nullptr, &want) == 0);
  REQUIRE(client.GetAddrInfo("localhost", "ssh", nullptr, &got) == std::optional<int>(0));
  CHECK(Describe(got) == Describe(want));
  freeaddrinfo(got);
  freeaddrinfo(want);
}

TEST_CASE("through xsockd, getnameinfo and gethostby*_r give what glibc gives here",
          "[intercept][resolve]") {
  Xsockd xsockd;
  ResolverClient client(LibcSyscalls(), xsockd.path(), {::getaddrinfo, Capture});
  sockaddr_in sin = {};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(80);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  const auto* sa = reinterpret_cast<const sockaddr*>(&sin);
  for (int flags : {0, NI_NAMEREQD, NI_NOFQDN | NI_DGRAM}) {
    char wh[NI_MAXHOST], ws[NI_MAXSERV], gh[NI_MAXHOST], gs[NI_MAXSERV];
    const int want = ::getnameinfo(sa, sizeof(sin), wh, sizeof(wh), ws, sizeof(ws), flags);
    const auto got = client.GetNameInfo(sa, sizeof(sin), gh, sizeof(gh), gs, sizeof(gs), flags);
    REQUIRE(got.has_value());
    CHECK(*got == want);
    if (want == 0) {
      CHECK(std::string(gh) == wh);
      CHECK(std::string(gs) == ws);
      // A buffer one byte short of the name: EAI_OVERFLOW, as glibc.
      const socklen_t short_len = static_cast<socklen_t>(std::strlen(wh));
      CHECK(::getnameinfo(sa, sizeof(sin), wh, short_len, nullptr, 0, flags) == EAI_OVERFLOW);
      CHECK(client.GetNameInfo(sa, sizeof(sin), gh, short_len, nullptr, 0, flags) ==
            std::optional<int>(EAI_OVERFLOW));
    }
  }
  char h[64];
  CHECK_FALSE(client.GetNameInfo(sa, sizeof(sin), h, sizeof(h), nullptr, 0, NI_NUMERICHOST));

  for (int af : {AF_INET, AF_INET6}) {
    for (const char* name : {"localhost", "no-such-host.invalid"}) {
      INFO(name << " af " << af);
      hostent wret, gret;
      hostent *wres = nullptr, *gres = nullptr;
      char wbuf[4096], gbuf[4096];
      int werr = 0, gerr = 0;
      const int wrc = ::gethostbyname2_r(name, af, &wret, wbuf, sizeof(wbuf), &wres, &werr);
      const auto grc = client.GetHostByName2R(name, af, &gret, gbuf, sizeof(gbuf), &gres, &gerr);
      REQUIRE(grc.has_value());
      CHECK(*grc == wrc);
      CHECK(DescribeHostent(gres) == DescribeHostent(wres));
      if (wres == nullptr) CHECK(gerr == werr);
      // Too small a buffer: ERANGE with NETDB_INTERNAL, so callers grow it and retry.
      if (wres != nullptr) {
        CHECK(client.GetHostByName2R(name, af, &gret, gbuf, 8, &gres, &gerr) ==
              std::optional<int>(ERANGE));
        CHECK(gres == nullptr);
        CHECK(gerr == NETDB_INTERNAL);
      }
    }
  }
  const in_addr lo{htonl(INADDR_LOOPBACK)};
  hostent wret, gret;
  hostent *wres = nullptr, *gres = nullptr;
  char wbuf[4096], gbuf[4096];
  int werr = 0, gerr = 0;
  const int wrc = ::gethostbyaddr_r(&lo, 4, AF_INET, &wret, wbuf, sizeof(wbuf), &wres, &werr);
  const auto grc = client.GetHostByAddrR(&lo, 4, AF_INET, &gret, gbuf, sizeof(gbuf), &gres, &gerr);
  REQUIRE(grc.has_value());
  CHECK(*grc == wrc);
  CHECK(DescribeHostent(gres) == DescribeHostent(wres));
  // Literals are the local libc's (glibc's digits-and-dots path).
  CHECK_FALSE(
      client.GetHostByName2R("127.0.0.1", AF_INET, &gret, gbuf, sizeof(gbuf), &gres, &gerr));
}

TEST_CASE("with xsockd unreachable every lookup falls back to libc, reported once",
          "[intercept][resolve]") {
  g_log.clear();
  ResolverClient client(LibcSyscalls(), "/nonexistent/xsockd.sock", {::getaddrinfo, Capture});
  addrinfo* res = nullptr;
  CHECK_FALSE(client.GetAddrInfo("localhost", nullptr, nullptr, &res));
  char h[64];
  sockaddr_in sin = {};
  sin.sin_family = AF_INET;
  CHECK_FALSE(client.GetNameInfo(reinterpret_cast<sockaddr*>(&sin), sizeof(sin), h, sizeof(h),
                                 nullptr, 0, 0));
  REQUIRE(g_log.size() == 1);
  CHECK_THAT(g_log[0], Catch::Matchers::StartsWith("xsock: cannot reach xsockd at /nonexistent"));
  CHECK_THAT(g_log[0], Catch::Matchers::EndsWith("names are resolved by the local libc"));
}

TEST_CASE("lookups from many threads share the resolver connections", "[intercept][resolve]") {
  Xsockd xsockd;
  ResolverClient client(LibcSyscalls(), xsockd.path(), {::getaddrinfo, Capture});
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 25; ++i) {
        addrinfo* res = nullptr;
        if (client.GetAddrInfo("localhost", "80", nullptr, &res) == std::optional<int>(0)) {
          ok++;
          freeaddrinfo(res);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  CHECK(ok == 200);
}

}  // namespace
}  // namespace xsock::intercept
