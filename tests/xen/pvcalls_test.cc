// shared/pvcalls: layouts, request validation, ring index checks, errno mapping,
// XenStore value parsing.
#include "shared/pvcalls.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include <catch2/catch.hpp>

namespace pv = xsock::pvcalls;

namespace {

pv::Request Connect(uint16_t family, uint32_t len) {
  pv::Request r{};
  r.cmd = pv::kCmdConnect;
  r.u.connect.id = 7;
  sockaddr_in sin{};
  sin.sin_family = family;
  sin.sin_port = htons(8080);
  sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  std::memcpy(r.u.connect.addr, &sin, sizeof(sin));
  r.u.connect.len = len;
  return r;
}

}  // namespace

TEST_CASE("request and response layouts are the spec's, byte for byte") {
  STATIC_REQUIRE(sizeof(pv::Request) == 64);
  STATIC_REQUIRE(sizeof(pv::Response) == 24);
  STATIC_REQUIRE(offsetof(pv::Request, u) == 8);
  // Offsets from the spec's binary layout diagrams.
  STATIC_REQUIRE(offsetof(pv::Request, u.connect.addr) == 16);
  STATIC_REQUIRE(offsetof(pv::Request, u.connect.len) == 44);
  STATIC_REQUIRE(offsetof(pv::Request, u.connect.flags) == 48);
  STATIC_REQUIRE(offsetof(pv::Request, u.connect.ref) == 52);
  STATIC_REQUIRE(offsetof(pv::Request, u.connect.evtchn) == 56);
  STATIC_REQUIRE(offsetof(pv::Request, u.release.reuse) == 16);
  STATIC_REQUIRE(offsetof(pv::Request, u.listen.backlog) == 16);
  STATIC_REQUIRE(offsetof(pv::Request, u.accept.id_new) == 16);
  STATIC_REQUIRE(offsetof(pv::Request, u.accept.ref) == 24);
  STATIC_REQUIRE(offsetof(pv::Request, u.accept.evtchn) == 28);
  STATIC_REQUIRE(offsetof(pv::Response, ret) == 8);
  STATIC_REQUIRE(offsetof(pv::Response, id) == 16);
  STATIC_REQUIRE(pv::kDataIntfRefOffset == 132);
  STATIC_REQUIRE(offsetof(pv::DataIntf, ring_order) == 128);
  STATIC_REQUIRE(pv::DataRingBytes(1) == 4096);
  STATIC_REQUIRE(pv::DataRingBytes(4) == 32768);
}

TEST_CASE("CopyRequest copies the slot once; later changes to the slot do not matter") {
  pv::Request slot = Connect(AF_INET, 16);
  const pv::Request copy = pv::CopyRequest(&slot);
  slot.u.connect.flags = 0xFFFFFFFF;
  slot.cmd = 99;
  CHECK(copy.cmd == pv::kCmdConnect);
  CHECK(pv::CheckRequest(copy).verdict == pv::Verdict::kExecute);
}

TEST_CASE("socket accepts AF_INET stream TCP only, like Linux's pvcalls-back") {
  pv::Request r{};
  r.cmd = pv::kCmdSocket;
  r.u.socket.domain = AF_INET;
  r.u.socket.type = SOCK_STREAM;
  CHECK(pv::CheckRequest(r).verdict == pv::Verdict::kExecute);
  r.u.socket.protocol = IPPROTO_TCP;
  CHECK(pv::CheckRequest(r).verdict == pv::Verdict::kExecute);
  r.u.socket.protocol = IPPROTO_UDP;
  CHECK(pv::CheckRequest(r).error == -EAFNOSUPPORT);
  r.u.socket.protocol = 0;
  r.u.socket.domain = AF_INET6;
  CHECK(pv::CheckRequest(r).error == -EAFNOSUPPORT);
  r.u.socket.domain = AF_INET;
  r.u.socket.type = SOCK_DGRAM;
  CHECK(pv::CheckRequest(r).verdict == pv::Verdict::kReject);
}

