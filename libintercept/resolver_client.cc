#include "libintercept/resolver_client.h"

#include "libintercept/name_memory.h"
#include "libintercept/policy.h"

#include <netinet/in.h>
#include <pthread.h>

#include <cctype>
#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <variant>

#include "absl/strings/str_cat.h"
#include "shared/resolve_codes.h"
#include "shared/rules.h"

namespace xsock::intercept {
namespace {

// glibc's hints for getaddrinfo(node, service, NULL, res): AI_DEFAULT.
constexpr int kDefaultHintFlags = AI_V4MAPPED | AI_ADDRCONFIG;

bool HostErrIsNotFound(int herr) { return herr == HOST_NOT_FOUND || herr == NO_DATA; }

// The return value and errno of gethostby*_r for a failed lookup, as glibc's NSS loop
// gives them: "not found" is 0, TRY_AGAIN is EAGAIN, NETDB_INTERNAL is its errno.
int HostEntFailure(const proto::HostEntReply& reply, hostent** result, int* h_errnop) {
  *result = nullptr;
  const int herr = proto::HostErrFromWire(reply.herr);
  *h_errnop = herr;
  h_errno = herr;  // glibc's resolver sets the global too, and programs read it (Python)
  int rc = 0;
  if (HostErrIsNotFound(herr)) {
    rc = 0;
  } else if (herr == TRY_AGAIN) {
    rc = EAGAIN;
  } else if (herr == NETDB_INTERNAL) {
    rc = reply.sys_errno != 0 ? static_cast<int>(reply.sys_errno) : ENOENT;
  } else {
    rc = ENOENT;  // NO_RECOVERY: glibc passes on whatever errno the module left
  }
  if (rc != 0) errno = rc;
  return rc;
}

int HostEntResult(const proto::HostEntReply& reply, hostent* ret, char* buf, size_t buflen,
                  hostent** result, int* h_errnop) {
  if (reply.herr != 0) return HostEntFailure(reply, result, h_errnop);
  if (ToHostent(reply, ret, buf, buflen) != 0) {
    *result = nullptr;
    *h_errnop = NETDB_INTERNAL;
    errno = ERANGE;
    return ERANGE;  // the caller retries with a larger buffer
  }
  *result = ret;
  *h_errnop = 0;
  return 0;
}

// The names a connect() may later be decided by (name_memory.h): the one asked for and
// the canonical name the host's resolver gave.
void RememberNames(std::string_view asked, const proto::ResolveReply& reply) {
  NameMemory& memory = ResolvedNames();
  for (const proto::ResolveEntry& e : reply.entries) {
    sockaddr_storage ss;
    const socklen_t n = proto::ToSockaddr(e.addr, &ss);
    const auto ep = config::EndpointFromSockaddr(reinterpret_cast<const sockaddr*>(&ss), n);
    if (!ep) continue;
    if (reply.canonname && *reply.canonname != asked) memory.Remember(*reply.canonname, *ep);
    memory.Remember(asked, *ep);
  }
}

void RememberNames(std::string_view asked, const proto::HostEntReply& reply) {
  if (reply.herr != 0) return;
  NameMemory& memory = ResolvedNames();
  for (const auto& a : reply.addrs) {
    config::Endpoint ep;
    ep.family = reply.family == AF_INET6 ? AF_INET6 : AF_INET;
    ep.addr = a;
    if (ep.family == AF_INET6) {
      // A v4-mapped answer (RES_USE_INET6) is the IPv4 host, as connect() normalises it.
      sockaddr_in6 s6 = {};
      s6.sin6_family = AF_INET6;
      std::memcpy(&s6.sin6_addr, a.data(), 16);
      if (auto n =
              config::EndpointFromSockaddr(reinterpret_cast<const sockaddr*>(&s6), sizeof(s6))) {
        ep = *n;
      }
    }
    if (!reply.name.empty() && reply.name != asked) memory.Remember(reply.name, ep);
    memory.Remember(asked, ep);
  }
}

}  // namespace

bool ResolveThroughBackend() {
  // XSOCK_RESOLVE decides when set; otherwise the process's profile (`resolve =
  // "backend"`) does. XSOCK_ROUTE replaces the file, so with it only the variable counts.
  static const bool on = [] {
    if (const char* v = getenv("XSOCK_RESOLVE"); v != nullptr && *v != '\0') {
      return std::strcmp(v, "backend") == 0;
    }
    if (getenv("XSOCK_ROUTE") != nullptr) return false;
    const auto policy = RoutingPolicy::Load(PolicySource::FromProcess(), nullptr);
    return policy->resolve_through_backend();
  }();
  return on;
}

bool IsNumericHostName(const char* name) {
  if (name == nullptr || name[0] == '\0') return false;
  const unsigned char first = static_cast<unsigned char>(name[0]);
  if (std::isdigit(first)) {
    const size_t n = std::strlen(name);
    if (std::strspn(name, "0123456789.") == n && name[n - 1] != '.') return true;
  }
  return (std::isxdigit(first) && std::strchr(name, ':') != nullptr) || name[0] == ':';
}

int ToAddrinfoList(const proto::ResolveReply& reply, int hint_flags, addrinfo** res) {
  addrinfo* head = nullptr;
  addrinfo** tail = &head;
  for (const proto::ResolveEntry& e : reply.entries) {
    sockaddr_storage ss;
    const socklen_t len = proto::ToSockaddr(e.addr, &ss);
    // One block: the node, then its address, as glibc's getaddrinfo allocates it.
    auto* ai = static_cast<addrinfo*>(std::malloc(sizeof(addrinfo) + len));
    if (ai == nullptr) {
      freeaddrinfo(head);
      return EAI_MEMORY;
    }
    std::memset(ai, 0, sizeof(addrinfo));
    ai->ai_flags = hint_flags;
    ai->ai_family = e.addr.family;
    ai->ai_socktype = e.socktype;
    ai->ai_protocol = e.protocol;
    ai->ai_addrlen = len;
    ai->ai_addr = reinterpret_cast<sockaddr*>(ai + 1);
    std::memcpy(ai->ai_addr, &ss, len);
    *tail = ai;
    tail = &ai->ai_next;
  }
  if (head != nullptr && reply.canonname) {
    head->ai_canonname = strdup(reply.canonname->c_str());
    if (head->ai_canonname == nullptr) {
      freeaddrinfo(head);
      return EAI_MEMORY;
    }
  }
  if (head == nullptr) return EAI_FAIL;  // the decoder admits no empty success
  *res = head;
  return 0;
}

int ToHostent(const proto::HostEntReply& reply, hostent* ret, char* buf, size_t buflen) {
  const size_t alen = reply.family == AF_INET ? 4 : 16;
  const size_t pad =
      (alignof(char*) - reinterpret_cast<uintptr_t>(buf) % alignof(char*)) % alignof(char*);
  size_t need = pad + (reply.addrs.size() + 1 + reply.aliases.size() + 1) * sizeof(char*) +
                reply.addrs.size() * alen + reply.name.size() + 1;
  for (const std::string& a : reply.aliases) need += a.size() + 1;
  if (buf == nullptr || buflen < need) return ERANGE;
  char** addr_list = reinterpret_cast<char**>(buf + pad);
  char** aliases = addr_list + reply.addrs.size() + 1;
  char* p = reinterpret_cast<char*>(aliases + reply.aliases.size() + 1);
  for (size_t i = 0; i < reply.addrs.size(); ++i) {
    std::memcpy(p, reply.addrs[i].data(), alen);
    addr_list[i] = p;
    p += alen;
  }
  addr_list[reply.addrs.size()] = nullptr;
  auto put = [&p](const std::string& s) {
    char* at = p;
    std::memcpy(p, s.c_str(), s.size() + 1);
    p += s.size() + 1;
    return at;
  };
  ret->h_name = put(reply.name);
  for (size_t i = 0; i < reply.aliases.size(); ++i) aliases[i] = put(reply.aliases[i]);
  aliases[reply.aliases.size()] = nullptr;
  ret->h_aliases = aliases;
  ret->h_addrtype = reply.family;
  ret->h_length = static_cast<int>(alen);
  ret->h_addr_list = addr_list;
  return 0;
}

ResolverClient::ResolverClient(const Syscalls& sys, std::string socket_path, RealResolverCalls real)
    : sys_(sys), path_(std::move(socket_path)), real_(real) {}

ResolverClient::~ResolverClient() {
  for (ControlClient* c : conns_) delete c;
}

void ResolverClient::AfterForkChild() {
  for (ControlClient* c : conns_) {
    if (c != nullptr) c->AfterForkChild();
  }
  busy_.store(0, std::memory_order_relaxed);
}

void ResolverClient::ReportOnce(const absl::Status& s) {
  if (reported_.exchange(true)) return;
  if (real_.log != nullptr) {
    real_.log(absl::StrCat("xsock: ", s.message(), "; names are resolved by the local libc"));
  }
}

absl::StatusOr<proto::Reply> ResolverClient::Call(const proto::Request& req) {
  // Claim a free connection; if all are busy, wait on one chosen by thread.
  int slot = -1;
  for (int i = 0; i < kConnections && slot < 0; ++i) {
    const uint32_t bit = 1u << i;
    if (!(busy_.fetch_or(bit, std::memory_order_acquire) & bit)) slot = i;
  }
  const bool claimed = slot >= 0;
  if (!claimed) slot = static_cast<int>(static_cast<uint64_t>(pthread_self()) % kConnections);
  // Released however the call ends (a cancelled thread unwinds through it).
  struct Release {
    std::atomic<uint32_t>* busy;
    uint32_t bit;
    ~Release() {
      if (bit != 0) busy->fetch_and(~bit, std::memory_order_release);
    }
  } release{&busy_, claimed ? 1u << slot : 0u};
  // Created once, never replaced: a connection reconnects by itself (fork, xsockd gone).
  static pthread_mutex_t create_mu = PTHREAD_MUTEX_INITIALIZER;
  pthread_mutex_lock(&create_mu);
  if (conns_[slot] == nullptr) conns_[slot] = new ControlClient(sys_, path_);
  ControlClient* conn = conns_[slot];
  pthread_mutex_unlock(&create_mu);
  auto r = conn->Call(req);
  if (!r.ok()) return r.status();
  for (int fd : r->fds) sys_.close(fd);  // none come with lookups (checked by the decoder)
  return std::move(r->reply);
}

std::optional<int> ResolverClient::GetAddrInfo(const char* node, const char* service,
                                               const addrinfo* hints, addrinfo** res) {
  // No host: no name lookup at all (wildcard or loopback addresses). Numeric host asked
  // for: the local libc answers it the same way.
  if (node == nullptr || res == nullptr) return std::nullopt;
  const int flags = hints != nullptr ? hints->ai_flags : kDefaultHintFlags;
  const int family = hints != nullptr ? hints->ai_family : AF_UNSPEC;
  const int socktype = hints != nullptr ? hints->ai_socktype : 0;
  const int protocol = hints != nullptr ? hints->ai_protocol : 0;
  if (flags & AI_NUMERICHOST) return std::nullopt;
  const std::optional<uint32_t> wire_flags = proto::AiFlagsToWire(flags);
  if (!wire_flags) return std::nullopt;  // unknown flag: the local EAI_BADFLAGS
  if (family != AF_UNSPEC && family != AF_INET && family != AF_INET6) return std::nullopt;
  if (socktype < 0 || socktype > 15 || protocol < 0 || protocol > 65535) return std::nullopt;
  if (std::strlen(node) > proto::kMaxHostNameLen) return std::nullopt;
  if (service != nullptr && std::strlen(service) > proto::kMaxServiceLen) return std::nullopt;

  // A literal address needs no resolver: the local libc parses it (AI_NUMERICHOST), and
  // so does any error it finds in the arguments or the service. Only "not a number"
  // (EAI_NONAME) goes on to xsockd.
  addrinfo probe = {};
  probe.ai_flags = flags | AI_NUMERICHOST;
  probe.ai_family = family;
  probe.ai_socktype = socktype;
  probe.ai_protocol = protocol;
  const int local = real_.getaddrinfo(node, service, &probe, res);
  if (local == 0) {
    for (addrinfo* ai = *res; ai != nullptr; ai = ai->ai_next) ai->ai_flags = flags;
    return 0;
  }
  if (local != EAI_NONAME) return local;

  proto::ResolveRequest req;
  req.flags = *wire_flags;
  req.family = static_cast<uint16_t>(family);
  req.socktype = socktype;
  req.protocol = protocol;
  req.host = node;
  if (service != nullptr) req.service = service;
  auto r = Call(req);
  if (!r.ok()) {
    ReportOnce(r.status());
    return std::nullopt;
  }
  const auto* reply = std::get_if<proto::ResolveReply>(&*r);
  if (reply == nullptr || reply->err != 0) return std::nullopt;  // e.g. an older xsockd
  if (reply->gai != 0) {
    const int eai = proto::GaiFromWire(reply->gai);
    if (eai == EAI_SYSTEM) errno = static_cast<int>(reply->sys_errno);
    return eai;
  }
  RememberNames(node, *reply);
  return ToAddrinfoList(*reply, flags, res);
}

std::optional<int> ResolverClient::GetNameInfo(const sockaddr* sa, socklen_t salen, char* host,
                                               socklen_t hostlen, char* serv, socklen_t servlen,
                                               int flags) {
  if (sa == nullptr) return std::nullopt;
  const bool want_host = host != nullptr && hostlen > 0;
  const bool want_serv = serv != nullptr && servlen > 0;
  // Without a host name to look up, nothing leaves the process (services are files).
  if (!want_host || (flags & NI_NUMERICHOST)) return std::nullopt;
  if (sa->sa_family == AF_INET) {
    if (salen < sizeof(sockaddr_in)) return std::nullopt;  // the local EAI_FAMILY
  } else if (sa->sa_family == AF_INET6) {
    if (salen < sizeof(sockaddr_in6)) return std::nullopt;
  } else {
    return std::nullopt;
  }
  const std::optional<uint32_t> wire_flags = proto::NiFlagsToWire(flags);
  if (!wire_flags) return std::nullopt;
  auto addr = proto::FromSockaddr(sa, salen);
  if (!addr.ok()) return std::nullopt;

  auto r = Call(proto::NameInfoRequest{
      .addr = *addr, .flags = *wire_flags, .want_host = want_host, .want_service = want_serv});
  if (!r.ok()) {
    ReportOnce(r.status());
    return std::nullopt;
  }
  const auto* reply = std::get_if<proto::NameInfoReply>(&*r);
  if (reply == nullptr || reply->err != 0) return std::nullopt;
  if (reply->gai != 0) {
    const int eai = proto::GaiFromWire(reply->gai);
    if (eai == EAI_SYSTEM) errno = static_cast<int>(reply->sys_errno);
    return eai;
  }
  // glibc's rule: a name that does not fit with its NUL is EAI_OVERFLOW.
  if (reply->host.size() + 1 > hostlen) return EAI_OVERFLOW;
  std::memcpy(host, reply->host.c_str(), reply->host.size() + 1);
  if (want_serv) {
    if (reply->service.size() + 1 > servlen) return EAI_OVERFLOW;
    std::memcpy(serv, reply->service.c_str(), reply->service.size() + 1);
  }
  return 0;
}

std::optional<int> ResolverClient::GetHostByName2R(const char* name, int af, hostent* ret,
                                                   char* buf, size_t buflen, hostent** result,
                                                   int* h_errnop) {
  if (name == nullptr || ret == nullptr || result == nullptr || h_errnop == nullptr) {
    return std::nullopt;
  }
  if (af != AF_INET && af != AF_INET6) return std::nullopt;
  if (IsNumericHostName(name) || std::strlen(name) > proto::kMaxHostNameLen) return std::nullopt;
  auto r = Call(proto::HostEntRequest{
      .op = proto::HostEntRequest::kByName, .family = static_cast<uint16_t>(af), .name = name});
  if (!r.ok()) {
    ReportOnce(r.status());
    return std::nullopt;
  }
  const auto* reply = std::get_if<proto::HostEntReply>(&*r);
  if (reply == nullptr || reply->err != 0) return std::nullopt;
  RememberNames(name, *reply);
  return HostEntResult(*reply, ret, buf, buflen, result, h_errnop);
}

std::optional<int> ResolverClient::GetHostByAddrR(const void* addr, socklen_t len, int type,
                                                  hostent* ret, char* buf, size_t buflen,
                                                  hostent** result, int* h_errnop) {
  if (addr == nullptr || ret == nullptr || result == nullptr || h_errnop == nullptr) {
    return std::nullopt;
  }
  if (!((type == AF_INET && len == 4) || (type == AF_INET6 && len == 16))) return std::nullopt;
  proto::HostEntRequest req{.op = proto::HostEntRequest::kByAddr,
                            .family = static_cast<uint16_t>(type)};
  req.addr.assign(static_cast<const uint8_t*>(addr), static_cast<const uint8_t*>(addr) + len);
  auto r = Call(req);
  if (!r.ok()) {
    ReportOnce(r.status());
    return std::nullopt;
  }
  const auto* reply = std::get_if<proto::HostEntReply>(&*r);
  if (reply == nullptr || reply->err != 0) return std::nullopt;
  return HostEntResult(*reply, ret, buf, buflen, result, h_errnop);
}

}  // namespace xsock::intercept
