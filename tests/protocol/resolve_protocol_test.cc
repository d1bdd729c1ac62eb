// The name resolution messages (resolve, nameinfo, hostent) and the libc <-> wire code
// mapping of shared/resolve_codes.h.
#include <netdb.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "shared/protocol.h"
#include "shared/resolve_codes.h"
#include "tests/protocol/samples.h"

namespace xsock::proto {
namespace {

using Catch::Matchers::StartsWith;
using Bytes = std::vector<uint8_t>;
using testing::LinkLocalV6;
using testing::V4;

void Put16(Bytes& b, size_t off, uint16_t v) {
  b.at(off) = static_cast<uint8_t>(v);
  b.at(off + 1) = static_cast<uint8_t>(v >> 8);
}
void Put32(Bytes& b, size_t off, uint32_t v) {
  for (size_t i = 0; i < 4; ++i) b.at(off + i) = static_cast<uint8_t>(v >> (8 * i));
}
void FixLength(Bytes& b) { Put32(b, 8, static_cast<uint32_t>(b.size())); }

std::string RequestError(const Bytes& b) {
  auto d = DecodeRequest(b);
  if (d.ok()) return "(accepted)";
  CHECK(d.status().code() == absl::StatusCode::kInvalidArgument);
  return std::string(d.status().message());
}
std::string ReplyError(const Bytes& b) {
  auto d = DecodeReply(b);
  if (d.ok()) return "(accepted)";
  CHECK(d.status().code() == absl::StatusCode::kInvalidArgument);
  return std::string(d.status().message());
}

void RoundTrip(const Request& r) {
  INFO(Name(TypeOf(r)) << " request");
  const Bytes b = EncodeRequest(5, r);
  CHECK(b.size() <= kMaxMessageSize);
  auto d = DecodeRequest(b);
  INFO((d.ok() ? std::string("ok") : std::string(d.status().message())));
  REQUIRE(d.ok());
  CHECK(d->msg == r);
  CHECK(EncodeRequest(5, d->msg) == b);
}
void RoundTrip(const Reply& r) {
  INFO(Name(TypeOf(r)) << " reply");
  const Bytes b = EncodeReply(6, r);
  CHECK(b.size() <= kMaxMessageSize);
  auto d = DecodeReply(b);
  INFO((d.ok() ? std::string("ok") : std::string(d.status().message())));
  REQUIRE(d.ok());
  CHECK(d->msg == r);
  CHECK(EncodeReply(6, d->msg) == b);
}

constexpr size_t kBody = kHeaderSize;

ResolveReply LargestResolveReply() {
  ResolveReply r;
  r.canonname = std::string(kMaxHostNameLen, 'c');
  for (size_t i = 0; i < kMaxResolveEntries; ++i) {
    r.entries.push_back({.socktype = 15, .protocol = 65535, .addr = LinkLocalV6(65535, 1, 2)});
  }
  return r;
}

TEST_CASE("resolve requests with absent, empty and longest names survive a round trip",
          "[protocol][resolve]") {
  RoundTrip(Request{ResolveRequest{}});  // getaddrinfo(NULL, NULL, NULL)
  RoundTrip(Request{ResolveRequest{.host = "", .service = ""}});
  RoundTrip(Request{ResolveRequest{.flags = kAiAllFlags,
                                   .family = AF_INET,
                                   .socktype = 15,
                                   .protocol = 65535,
                                   .host = std::string(kMaxHostNameLen, 'h'),
                                   .service = std::string(kMaxServiceLen, 's')}});
  RoundTrip(Request{ResolveRequest{.service = "80"}});
  RoundTrip(Request{ResolveRequest{.host = "a"}});
}

TEST_CASE("name resolution replies with edge values survive a round trip", "[protocol][resolve]") {
  RoundTrip(Reply{LargestResolveReply()});
  RoundTrip(Reply{ResolveReply{.entries = {{.addr = V4(1, 2, 3, 4, 0)}}}});  // no canonname
  RoundTrip(Reply{ResolveReply{.canonname = "", .entries = {{.addr = V4(1, 2, 3, 4, 0)}}}});
  RoundTrip(Reply{ResolveReply{.gai = static_cast<uint16_t>(GaiCode::kNoName)}});
  RoundTrip(Reply{ResolveReply{.gai = static_cast<uint16_t>(GaiCode::kSystem), .sys_errno = 4095}});
  RoundTrip(Reply{ResolveReply{.err = EOPNOTSUPP}});
  RoundTrip(Reply{NameInfoReply{.host = std::string(kMaxHostNameLen, 'h'),
                                .service = std::string(kMaxServiceLen, 's')}});
  RoundTrip(Reply{NameInfoReply{.service = "22"}});
  RoundTrip(Reply{NameInfoReply{.gai = static_cast<uint16_t>(GaiCode::kOverflow)}});
  RoundTrip(Reply{HostEntReply{.herr = static_cast<uint16_t>(HostErr::kHostNotFound)}});
  RoundTrip(Reply{HostEntReply{.herr = static_cast<uint16_t>(HostErr::kInternal), .sys_errno = 2}});
  HostEntReply big{.family = AF_INET6, .name = std::string(200, 'n')};
  for (size_t i = 0; i < kMaxHostAliases; ++i) big.aliases.push_back(std::string(20, 'a'));
  for (size_t i = 0; i < kMaxHostAddrs; ++i) big.addrs.push_back(LinkLocalV6(0, 0, 0).addr);
  RoundTrip(Reply{big});
  RoundTrip(Request{
      HostEntRequest{.op = HostEntRequest::kByAddr, .family = AF_INET, .addr = {1, 2, 3, 4}}});
  RoundTrip(Request{
      HostEntRequest{.op = HostEntRequest::kByAddr, .family = AF_INET6, .addr = Bytes(16, 0xfe)}});
  RoundTrip(Request{HostEntRequest{.op = HostEntRequest::kByName, .family = AF_INET, .name = ""}});
  RoundTrip(Request{NameInfoRequest{.addr = LinkLocalV6(22, 0, 3), .want_service = true}});
}

TEST_CASE("the largest resolve reply fits the control channel's message size",
          "[protocol][resolve]") {
  const Bytes b = EncodeReply(1, LargestResolveReply());
  CHECK(b.size() == 16 + 16 + kMaxHostNameLen + kMaxResolveEntries * 36);
  CHECK(b.size() <= kMaxMessageSize);
}

TEST_CASE("a resolve request has the documented byte layout", "[protocol][resolve]") {
  const Bytes b = EncodeRequest(0x01020304, ResolveRequest{.flags = kAiCanonName,
                                                           .family = AF_INET,
                                                           .socktype = SOCK_STREAM,
                                                           .protocol = 6,
                                                           .host = "ab",
                                                           .service = "80"});
  const Bytes want = {0x58, 0x53, 0x4b, 0x31, 0x01, 0x00, 0x0e, 0x00,
                      0x28, 0x00, 0x00, 0x00, 0x04, 0x03, 0x02, 0x01,  // header
                      0x02, 0x00, 0x00, 0x00, 0x02, 0x00, 0x03, 0x00,  // flags, family, present
                      0x01, 0x00, 0x00, 0x00, 0x06, 0x00, 0x00, 0x00,  // socktype, protocol
                      0x02, 0x00, 0x02, 0x00, 'a',  'b',  '8',  '0'};
  CHECK(b == want);
}

TEST_CASE("every truncation of a resolve message is rejected", "[protocol][resolve]") {
  std::vector<Bytes> all = {EncodeReply(1, LargestResolveReply())};
  for (const Request& r : testing::SampleRequests()) {
    if (TypeOf(r) >= MsgType::kResolve) all.push_back(EncodeRequest(1, r));
  }
  for (const Reply& r : testing::SampleReplies()) {
    if (TypeOf(r) >= MsgType::kResolve) all.push_back(EncodeReply(1, r));
  }
  for (const Bytes& full : all) {
    const bool reply = (full[7] & 0x80) != 0;
    for (size_t n = 0; n < full.size(); ++n) {
      Bytes cut(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
      if (n >= 12) FixLength(cut);
      INFO("cut to " << n << " of " << full.size());
      CHECK((reply ? ReplyError(cut) : RequestError(cut)) != "(accepted)");
    }
  }
}

TEST_CASE("resolve requests reject what getaddrinfo could not have been given",
          "[protocol][resolve]") {
  const Bytes good = EncodeRequest(1, ResolveRequest{.host = "ab", .service = "cd"});
  auto with = [&](size_t off, int size, uint32_t v) {
    Bytes b = good;
    if (size == 2)
      Put16(b, off, static_cast<uint16_t>(v));
    else
      Put32(b, off, v);
    return RequestError(b);
  };
  CHECK_THAT(with(kBody, 4, 1u << 9), StartsWith("resolve.flags: 0x200 has unknown bits"));
  CHECK_THAT(with(kBody + 4, 2, AF_UNIX), StartsWith("resolve.family: 1 is not AF_UNSPEC"));
  CHECK_THAT(with(kBody + 6, 2, 4), StartsWith("resolve.present: 0x4"));
  CHECK_THAT(with(kBody + 8, 4, 16), StartsWith("resolve.socktype: 16"));
  CHECK_THAT(with(kBody + 8, 4, UINT32_MAX), StartsWith("resolve.socktype: -1"));
  CHECK_THAT(with(kBody + 12, 4, 65536), StartsWith("resolve.protocol: 65536"));
  CHECK_THAT(with(kBody + 6, 2, 2), StartsWith("resolve.host_len: 2 for no host"));
  CHECK_THAT(with(kBody + 6, 2, 1), StartsWith("resolve.service_len: 2 for no service"));
  CHECK_THAT(with(kBody + 16, 2, 3), StartsWith("resolve: host and service lengths say 5"));
  Bytes nul = good;
  nul[kBody + 21] = 0;
  CHECK_THAT(RequestError(nul), StartsWith("resolve.host: contains a NUL byte"));
  nul = good;
  nul[kBody + 22] = 0;
  CHECK_THAT(RequestError(nul), StartsWith("resolve.service: contains a NUL byte"));
  // One byte over each bound.
  Bytes longhost = EncodeRequest(1, ResolveRequest{.host = std::string(kMaxHostNameLen, 'x')});
  longhost.push_back('x');
  Put16(longhost, kBody + 16, kMaxHostNameLen + 1);
  FixLength(longhost);
  CHECK_THAT(RequestError(longhost), StartsWith("resolve.host: 1025 bytes exceed 1024"));
  Bytes longserv = EncodeRequest(1, ResolveRequest{.service = std::string(kMaxServiceLen, 'x')});
  longserv.push_back('x');
  Put16(longserv, kBody + 18, kMaxServiceLen + 1);
  FixLength(longserv);
  CHECK_THAT(RequestError(longserv), StartsWith("resolve.service: 256 bytes exceed 255"));
}

TEST_CASE("resolve replies are checked entry by entry", "[protocol][resolve]") {
  const ResolveReply one{.canonname = "c", .entries = {{.socktype = 1, .addr = V4(1, 2, 3, 4, 0)}}};
  const Bytes good = EncodeReply(1, one);
  auto with = [&](size_t off, int size, uint32_t v) {
    Bytes b = good;
    if (size == 2)
      Put16(b, off, static_cast<uint16_t>(v));
    else
      Put32(b, off, v);
    return ReplyError(b);
  };
  CHECK_THAT(with(kBody + 4, 2, 14), StartsWith("resolve.gai: 14 is not a result code"));
  CHECK_THAT(with(kBody + 6, 2, 2), StartsWith("resolve.flags: 0x2"));
  CHECK_THAT(with(kBody + 8, 4, 5), StartsWith("resolve.sys_errno: 5 without"));
  CHECK_THAT(with(kBody + 4, 2, 2), StartsWith("resolve: a failed lookup carries no name"));
  CHECK_THAT(with(kBody + 6, 2, 0), StartsWith("resolve.canon_len: 1 for no name"));
  CHECK_THAT(with(kBody + 14, 2, 0), StartsWith("resolve.count: 0 is not 1..64"));
  CHECK_THAT(with(kBody + 14, 2, 65), StartsWith("resolve.count: 65 is not 1..64"));
  CHECK_THAT(with(kBody + 14, 2, 2), StartsWith("resolve: canon_len and count say 73"));
  CHECK_THAT(with(kBody + 17, 4, 16), StartsWith("resolve.entry[0].socktype: 16"));
  CHECK_THAT(with(kBody + 25, 2, 1), StartsWith("resolve.entry[0].addr.family: 1"));
  CHECK_THAT(with(kBody + 37, 4, 1), StartsWith("resolve.entry[0].addr.addr: bytes 4..15"));
  Bytes nul = good;
  nul[kBody + 16] = 0;
  CHECK_THAT(ReplyError(nul), StartsWith("resolve.canonname: contains a NUL byte"));
  // An exchange error carries no lookup result at all.
  Bytes b = EncodeReply(1, ResolveReply{.err = EOPNOTSUPP});
  Put16(b, kBody + 4, 2);
  CHECK_THAT(ReplyError(b), StartsWith("resolve.gai: must be 0 when err is 95"));
}

TEST_CASE("nameinfo and hostent messages reject malformed fields", "[protocol][resolve]") {
  Bytes ni = EncodeRequest(1, NameInfoRequest{.addr = V4(1, 2, 3, 4, 5), .want_host = true});
  Put32(ni, kBody + 28, 1u << 6);
  CHECK_THAT(RequestError(ni), StartsWith("nameinfo.flags: 0x40 has unknown bits"));
  Put32(ni, kBody + 28, 0);
  Put32(ni, kBody + 32, 0);
  CHECK_THAT(RequestError(ni), StartsWith("nameinfo.want: 0 is not 1..3"));
  Put32(ni, kBody + 32, 4);
  CHECK_THAT(RequestError(ni), StartsWith("nameinfo.want: 4"));
  Put32(ni, kBody + 32, 1);
  Put16(ni, kBody, AF_UNIX);
  CHECK_THAT(RequestError(ni), StartsWith("nameinfo.addr.family: 1"));

  Bytes nir = EncodeReply(1, NameInfoReply{.host = "h", .service = "s"});
  Put16(nir, kBody + 4, 2);
  CHECK_THAT(ReplyError(nir), StartsWith("nameinfo: a failed lookup carries no names"));
  Put16(nir, kBody + 4, 0);
  Put16(nir, kBody + 6, 1);
  CHECK_THAT(ReplyError(nir), StartsWith("nameinfo.reserved: reserved field is 1"));
  Put16(nir, kBody + 6, 0);
  Put16(nir, kBody + 12, 2);
  CHECK_THAT(ReplyError(nir), StartsWith("nameinfo: host and service lengths say 3"));

  Bytes he = EncodeRequest(
      1, HostEntRequest{.op = HostEntRequest::kByAddr, .family = AF_INET, .addr = {1, 2, 3, 4}});
  Put16(he, kBody, 3);
  CHECK_THAT(RequestError(he), StartsWith("hostent.op: 3"));
  Put16(he, kBody, HostEntRequest::kByAddr);
  Put16(he, kBody + 2, AF_INET6);
  CHECK_THAT(RequestError(he), StartsWith("hostent.len: 4 is not the address length"));
  Put16(he, kBody + 2, 0);
  CHECK_THAT(RequestError(he), StartsWith("hostent.family: 0 is neither"));
  Put16(he, kBody + 2, AF_INET);
  Put16(he, kBody + 6, 9);
  CHECK_THAT(RequestError(he), StartsWith("hostent.reserved"));
  Bytes hn = EncodeRequest(1, HostEntRequest{.family = AF_INET, .name = "ab"});
  hn[kBody + 9] = 0;
  CHECK_THAT(RequestError(hn), StartsWith("hostent.name: contains a NUL byte"));

  const HostEntReply ok{.family = AF_INET, .name = "n", .aliases = {"al"}, .addrs = {{1, 2, 3, 4}}};
  const Bytes her = EncodeReply(1, ok);
  Bytes b = her;
  Put16(b, kBody + 16, 0);
  CHECK_THAT(ReplyError(b), StartsWith("hostent.addr_count: 0 is not 1..64"));
  b = her;
  Put16(b, kBody + 14, 33);
  CHECK_THAT(ReplyError(b), StartsWith("hostent.alias_count: 33 exceeds 32"));
  b = her;
  Put16(b, kBody + 21, 200);
  CHECK_THAT(ReplyError(b), StartsWith("hostent.alias[0]: length 200 exceeds the message"));
  b = her;
  Put16(b, kBody + 14, 2);
  CHECK_THAT(ReplyError(b), StartsWith("hostent.alias[1]"));
  b = her;
  Put16(b, kBody + 4, 4);
  CHECK_THAT(ReplyError(b), StartsWith("hostent: a failed lookup carries no family"));
  b = her;
  Put16(b, kBody + 6, AF_INET6);
  CHECK_THAT(ReplyError(b), StartsWith("hostent.addr_count: 1 addresses of 16 bytes"));
  b = her;
  Put32(b, kBody + 8, 2);
  CHECK_THAT(ReplyError(b), StartsWith("hostent.sys_errno: 2 without"));
  b = her;
  Put16(b, kBody + 4, 6);
  CHECK_THAT(ReplyError(b), StartsWith("hostent.herr: 6 is not an h_errno code"));
}

TEST_CASE("libc result codes map onto the wire and back", "[protocol][resolve]") {
  for (int eai :
       {0, EAI_BADFLAGS, EAI_NONAME, EAI_AGAIN, EAI_FAIL, EAI_FAMILY, EAI_SOCKTYPE, EAI_SERVICE,
        EAI_MEMORY, EAI_SYSTEM, EAI_OVERFLOW, EAI_NODATA, EAI_ADDRFAMILY, EAI_IDN_ENCODE}) {
    INFO("EAI " << eai);
    CHECK(GaiToWire(eai) <= kMaxGaiCode);
    CHECK(GaiFromWire(GaiToWire(eai)) == eai);
  }
  CHECK(GaiFromWire(GaiToWire(-12345)) == EAI_FAIL);
  CHECK(GaiFromWire(999) == EAI_FAIL);
  for (int h : {0, HOST_NOT_FOUND, TRY_AGAIN, NO_RECOVERY, NO_DATA, NETDB_INTERNAL}) {
    CHECK(HostErrFromWire(HostErrToWire(h)) == h);
  }
  CHECK(HostErrFromWire(HostErrToWire(77)) == NO_RECOVERY);
  const int ai = AI_PASSIVE | AI_CANONNAME | AI_NUMERICHOST | AI_V4MAPPED | AI_ALL | AI_ADDRCONFIG |
                 AI_NUMERICSERV | AI_IDN | AI_CANONIDN;
  REQUIRE(AiFlagsToWire(ai).has_value());
  CHECK(*AiFlagsToWire(ai) == kAiAllFlags);
  CHECK(AiFlagsFromWire(*AiFlagsToWire(ai)) == ai);
  CHECK(*AiFlagsToWire(AI_CANONNAME) == kAiCanonName);
  CHECK_FALSE(AiFlagsToWire(0x10000).has_value());
  const int ni = NI_NUMERICHOST | NI_NUMERICSERV | NI_NOFQDN | NI_NAMEREQD | NI_DGRAM | NI_IDN;
  REQUIRE(NiFlagsToWire(ni).has_value());
  CHECK(*NiFlagsToWire(ni) == kNiAllFlags);
  CHECK(NiFlagsFromWire(*NiFlagsToWire(ni)) == ni);
  CHECK_FALSE(NiFlagsToWire(0x4000).has_value());
}

}  // namespace
}  // namespace xsock::proto