TEST_CASE("connect and bind decode sockaddr_in; short or foreign addresses are EINVAL") {
  auto c = pv::CheckRequest(Connect(AF_INET, 16));
  REQUIRE(c.verdict == pv::Verdict::kExecute);
  CHECK(c.inet.port == 8080);
  CHECK(c.inet.addr_be == htonl(INADDR_LOOPBACK));
  // Longer than 16 is what Linux's frontend passes through from the application.
  CHECK(pv::CheckRequest(Connect(AF_INET, 28)).verdict == pv::Verdict::kExecute);
  CHECK(pv::CheckRequest(Connect(AF_INET, 200)).verdict == pv::Verdict::kExecute);
  CHECK(pv::CheckRequest(Connect(AF_INET, 15)).error == -EINVAL);
  CHECK(pv::CheckRequest(Connect(AF_INET6, 28)).error == -EINVAL);
  pv::Request b = Connect(AF_INET, 16);
  b.cmd = pv::kCmdBind;
  CHECK(pv::CheckRequest(b).verdict == pv::Verdict::kExecute);
}

TEST_CASE("reserved connect flags and a release reuse other than 0/1 are garbage") {
  pv::Request r = Connect(AF_INET, 16);
  r.u.connect.flags = 1;
  CHECK(pv::CheckRequest(r).verdict == pv::Verdict::kGarbage);
  pv::Request rel{};
  rel.cmd = pv::kCmdRelease;
  rel.u.release.reuse = 1;
  CHECK(pv::CheckRequest(rel).verdict == pv::Verdict::kExecute);
  rel.u.release.reuse = 2;
  CHECK(pv::CheckRequest(rel).verdict == pv::Verdict::kGarbage);
}

TEST_CASE("padding is not checked: Linux's frontend leaves old bytes in reused slots") {
  pv::Request r{};
  r.cmd = pv::kCmdSocket;
  r.u.socket.domain = AF_INET;
  r.u.socket.type = SOCK_STREAM;
  std::memset(r.u.socket.pad, 0xAB, sizeof(r.u.socket.pad));
  CHECK(pv::CheckRequest(r).verdict == pv::Verdict::kExecute);
}

TEST_CASE("unknown commands are answered -ENOTSUPP, as the spec says") {
  pv::Request r{};
  r.cmd = 7;
  auto c = pv::CheckRequest(r);
  CHECK(c.verdict == pv::Verdict::kReject);
  CHECK(c.error == pv::kWireENOTSUPP);
  r.cmd = 0xFFFFFFFF;
  CHECK(pv::CheckRequest(r).error == pv::kWireENOTSUPP);
}

TEST_CASE("listen clamps the backlog; accept refuses id_new equal to the listener") {
  pv::Request l{};
  l.cmd = pv::kCmdListen;
  l.u.listen.backlog = 0xFFFFFFFF;
  CHECK(pv::CheckRequest(l).backlog == pv::kMaxBacklog);
  pv::Request a{};
  a.cmd = pv::kCmdAccept;
  a.u.accept.id = 5;
  a.u.accept.id_new = 5;
  CHECK(pv::CheckRequest(a).error == -EINVAL);
  a.u.accept.id_new = 6;
  CHECK(pv::CheckRequest(a).verdict == pv::Verdict::kExecute);
}

TEST_CASE("responses echo req_id, cmd and the socket id (accept: the listener's)") {
  pv::Request a{};
  a.req_id = 42;
  a.cmd = pv::kCmdAccept;
  a.u.accept.id = 9;
  a.u.accept.id_new = 10;
  const pv::Response r = pv::MakeResponse(a, -EAGAIN);
  CHECK(r.req_id == 42);
  CHECK(r.cmd == pv::kCmdAccept);
  CHECK(r.ret == -EAGAIN);
  CHECK(r.id == 9);
  CHECK(r.pad == 0);
}

TEST_CASE("command ring: at most a ring's worth outstanding, req_prod never goes back") {
  CHECK(pv::CheckCommandRing(0, 0, 0) == 0u);
  CHECK(pv::CheckCommandRing(32, 0, 0) == 32u);
  CHECK_FALSE(pv::CheckCommandRing(33, 0, 0));
  CHECK(pv::CheckCommandRing(40, 20, 10) == 20u);
  CHECK_FALSE(pv::CheckCommandRing(43, 20, 10));
  // Behind what we consumed already.
  CHECK_FALSE(pv::CheckCommandRing(19, 20, 10));
  // Wrap of the free-running indices.
  CHECK(pv::CheckCommandRing(5, 0xFFFFFFF0u, 0xFFFFFFF0u) == 21u);
  CHECK_FALSE(pv::CheckCommandRing(0x80000000u, 0, 0));
}

