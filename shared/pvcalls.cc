#include "shared/pvcalls.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#if __has_include(<xen/io/pvcalls.h>)
#include <xen/io/pvcalls.h>
#define XSOCK_HAVE_XEN_PVCALLS_H 1
#endif

namespace xsock::pvcalls {

#ifdef XSOCK_HAVE_XEN_PVCALLS_H
// Our spelling of the layouts is Xen's, byte for byte.
static_assert(sizeof(Request) == sizeof(struct xen_pvcalls_request));
static_assert(sizeof(Response) == sizeof(struct xen_pvcalls_response));
static_assert(offsetof(Request, u) == offsetof(struct xen_pvcalls_request, u));
static_assert(offsetof(Request, u.connect.addr) ==
              offsetof(struct xen_pvcalls_request, u.connect.addr));
static_assert(offsetof(Request, u.connect.len) ==
              offsetof(struct xen_pvcalls_request, u.connect.len));
static_assert(offsetof(Request, u.connect.flags) ==
              offsetof(struct xen_pvcalls_request, u.connect.flags));
static_assert(offsetof(Request, u.connect.ref) ==
              offsetof(struct xen_pvcalls_request, u.connect.ref));
static_assert(offsetof(Request, u.connect.evtchn) ==
              offsetof(struct xen_pvcalls_request, u.connect.evtchn));
static_assert(offsetof(Request, u.bind.len) == offsetof(struct xen_pvcalls_request, u.bind.len));
static_assert(offsetof(Request, u.release.reuse) ==
              offsetof(struct xen_pvcalls_request, u.release.reuse));
static_assert(offsetof(Request, u.listen.backlog) ==
              offsetof(struct xen_pvcalls_request, u.listen.backlog));
static_assert(offsetof(Request, u.accept.id_new) ==
              offsetof(struct xen_pvcalls_request, u.accept.id_new));
static_assert(offsetof(Request, u.accept.ref) ==
              offsetof(struct xen_pvcalls_request, u.accept.ref));
static_assert(offsetof(Request, u.accept.evtchn) ==
              offsetof(struct xen_pvcalls_request, u.accept.evtchn));
static_assert(offsetof(Request, u.socket.protocol) ==
              offsetof(struct xen_pvcalls_request, u.socket.protocol));
static_assert(offsetof(Response, ret) == offsetof(struct xen_pvcalls_response, ret));
static_assert(offsetof(Response, id) == offsetof(struct xen_pvcalls_response, u.socket.id));
static_assert(offsetof(Response, id) == offsetof(struct xen_pvcalls_response, u.accept.id));
static_assert(offsetof(DataIntf, out_cons) == offsetof(struct pvcalls_data_intf, out_cons));
static_assert(offsetof(DataIntf, out_error) == offsetof(struct pvcalls_data_intf, out_error));
static_assert(offsetof(DataIntf, ring_order) == offsetof(struct pvcalls_data_intf, ring_order));
static_assert(kDataIntfRefOffset == offsetof(struct pvcalls_data_intf, ref));
static_assert(sizeof(SringHeader) == offsetof(struct xen_pvcalls_sring, ring));
static_assert(kSlotSize == sizeof(union xen_pvcalls_sring_entry));
static_assert(kCommandRingSize == __CONST_RING_SIZE(xen_pvcalls, 4096));
static_assert(DataRingBytes(1) == XEN_FLEX_RING_SIZE(1));
static_assert(DataRingBytes(kMaxRingOrder) == XEN_FLEX_RING_SIZE(kMaxRingOrder));
static_assert(kCmdSocket == PVCALLS_SOCKET && kCmdConnect == PVCALLS_CONNECT &&
              kCmdRelease == PVCALLS_RELEASE && kCmdBind == PVCALLS_BIND &&
              kCmdListen == PVCALLS_LISTEN && kCmdAccept == PVCALLS_ACCEPT &&
              kCmdPoll == PVCALLS_POLL);
#endif

// The refs of the largest ring fit in the indexes page.
static_assert(kDataIntfRefOffset + (size_t{4} << kMaxRingOrder) <= kPageSize);

// The spec's error table is Linux's numbering; the host must agree for ToWireErrno's
// identity mapping to be right.
static_assert(EPERM == 1 && ENOENT == 2 && EINTR == 4 && EIO == 5 && EBADF == 9 && EAGAIN == 11 &&
                  ENOMEM == 12 && EACCES == 13 && EFAULT == 14 && EBUSY == 16 && EEXIST == 17 &&
                  EINVAL == 22 && ENFILE == 23 && EMFILE == 24 && ENOSPC == 28 && ENOSYS == 38 &&
                  ENOTSOCK == 88 && EOPNOTSUPP == 95 && EAFNOSUPPORT == 97 && EADDRINUSE == 98 &&
                  EADDRNOTAVAIL == 99 && ENOBUFS == 105 && EISCONN == 106 && ENOTCONN == 107 &&
                  ETIMEDOUT == 110 && ECONNREFUSED == 111 && ECONNRESET == 104 &&
                  ENETUNREACH == 101 && EHOSTUNREACH == 113 && EINPROGRESS == 115 &&
                  EALREADY == 114 && EPIPE == 32,
              "PVCalls error numbers are Linux's; this host numbers errno differently");

namespace {
constexpr int kMaxLinuxErrno = 4095;
constexpr uint16_t kAfInet = 2;
static_assert(AF_INET == kAfInet && sizeof(sockaddr_in6) == 28);
}  // namespace

int32_t ToWireErrno(int host_errno) {
  if (host_errno <= 0 || host_errno > kMaxLinuxErrno) return -EIO;
  return -host_errno;
}

int FromWireErrno(int32_t wire) {
  if (wire >= 0) return 0;
  if (wire == kWireENOTSUPP) return EOPNOTSUPP;
  if (wire < -kMaxLinuxErrno) return EIO;
  return -wire;
}

Request CopyRequest(const void* shared_slot) {
  Request r;
  std::memcpy(&r, shared_slot, sizeof(r));
  // The copy is complete before any field of it is used: the compiler may not re-read
  // the shared slot in place of the local copy.
  asm volatile("" ::: "memory");
  return r;
}

namespace {

Checked Reject(int err, const char* reason) {
  Checked c;
  c.verdict = Verdict::kReject;
  c.error = -err;
  c.reason = reason;
  return c;
}

Checked Garbage(const char* reason) {
  Checked c;
  c.verdict = Verdict::kGarbage;
  c.reason = reason;
  return c;
}

}  // namespace

std::optional<InetAddr> FromSockaddr(const void* sa, uint32_t len, bool ext) {
  if (sa == nullptr || len < sizeof(sockaddr_in)) return std::nullopt;
  const auto* bytes = static_cast<const uint8_t*>(sa);
  uint16_t family;
  std::memcpy(&family, bytes, 2);
  InetAddr a;
  a.family = family;
  uint16_t port_be;
  std::memcpy(&port_be, bytes + 2, 2);
  a.port = ntohs(port_be);
  if (family == AF_INET) {
    std::memcpy(&a.addr_be, bytes + offsetof(sockaddr_in, sin_addr), 4);
    return a;
  }
  if (family == AF_INET6 && ext && len >= sizeof(sockaddr_in6)) {
    std::memcpy(a.addr6, bytes + offsetof(sockaddr_in6, sin6_addr), 16);
    std::memcpy(&a.scope_id, bytes + offsetof(sockaddr_in6, sin6_scope_id), 4);
    return a;
  }
  return std::nullopt;
}

uint32_t ToSockaddr(const InetAddr& a, void* storage) {
  if (a.family == AF_INET6) {
    sockaddr_in6 sin6{};
    sin6.sin6_family = AF_INET6;
    sin6.sin6_port = htons(a.port);
    std::memcpy(&sin6.sin6_addr, a.addr6, 16);
    sin6.sin6_scope_id = a.scope_id;
    std::memcpy(storage, &sin6, sizeof(sin6));
    return sizeof(sin6);
  }
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(a.port);
  sin.sin_addr.s_addr = a.addr_be;
  std::memcpy(storage, &sin, sizeof(sin));
  return sizeof(sin);
}

std::string AddrText(const InetAddr& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (a.family == AF_INET6) {
    inet_ntop(AF_INET6, a.addr6, buf, sizeof(buf));
    return "[" + std::string(buf) + "]:" + std::to_string(a.port);
  }
  inet_ntop(AF_INET, &a.addr_be, buf, sizeof(buf));
  return std::string(buf) + ":" + std::to_string(a.port);
}

namespace {

// The socket options a frontend may touch (both directions unless get_only).
struct AllowedOpt {
  int level;
  int name;
  bool get_only;
};
constexpr AllowedOpt kAllowedOpts[] = {
    {SOL_SOCKET, SO_KEEPALIVE, false},   {SOL_SOCKET, SO_RCVBUF, false},
    {SOL_SOCKET, SO_SNDBUF, false},      {SOL_SOCKET, SO_REUSEADDR, false},
    {SOL_SOCKET, SO_LINGER, false},      {SOL_SOCKET, SO_ERROR, true},
    {IPPROTO_TCP, TCP_NODELAY, false},   {IPPROTO_TCP, TCP_KEEPIDLE, false},
    {IPPROTO_TCP, TCP_KEEPINTVL, false}, {IPPROTO_TCP, TCP_KEEPCNT, false},
    {IPPROTO_IPV6, IPV6_V6ONLY, false},
};

Checked CheckExt(const Request& r) {
  Checked ok;
  ok.verdict = Verdict::kExecute;
  switch (r.cmd) {
    case kCmdExtShutdown: {
      const uint32_t how = r.u.ext_shutdown.how;
      if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR) {
        return Reject(EINVAL, "shutdown: how is not SHUT_RD, SHUT_WR or SHUT_RDWR");
      }
      return ok;
    }
    case kCmdExtSetSockOpt:
    case kCmdExtGetSockOpt: {
      const auto& o = r.u.ext_sockopt;
      if (o.len == 0 || o.len > kExtMaxOptLen) return Reject(EINVAL, "sockopt: bad length");
      if (!ExtOptionAllowed(o.level, o.name, r.cmd == kCmdExtSetSockOpt)) {
        return Reject(ENOPROTOOPT, "sockopt: option not carried");
      }
      return ok;
    }
    default:  // getsockname, getpeername: only the id
      return ok;
  }
}

}  // namespace

