// Name resolution through xsockd (libintercept/README.md, "Name resolution through
// xsockd"): the core behind the getaddrinfo, getnameinfo and gethostby* hooks.
//
// glibc's resolver opens its own sockets inside libc, where the hooks never see them, so
// a program in a namespace without a network cannot resolve names. With
// XSOCK_RESOLVE=backend the hooks ask xsockd instead, which runs the same libc call on
// the host (its resolv.conf, VPN, split DNS, /etc/hosts) and sends back the result and
// the EAI_* / h_errno code; this file turns the reply into exactly what glibc would have
// handed the application: a malloc'ed addrinfo list that glibc's own freeaddrinfo frees,
// a hostent in the caller's buffer, getnameinfo's strings with its EAI_OVERFLOW rule.
//
// Each method returns nullopt when xsockd is not to be (or cannot be) asked — a numeric
// host, a NULL host, a flag or family the wire does not carry, a name over the protocol's
// bounds, xsockd unreachable or too old — and the hook then calls the real libc
// function, which answers as it always does.
#pragma once

#include <netdb.h>
#include <sys/socket.h>

#include <atomic>
#include <optional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "libintercept/control_client.h"
#include "shared/protocol.h"
#include "shared/syscalls.h"

namespace xsock::intercept {

// XSOCK_RESOLVE=backend (read once, at the first call). The one switch for the whole
// feature: a config file's per-profile `resolve = "backend"` will set it too.
bool ResolveThroughBackend();

// The libc functions used for numeric hosts and local answers.
struct RealResolverCalls {
  int (*getaddrinfo)(const char*, const char*, const addrinfo*, addrinfo**) = nullptr;
  // One line for stderr (without newline), e.g. "xsockd unreachable"; may be null.
  void (*log)(absl::string_view line) = nullptr;
};

class ResolverClient {
 public:
  // Lookups from different threads run on up to this many control connections at once
  // (each strictly request -> reply); they never wait behind the process's main control
  // connection, which routed sockets use.
  static constexpr int kConnections = 4;

  ResolverClient(const Syscalls& sys, std::string socket_path, RealResolverCalls real);
  ~ResolverClient();
  ResolverClient(const ResolverClient&) = delete;
  ResolverClient& operator=(const ResolverClient&) = delete;

  // getaddrinfo(3): the return value, *res set on success.
  std::optional<int> GetAddrInfo(const char* node, const char* service, const addrinfo* hints,
                                 addrinfo** res);
  // getnameinfo(3).
  std::optional<int> GetNameInfo(const sockaddr* sa, socklen_t salen, char* host, socklen_t hostlen,
                                 char* serv, socklen_t servlen, int flags);
  // gethostbyname2_r(3) / gethostbyaddr_r(3): the return value (0, ERANGE, EAGAIN, ...),
  // *result and *h_errnop set as glibc sets them.
  std::optional<int> GetHostByName2R(const char* name, int af, hostent* ret, char* buf,
                                     size_t buflen, hostent** result, int* h_errnop);
  std::optional<int> GetHostByAddrR(const void* addr, socklen_t len, int type, hostent* ret,
                                    char* buf, size_t buflen, hostent** result, int* h_errnop);

  // pthread_atfork child handler: the connections belong to the parent.
  void AfterForkChild();

 private:
  // One exchange on a free connection; Unavailable etc. when xsockd cannot answer.
  absl::StatusOr<proto::Reply> Call(const proto::Request& req);
  // Reports xsockd unreachable once per process (the lookups then fall back).
  void ReportOnce(const absl::Status& s);

  const Syscalls& sys_;
  const std::string path_;
  const RealResolverCalls real_;
  ControlClient* conns_[kConnections] = {};
  std::atomic<uint32_t> busy_{0};  // bit i: conns_[i] is in use (a hint; its mutex decides)
  std::atomic<bool> reported_{false};
};

// The reply of a successful resolve as a getaddrinfo result, laid out as glibc lays it
// out so that glibc's freeaddrinfo() frees it: each node is one malloc block holding the
// addrinfo and, right after it, its sockaddr (ai_addr points there); ai_canonname, on the
// first node only, is a separate malloc'ed string. ai_flags is the hints' flags, as glibc
// sets it. EAI_MEMORY (nothing allocated) if malloc fails.
int ToAddrinfoList(const proto::ResolveReply& reply, int hint_flags, addrinfo** res);

// A successful hostent reply written into `buf` as glibc's gethostby*_r write it (pointer
// arrays first, then addresses, then strings). ERANGE if buf is too small.
int ToHostent(const proto::HostEntReply& reply, hostent* ret, char* buf, size_t buflen);

// Whether gethostbyname* would answer `name` itself, without a lookup: a dotted number or
// an IPv6 literal (glibc's digits-and-dots path).
bool IsNumericHostName(const char* name);

}  // namespace xsock::intercept
