// The name resolution hooks: getaddrinfo, getnameinfo and the gethostby* family. With
// XSOCK_RESOLVE=backend each asks xsockd (ResolverClient); otherwise, or whenever the
// client declines (numeric host, xsockd unreachable, ...), the real libc function
// answers. freeaddrinfo and gai_strerror are not hooked: lists we build have glibc's own
// layout (resolver_client.h), so glibc's freeaddrinfo frees them, and the codes are glibc's.
#include <cxxabi.h>
#include <dlfcn.h>
#include <netdb.h>
#include <pthread.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <string>
#include <vector>

#include "libintercept/interceptor.h"
#include "libintercept/real_calls.h"
#include "libintercept/resolver_client.h"

#define XSOCK_EXPORT __attribute__((visibility("default")))

namespace xsock::intercept {
namespace {

// The next definitions after ours, found on first use.
struct RealResolve {
  decltype(&::getaddrinfo) getaddrinfo;
  decltype(&::getnameinfo) getnameinfo;
  decltype(&::gethostbyname) gethostbyname;
  decltype(&::gethostbyname2) gethostbyname2;
  decltype(&::gethostbyaddr) gethostbyaddr;
  decltype(&::gethostbyname_r) gethostbyname_r;
  decltype(&::gethostbyname2_r) gethostbyname2_r;
  decltype(&::gethostbyaddr_r) gethostbyaddr_r;
};

template <class F>
F Next(const char* name) {
  return reinterpret_cast<F>(dlsym(RTLD_NEXT, name));
}

const RealResolve& Real() {
  static const RealResolve real = {
      Next<decltype(&::getaddrinfo)>("getaddrinfo"),
      Next<decltype(&::getnameinfo)>("getnameinfo"),
      Next<decltype(&::gethostbyname)>("gethostbyname"),
      Next<decltype(&::gethostbyname2)>("gethostbyname2"),
      Next<decltype(&::gethostbyaddr)>("gethostbyaddr"),
      Next<decltype(&::gethostbyname_r)>("gethostbyname_r"),
      Next<decltype(&::gethostbyname2_r)>("gethostbyname2_r"),
      Next<decltype(&::gethostbyaddr_r)>("gethostbyaddr_r"),
  };
  return real;
}

void LogLine(absl::string_view line) {
  std::string s(line);
  s.push_back('\n');
  XSOCK_REAL(write)(STDERR_FILENO, s.data(), s.size());
}

std::atomic<ResolverClient*> g_client{nullptr};

void AfterForkInChild() {
  if (ResolverClient* c = g_client.load(std::memory_order_acquire)) c->AfterForkChild();
}

// Created on the first lookup with XSOCK_RESOLVE=backend, never destroyed.
ResolverClient& Client() {
  static ResolverClient* const created = [] {
    auto* c = new ResolverClient(RealSyscalls(), InterceptorConfig::FromEnvironment().socket_path,
                                 RealResolverCalls{Real().getaddrinfo, LogLine});
    g_client.store(c, std::memory_order_release);
    pthread_atfork(nullptr, nullptr, AfterForkInChild);
    return c;
  }();
  return *created;
}

// No exception crosses into the program: a failure inside the client is "not answered".
// Thread cancellation is let through: these are cancellation points (glibc declares
// them without __THROW), and pthread_cancel unwinds with abi::__forced_unwind, which must
// be rethrown.
template <class F>
auto Ask(F&& f) -> decltype(f()) {
  if (!ResolveThroughBackend()) return std::nullopt;
  try {
    return f();
  } catch (abi::__forced_unwind&) {
    throw;
  } catch (...) {
    return std::nullopt;
  }
}

// gethostbyname & co.: the result lives in per-thread storage that the next call of the
// same thread overwrites (glibc's is per process; per thread is at least as safe).
struct HostEntStorage {
  hostent he = {};
  std::vector<char> buf = std::vector<char>(1024);
};

template <class F>
std::optional<hostent*> NonReentrant(F&& call_r) {
  return Ask([&]() -> std::optional<hostent*> {
    thread_local HostEntStorage st;
    for (;;) {
      hostent* result = nullptr;
      int herr = 0;
      const std::optional<int> rc = call_r(&st.he, st.buf.data(), st.buf.size(), &result, &herr);
      if (!rc) return std::nullopt;
      if (*rc == ERANGE && herr == NETDB_INTERNAL && st.buf.size() < (size_t{1} << 20)) {
        st.buf.resize(st.buf.size() * 2);
        continue;
      }
      h_errno = herr;
      return result;
    }
  });
}

}  // namespace
}  // namespace xsock::intercept