bool ExtOptionAllowed(uint32_t level, uint32_t name, bool set) {
  for (const AllowedOpt& o : kAllowedOpts) {
    if (static_cast<uint32_t>(o.level) == level && static_cast<uint32_t>(o.name) == name) {
      return !(set && o.get_only);
    }
  }
  return false;
}

Checked CheckRequest(const Request& r, bool ext) {
  Checked ok;
  ok.verdict = Verdict::kExecute;
  if (ext && IsExtCommand(r.cmd)) return CheckExt(r);
  switch (r.cmd) {
    case kCmdSocket:
      if ((r.u.socket.domain != AF_INET && !(ext && r.u.socket.domain == AF_INET6)) ||
          r.u.socket.type != SOCK_STREAM ||
          (r.u.socket.protocol != 0 && r.u.socket.protocol != IPPROTO_TCP)) {
        return Reject(EAFNOSUPPORT, ext ? "socket: only AF_INET or AF_INET6 SOCK_STREAM"
                                        : "socket: only AF_INET SOCK_STREAM");
      }
      return ok;
    case kCmdConnect: {
      if (r.u.connect.flags != 0) return Garbage("connect: reserved flags set");
      const auto a = FromSockaddr(r.u.connect.addr, r.u.connect.len, ext);
      if (!a) return Reject(EINVAL, "connect: not an AF_INET address");
      ok.inet = *a;
      return ok;
    }
    case kCmdRelease:
      if (r.u.release.reuse > 1) return Garbage("release: reuse is neither 0 nor 1");
      return ok;
    case kCmdBind: {
      const auto a = FromSockaddr(r.u.bind.addr, r.u.bind.len, ext);
      if (!a) return Reject(EINVAL, "bind: not an AF_INET address");
      ok.inet = *a;
      return ok;
    }
    case kCmdListen:
      ok.backlog = r.u.listen.backlog > kMaxBacklog ? kMaxBacklog : r.u.listen.backlog;
      return ok;
    case kCmdAccept:
      if (r.u.accept.id_new == r.u.accept.id) {
        return Reject(EINVAL, "accept: id_new is the listener's id");
      }
      return ok;
    case kCmdPoll:
      return ok;
    default: {
      Checked c;
      c.verdict = Verdict::kReject;
      c.error = kWireENOTSUPP;
      c.reason = "unknown command";
      return c;
    }
  }
}