TEST_CASE("out ring: out_prod may run at most the ring size ahead of out_cons") {
  CHECK(pv::CheckOutRing(100, 100, 4096) == 0u);
  CHECK(pv::CheckOutRing(4196, 100, 4096) == 4096u);
  CHECK_FALSE(pv::CheckOutRing(4197, 100, 4096));
  CHECK_FALSE(pv::CheckOutRing(99, 100, 4096));  // behind the consumer
  CHECK(pv::CheckOutRing(10, 0xFFFFFFF0u, 4096) == 26u);
}

TEST_CASE("in ring: in_cons moves forward, never past in_prod") {
  CHECK(pv::CheckInRing(0, 0, 0, 4096) == 4096u);
  CHECK(pv::CheckInRing(0, 0, 4096, 4096) == 0u);
  CHECK(pv::CheckInRing(100, 0, 4096, 4096) == 100u);
  CHECK_FALSE(pv::CheckInRing(4097, 0, 4096, 4096));  // past the producer
  CHECK_FALSE(pv::CheckInRing(50, 100, 4096, 4096));  // went back
  CHECK(pv::CheckInRing(5, 0xFFFFFFF0u, 10, 4096) == 4091u);
}

TEST_CASE("ring regions split at the wrap") {
  auto r = pv::RingRegions(4090, 10, 4096);
  CHECK(r.first_offset == 4090);
  CHECK(r.first_len == 6);
  CHECK(r.second_len == 4);
  r = pv::RingRegions(4096 * 3 + 1, 100, 4096);
  CHECK(r.first_offset == 1);
  CHECK(r.first_len == 100);
  CHECK(r.second_len == 0);
}

TEST_CASE("errno mapping: negative Linux numbers, ENOTSUPP and out-of-range values") {
  CHECK(pv::ToWireErrno(ECONNREFUSED) == -111);
  CHECK(pv::ToWireErrno(EAGAIN) == -11);
  CHECK(pv::ToWireErrno(0) == -EIO);
  CHECK(pv::ToWireErrno(100000) == -EIO);
  CHECK(pv::FromWireErrno(0) == 0);
  CHECK(pv::FromWireErrno(5) == 0);
  CHECK(pv::FromWireErrno(-111) == ECONNREFUSED);
  CHECK(pv::FromWireErrno(pv::kWireENOTSUPP) == EOPNOTSUPP);
  CHECK(pv::FromWireErrno(-100000) == EIO);
  CHECK(pv::FromWireErrno(INT32_MIN) == EIO);
}

TEST_CASE("XenStore numbers: canonical decimal only") {
  CHECK(pv::ParseXsUint("0") == 0u);
  CHECK(pv::ParseXsUint("4294967295") == 4294967295u);
  CHECK_FALSE(pv::ParseXsUint("4294967296"));
  CHECK_FALSE(pv::ParseXsUint(""));
  CHECK_FALSE(pv::ParseXsUint("012"));
  CHECK_FALSE(pv::ParseXsUint("-1"));
  CHECK_FALSE(pv::ParseXsUint("+1"));
  CHECK_FALSE(pv::ParseXsUint(" 1"));
  CHECK_FALSE(pv::ParseXsUint("1 "));
  CHECK_FALSE(pv::ParseXsUint("0x10"));
  CHECK_FALSE(pv::ParseXsUint(std::string_view("1\0", 2)));
  CHECK_FALSE(pv::ParseXsUint("99999999999"));
}

TEST_CASE("XenStore paths of a frontend") {
  CHECK(pv::BackendPath(0, 3) == "/local/domain/0/backend/pvcalls/3/0");
  CHECK(pv::FrontendPath(3) == "/local/domain/3/device/pvcalls/0");
}

// ---- the xsock extension ----------------------------------------------------------------

namespace {
pv::Request Connect6(uint32_t len) {
  pv::Request r{};
  r.cmd = pv::kCmdConnect;
  r.u.connect.id = 7;
  sockaddr_in6 sin6{};
  sin6.sin6_family = AF_INET6;
  sin6.sin6_port = htons(443);
  sin6.sin6_addr = in6addr_loopback;
  sin6.sin6_scope_id = 3;
  std::memcpy(r.u.connect.addr, &sin6, sizeof(sin6));
  r.u.connect.len = len;
  return r;
}
}  // namespace