using xsock::intercept::Ask;
using xsock::intercept::Client;
using xsock::intercept::NonReentrant;
using xsock::intercept::Real;

extern "C" {

XSOCK_EXPORT int getaddrinfo(const char* node, const char* service, const addrinfo* hints,
                             addrinfo** res) {
  if (auto r = Ask([&] { return Client().GetAddrInfo(node, service, hints, res); })) return *r;
  return Real().getaddrinfo(node, service, hints, res);
}

XSOCK_EXPORT int getnameinfo(const sockaddr* sa, socklen_t salen, char* host, socklen_t hostlen,
                             char* serv, socklen_t servlen, int flags) {
  if (auto r = Ask(
          [&] { return Client().GetNameInfo(sa, salen, host, hostlen, serv, servlen, flags); })) {
    return *r;
  }
  return Real().getnameinfo(sa, salen, host, hostlen, serv, servlen, flags);
}

XSOCK_EXPORT int gethostbyname2_r(const char* name, int af, hostent* ret, char* buf, size_t buflen,
                                  hostent** result, int* h_errnop) {
  if (auto r = Ask(
          [&] { return Client().GetHostByName2R(name, af, ret, buf, buflen, result, h_errnop); })) {
    return *r;
  }
  return Real().gethostbyname2_r(name, af, ret, buf, buflen, result, h_errnop);
}

XSOCK_EXPORT int gethostbyname_r(const char* name, hostent* ret, char* buf, size_t buflen,
                                 hostent** result, int* h_errnop) {
  if (auto r = Ask([&] {
        return Client().GetHostByName2R(name, AF_INET, ret, buf, buflen, result, h_errnop);
      })) {
    return *r;
  }
  return Real().gethostbyname_r(name, ret, buf, buflen, result, h_errnop);
}

XSOCK_EXPORT int gethostbyaddr_r(const void* addr, socklen_t len, int type, hostent* ret, char* buf,
                                 size_t buflen, hostent** result, int* h_errnop) {
  if (auto r = Ask([&] {
        return Client().GetHostByAddrR(addr, len, type, ret, buf, buflen, result, h_errnop);
      })) {
    return *r;
  }
  return Real().gethostbyaddr_r(addr, len, type, ret, buf, buflen, result, h_errnop);
}

XSOCK_EXPORT hostent* gethostbyname2(const char* name, int af) {
  if (auto r = NonReentrant([&](hostent* he, char* buf, size_t n, hostent** res, int* herr) {
        return Client().GetHostByName2R(name, af, he, buf, n, res, herr);
      })) {
    return *r;
  }
  return Real().gethostbyname2(name, af);
}

XSOCK_EXPORT hostent* gethostbyname(const char* name) {
  if (auto r = NonReentrant([&](hostent* he, char* buf, size_t n, hostent** res, int* herr) {
        return Client().GetHostByName2R(name, AF_INET, he, buf, n, res, herr);
      })) {
    return *r;
  }
  return Real().gethostbyname(name);
}

XSOCK_EXPORT hostent* gethostbyaddr(const void* addr, socklen_t len, int type) {
  if (auto r = NonReentrant([&](hostent* he, char* buf, size_t n, hostent** res, int* herr) {
        return Client().GetHostByAddrR(addr, len, type, he, buf, n, res, herr);
      })) {
    return *r;
  }
  return Real().gethostbyaddr(addr, len, type);
}

}  // extern "C"