Response MakeResponse(const Request& r, int32_t ret) {
  Response rsp{};
  rsp.req_id = r.req_id;
  rsp.cmd = r.cmd;
  rsp.ret = ret;
  // Every command's request starts its union with the socket id it is about.
  rsp.id = r.u.socket.id;
  return rsp;
}

std::optional<uint32_t> CheckCommandRing(uint32_t req_prod, uint32_t req_cons,
                                         uint32_t rsp_prod_pvt) {
  // Outstanding = produced but not answered; a conforming frontend never has more
  // than the ring holds (it waits for free response slots).
  if (req_prod - rsp_prod_pvt > kCommandRingSize) return std::nullopt;
  // req_cons lies in [rsp_prod_pvt, req_prod]: anything else means req_prod went back.
  if (req_prod - req_cons > req_prod - rsp_prod_pvt) return std::nullopt;
  return req_prod - req_cons;
}

std::optional<uint32_t> CheckOutRing(uint32_t out_prod, uint32_t out_cons_private,
                                     uint32_t ring_bytes) {
  const uint32_t filled = out_prod - out_cons_private;
  if (filled > ring_bytes) return std::nullopt;
  return filled;
}

std::optional<uint32_t> CheckInRing(uint32_t in_cons, uint32_t last_in_cons,
                                    uint32_t in_prod_private, uint32_t ring_bytes) {
  // Moves since last time, and what was published then: the consumer moved forward by
  // at most what the producer has written since.
  if (in_cons - last_in_cons > in_prod_private - last_in_cons) return std::nullopt;
  const uint32_t filled = in_prod_private - in_cons;
  if (filled > ring_bytes) return std::nullopt;
  return ring_bytes - filled;
}

Regions RingRegions(uint32_t index, uint32_t len, uint32_t ring_bytes) {
  Regions r;
  r.first_offset = index & (ring_bytes - 1);
  const size_t to_end = ring_bytes - r.first_offset;
  r.first_len = len < to_end ? len : to_end;
  r.second_len = len - r.first_len;
  return r;
}

std::optional<uint32_t> ParseXsUint(std::string_view value) {
  if (value.empty() || value.size() > 10) return std::nullopt;
  if (value.size() > 1 && value[0] == '0') return std::nullopt;
  uint64_t v = 0;
  for (char c : value) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  if (v > UINT32_MAX) return std::nullopt;
  return static_cast<uint32_t>(v);
}

std::string BackendPath(uint32_t backend_domid, uint32_t frontend_domid) {
  return "/local/domain/" + std::to_string(backend_domid) + "/backend/pvcalls/" +
         std::to_string(frontend_domid) + "/0";
}

std::string FrontendPath(uint32_t frontend_domid) {
  return "/local/domain/" + std::to_string(frontend_domid) + "/device/pvcalls/0";
}

}  // namespace xsock::pvcalls