TEST_CASE("ext: AF_INET6 sockets and sockaddr_in6 addresses only when negotiated") {
  pv::Request s{};
  s.cmd = pv::kCmdSocket;
  s.u.socket.domain = AF_INET6;
  s.u.socket.type = SOCK_STREAM;
  CHECK(pv::CheckRequest(s, false).error == -EAFNOSUPPORT);
  CHECK(pv::CheckRequest(s, true).verdict == pv::Verdict::kExecute);
  s.u.socket.domain = AF_UNIX;
  CHECK(pv::CheckRequest(s, true).error == -EAFNOSUPPORT);

  CHECK(pv::CheckRequest(Connect6(28), false).error == -EINVAL);
  const auto c = pv::CheckRequest(Connect6(28), true);
  REQUIRE(c.verdict == pv::Verdict::kExecute);
  CHECK(c.inet.family == AF_INET6);
  CHECK(c.inet.port == 443);
  CHECK(c.inet.scope_id == 3);
  CHECK(std::memcmp(c.inet.addr6, &in6addr_loopback, 16) == 0);
  CHECK(pv::AddrText(c.inet) == "[::1]:443");
  // A sockaddr_in6 is 28 bytes: anything shorter is refused, as the kernel does.
  CHECK(pv::CheckRequest(Connect6(24), true).error == -EINVAL);
  // Round trip through ToSockaddr.
  sockaddr_in6 back{};
  REQUIRE(pv::ToSockaddr(c.inet, &back) == sizeof(back));
  CHECK(back.sin6_family == AF_INET6);
  CHECK(ntohs(back.sin6_port) == 443);
  CHECK(back.sin6_scope_id == 3);
  // IPv4 is unchanged under the extension.
  CHECK(pv::CheckRequest(Connect(AF_INET, 16), true).inet.family == AF_INET);
}

TEST_CASE("ext: commands are unknown (-ENOTSUPP) unless negotiated; their fields are checked") {
  pv::Request r{};
  r.cmd = pv::kCmdExtShutdown;
  r.u.ext_shutdown.how = SHUT_WR;
  CHECK(pv::CheckRequest(r, false).error == pv::kWireENOTSUPP);
  CHECK(pv::CheckRequest(r, true).verdict == pv::Verdict::kExecute);
  r.u.ext_shutdown.how = 3;
  CHECK(pv::CheckRequest(r, true).error == -EINVAL);

  pv::Request o{};
  o.cmd = pv::kCmdExtSetSockOpt;
  o.u.ext_sockopt.level = IPPROTO_TCP;
  o.u.ext_sockopt.name = 1;  // TCP_NODELAY
  o.u.ext_sockopt.len = 4;
  CHECK(pv::CheckRequest(o, false).error == pv::kWireENOTSUPP);
  CHECK(pv::CheckRequest(o, true).verdict == pv::Verdict::kExecute);
  o.u.ext_sockopt.len = 0;
  CHECK(pv::CheckRequest(o, true).error == -EINVAL);
  o.u.ext_sockopt.len = pv::kExtMaxOptLen + 1;
  CHECK(pv::CheckRequest(o, true).error == -EINVAL);
  o.u.ext_sockopt.len = 4;
  o.u.ext_sockopt.level = SOL_SOCKET;
  o.u.ext_sockopt.name = SO_BINDTODEVICE;  // not carried: a guest must not pick dom0's NIC
  CHECK(pv::CheckRequest(o, true).error == -ENOPROTOOPT);
  o.u.ext_sockopt.name = SO_ERROR;  // read only
  CHECK(pv::CheckRequest(o, true).error == -ENOPROTOOPT);
  o.cmd = pv::kCmdExtGetSockOpt;
  CHECK(pv::CheckRequest(o, true).verdict == pv::Verdict::kExecute);

  pv::Request n{};
  n.cmd = pv::kCmdExtGetPeerName;
  CHECK(pv::CheckRequest(n, true).verdict == pv::Verdict::kExecute);
  n.cmd = pv::kCmdExtGetPeerName + 1;  // past the extension's numbers
  CHECK(pv::CheckRequest(n, true).error == pv::kWireENOTSUPP);
}
