// The control protocol codec (shared/protocol.h): round trips, the exact wire layout, and
// the decoder's rejection of every kind of malformed input with an error naming the field.
#include "shared/protocol.h"

#include <netinet/in.h>
#include <netinet/tcp.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <climits>
#include <cstdint>
#include <string>
#include <vector>

#include "shared/socket_page.h"
#include "tests/protocol/samples.h"

namespace xsock::proto {
namespace {

using Catch::Matchers::Contains;
using Catch::Matchers::StartsWith;
using testing::LinkLocalV6;
using testing::SampleAcceptRecord;
using testing::SampleReplies;
using testing::SampleRequests;
using testing::V4;
using Bytes = std::vector<uint8_t>;

// Header offsets (docs/protocol.md).
constexpr size_t kTypeOffset = 6;
constexpr size_t kLengthOffset = 8;
constexpr size_t kBody = kHeaderSize;

void Put16(Bytes& b, size_t off, uint16_t v) {
  for (size_t i = 0; i < 2; ++i) b.at(off + i) = static_cast<uint8_t>(v >> (8 * i));
}
void Put32(Bytes& b, size_t off, uint32_t v) {
  for (size_t i = 0; i < 4; ++i) b.at(off + i) = static_cast<uint8_t>(v >> (8 * i));
}
void Put64(Bytes& b, size_t off, uint64_t v) {
  for (size_t i = 0; i < 8; ++i) b.at(off + i) = static_cast<uint8_t>(v >> (8 * i));
}
// Makes the header's length field agree with the buffer again after an edit of its size.
void FixLength(Bytes& b) { Put32(b, kLengthOffset, static_cast<uint32_t>(b.size())); }

std::string Text(const absl::Status& s) {
  const auto m = s.message();
  return std::string(m.data(), m.size());
}

// The decoder's complaint about `b`, or "(accepted)" so that a Contains() check fails.
std::string RequestError(const Bytes& b) {
  auto d = DecodeRequest(b);
  if (d.ok()) return "(accepted)";
  CHECK(d.status().code() == absl::StatusCode::kInvalidArgument);
  return Text(d.status());
}
std::string ReplyError(const Bytes& b) {
  auto d = DecodeReply(b);
  if (d.ok()) return "(accepted)";
  CHECK(d.status().code() == absl::StatusCode::kInvalidArgument);
  return Text(d.status());
}

Request SampleRequest(MsgType t) { return SampleRequests().at(static_cast<size_t>(t) - 1); }
Reply SampleReply(MsgType t) { return SampleReplies().at(static_cast<size_t>(t) - 1); }
Bytes EncodedRequest(MsgType t) { return EncodeRequest(1, SampleRequest(t)); }
Bytes EncodedReply(MsgType t) { return EncodeReply(1, SampleReply(t)); }

std::vector<MsgType> AllTypes() {
  std::vector<MsgType> all;
  for (uint16_t t = 1; t <= static_cast<uint16_t>(MsgType::kHostEnt); ++t) {
    all.push_back(static_cast<MsgType>(t));
  }
  return all;
}

uint32_t LengthField(const Bytes& b) {
  return uint32_t{b.at(8)} | uint32_t{b.at(9)} << 8 | uint32_t{b.at(10)} << 16 |
         uint32_t{b.at(11)} << 24;
}

// Encodes, decodes and re-encodes `r`, checking that nothing changes on the way.
void CheckRequestRoundTrip(const Request& r, uint32_t seq) {
  INFO(Name(TypeOf(r)) << " request, seq " << seq);
  const Bytes bytes = EncodeRequest(seq, r);
  CHECK(LengthField(bytes) == bytes.size());
  CHECK(bytes.size() <= kMaxMessageSize);
  auto d = DecodeRequest(bytes);
  INFO((d.ok() ? std::string("ok") : Text(d.status())));
  REQUIRE(d.ok());
  CHECK(d->seq == seq);
  CHECK(d->msg.index() == r.index());
  CHECK(d->msg == r);
  CHECK(EncodeRequest(seq, d->msg) == bytes);
}

void CheckReplyRoundTrip(const Reply& r, uint32_t seq) {
  INFO(Name(TypeOf(r)) << " reply, seq " << seq);
  const Bytes bytes = EncodeReply(seq, r);
  CHECK(LengthField(bytes) == bytes.size());
  CHECK(bytes.size() <= kMaxMessageSize);
  auto d = DecodeReply(bytes);
  INFO((d.ok() ? std::string("ok") : Text(d.status())));
  REQUIRE(d.ok());
  CHECK(d->seq == seq);
  CHECK(d->msg.index() == r.index());
  CHECK(d->msg == r);
  CHECK(EncodeReply(seq, d->msg) == bytes);
}

Bytes Iota(size_t n) {
  Bytes v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(i);
  return v;
}

// ---- Round trips ----

TEST_CASE("every request type survives encode and decode with its sequence number", "[protocol]") {
  for (const Request& r : SampleRequests()) {
    for (uint32_t seq : {0u, 1u, 0x80000000u, UINT32_MAX}) CheckRequestRoundTrip(r, seq);
  }
}

TEST_CASE("every reply type survives encode and decode with its sequence number", "[protocol]") {
  for (const Reply& r : SampleReplies()) {
    for (uint32_t seq : {0u, 1u, 0x80000000u, UINT32_MAX}) CheckReplyRoundTrip(r, seq);
  }
}

TEST_CASE("requests with edge values survive a round trip", "[protocol]") {
  const std::vector<Request> edges = {
      HelloRequest{.min_version = 1, .max_version = UINT16_MAX, .caps = UINT32_MAX},
      SocketRequest{.domain = AF_INET, .type = SOCK_STREAM, .protocol = 0, .ring_order = 0},
      SocketRequest{.domain = AF_INET, .type = SOCK_STREAM, .ring_order = kMinRingOrder},
      SocketRequest{.domain = AF_INET6, .type = SOCK_STREAM, .ring_order = kMaxRingOrder},
      ConnectRequest{.socket_id = 1, .addr = V4(127, 0, 0, 1, 0)},
      ConnectRequest{.socket_id = UINT64_MAX, .addr = V4(255, 255, 255, 255, UINT16_MAX)},
      ConnectRequest{.socket_id = 2, .addr = LinkLocalV6(443, 0xFFFFF, UINT32_MAX)},
      ConnectRequest{.socket_id = 3, .addr = LinkLocalV6(1, UINT32_MAX, 1)},
      ShutdownRequest{.socket_id = 4, .how = SHUT_RD},
      ShutdownRequest{.socket_id = 4, .how = SHUT_RDWR},
      SetSockOptRequest{.socket_id = 5, .level = SOL_SOCKET, .optname = SO_LINGER},
      SetSockOptRequest{.socket_id = 5, .level = -1, .optname = INT32_MIN, .value = Iota(256)},
      GetSockOptRequest{.socket_id = 6, .level = INT32_MAX, .optname = -7, .optlen = 0},
      GetSockOptRequest{.socket_id = 6, .level = IPPROTO_TCP, .optname = 1, .optlen = 256},
      BindRequest{.socket_id = UINT64_MAX, .addr = V4(127, 0, 0, 1, 0)},
      BindRequest{.socket_id = 7, .addr = LinkLocalV6(UINT16_MAX, 0xFFFFF, UINT32_MAX)},
      ListenRequest{.socket_id = 8, .backlog = 0},
      ListenRequest{.socket_id = 8, .backlog = -1},  // listen() takes any int
      ListenRequest{.socket_id = UINT64_MAX, .backlog = INT32_MIN},
      ListenRequest{.socket_id = 9, .backlog = INT32_MAX},
  };
  for (const Request& r : edges) CheckRequestRoundTrip(r, 77);
  CHECK(EncodeRequest(0, edges[11]).size() == kHeaderSize + 20 + kMaxOptLen);
}

TEST_CASE("replies with edge values and error codes survive a round trip", "[protocol]") {
  std::vector<Reply> edges = {
      HelloReply{.err = EPROTONOSUPPORT, .version = 0, .caps = 0, .server_pid = 0},
      HelloReply{.err = 0, .version = kVersion, .caps = UINT32_MAX, .server_pid = UINT32_MAX},
      SocketReply{.err = EMFILE},  // ids and orders are not checked in a failed reply
      SocketReply{.err = 0, .ring_order = kMaxRingOrder, .socket_id = UINT64_MAX},
      ConnectReply{.err = ECONNREFUSED},
      ConnectReply{.err = 0},
      GetSockNameReply{.err = ENOTCONN},  // all-zero address with an error
      GetPeerNameReply{.err = 0, .addr = LinkLocalV6(65535, 0xFFFFF, UINT32_MAX)},
      GetSockOptReply{.err = 0},
      GetSockOptReply{.err = 0, .value = Iota(256)},
      GetSockOptReply{.err = ENOPROTOOPT},
      AttachReply{.err = EBADF},
      StatsReply{.err = 0, .clients_now = UINT64_MAX, .bytes_from_host = UINT64_MAX},
  };
  for (uint32_t s = 0; s <= static_cast<uint32_t>(SocketState::kClosed); ++s) {
    edges.push_back(AttachReply{.err = 0, .ring_order = 12, .socket_id = 1, .state = s});
  }
  // A listening socket has no rings: ring order 0.
  edges.push_back(AttachReply{.err = 0,
                              .ring_order = 0,
                              .socket_id = 2,
                              .state = static_cast<uint32_t>(SocketState::kListening)});
  edges.push_back(BindReply{.err = EADDRINUSE});  // all-zero address with an error
  edges.push_back(BindReply{.err = 0, .addr = V4(0, 0, 0, 0, 1)});
  edges.push_back(ListenReply{.err = EINVAL});
  // The largest errno value the decoder accepts, on every reply type.
  for (Reply r : SampleReplies()) {
    std::visit([](auto& m) { m.err = 4095; }, r);
    if (auto* b = std::get_if<BindReply>(&r)) b->addr = {};  // a failed bind names no address
    // A failed name lookup carries no names and no addresses.
    if (auto* x = std::get_if<ResolveReply>(&r)) *x = ResolveReply{.err = 4095};
    if (auto* x = std::get_if<NameInfoReply>(&r)) *x = NameInfoReply{.err = 4095};
    if (auto* x = std::get_if<HostEntReply>(&r)) *x = HostEntReply{.err = 4095};
    edges.push_back(r);
  }
  for (const Reply& r : edges) CheckReplyRoundTrip(r, 78);
}

TEST_CASE("messages have the documented size", "[protocol]") {
  const std::vector<size_t> request_sizes = {24, 32, 52, 24, 28, 24, 24, 40,
                                             36, 20, 20, 52, 28, 64, 52, 36};
  const std::vector<size_t> reply_sizes = {32, 32, 20, 20, 20, 48,  48, 20,
                                           28, 40, 88, 48, 20, 127, 52, 85};
  const auto requests = SampleRequests();
  const auto replies = SampleReplies();
  REQUIRE(requests.size() == request_sizes.size());
  REQUIRE(replies.size() == reply_sizes.size());
  for (size_t i = 0; i < requests.size(); ++i) {
    INFO(Name(TypeOf(requests[i])));
    CHECK(EncodeRequest(0, requests[i]).size() == request_sizes[i]);
    CHECK(EncodeReply(0, replies[i]).size() == reply_sizes[i]);
  }
}

// ---- Exact layout ----

TEST_CASE("a connect request has the documented little-endian byte layout", "[protocol]") {
  const Bytes expected = {
      'X',  'S',  'K',  '1',                           // magic
      0x01, 0x00,                                      // version 1
      0x03, 0x00,                                      // type: connect
      0x34, 0x00, 0x00, 0x00,                          // length 52
      0x0D, 0x0C, 0x0B, 0x0A,                          // seq 0x0A0B0C0D
      0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11,  // socket_id
      0x0A, 0x00,                                      // family AF_INET6 (10)
      0x90, 0x1F,                                      // port 8080, not network order
      0x45, 0x23, 0x01, 0x00,                          // flowinfo 0x12345
      0xFE, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // fe80::
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,  //       1
      0x02, 0x00, 0x00, 0x00,                          // scope_id 2
  };
  const ConnectRequest m{.socket_id = 0x1122334455667788, .addr = LinkLocalV6(8080, 0x12345, 2)};
  CHECK(EncodeRequest(0x0A0B0C0D, m) == expected);
  auto d = DecodeRequest(expected);
  REQUIRE(d.ok());
  CHECK(d->seq == 0x0A0B0C0D);
  CHECK(std::get<ConnectRequest>(d->msg) == m);
}

TEST_CASE("a setsockopt request has the documented byte layout", "[protocol]") {
  const Bytes expected = {
      'X',  'S',  'K',  '1',  0x01, 0x00,              // magic, version
      0x08, 0x00,                                      // type: setsockopt
      0x26, 0x00, 0x00, 0x00,                          // length 38
      0x01, 0x00, 0x00, 0x00,                          // seq 1
      0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // socket_id 5
      0xFF, 0xFF, 0xFF, 0xFF,                          // level -1 (two's complement)
      0x01, 0x00, 0x00, 0x00,                          // optname 1
      0x02, 0x00, 0x00, 0x00,                          // optlen 2
      0xAA, 0xBB,                                      // value
  };
  const SetSockOptRequest m{.socket_id = 5, .level = -1, .optname = 1, .value = {0xAA, 0xBB}};
  CHECK(EncodeRequest(1, m) == expected);
  auto d = DecodeRequest(expected);
  REQUIRE(d.ok());
  CHECK(std::get<SetSockOptRequest>(d->msg) == m);
}

TEST_CASE("a socket reply has the documented byte layout with the reply bit set", "[protocol]") {
  const Bytes expected = {
      'X',  'S',  'K',  '1',  0x01, 0x00,              // magic, version
      0x02, 0x80,                                      // type: socket | 0x8000
      0x20, 0x00, 0x00, 0x00,                          // length 32
      0xFF, 0xFF, 0xFF, 0xFF,                          // seq
      0x00, 0x00, 0x00, 0x00,                          // err 0
      0x12, 0x00, 0x00, 0x00,                          // ring_order 18
      0x08, 0x07, 0x06, 0x05, 0x04, 0x03, 0x02, 0x01,  // socket_id
  };
  const SocketReply m{.err = 0, .ring_order = 18, .socket_id = 0x0102030405060708};
  CHECK(EncodeReply(UINT32_MAX, m) == expected);
  auto d = DecodeReply(expected);
  REQUIRE(d.ok());
  CHECK(std::get<SocketReply>(d->msg) == m);
}

TEST_CASE("a failed getsockopt reply carries a positive errno and no value", "[protocol]") {
  const Bytes expected = {
      'X',  'S',  'K',  '1',  0x01, 0x00,  // magic, version
      0x09, 0x80,                          // type: getsockopt | 0x8000
      0x18, 0x00, 0x00, 0x00,              // length 24
      0x02, 0x00, 0x00, 0x00,              // seq 2
      0x5C, 0x00, 0x00, 0x00,              // err ENOPROTOOPT (92)
      0x00, 0x00, 0x00, 0x00,              // optlen 0
  };
  CHECK(EncodeReply(2, GetSockOptReply{.err = ENOPROTOOPT}) == expected);
  auto d = DecodeReply(expected);
  REQUIRE(d.ok());
  CHECK(std::get<GetSockOptReply>(d->msg).err == ENOPROTOOPT);
}

TEST_CASE("bind and listen requests have the documented byte layout", "[protocol]") {
  const Bytes bind = {
      'X',  'S',  'K',  '1',  0x01, 0x00,              // magic, version
      0x0C, 0x00,                                      // type: bind (12)
      0x34, 0x00, 0x00, 0x00,                          // length 52
      0x05, 0x00, 0x00, 0x00,                          // seq 5
      0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // socket_id 3
      0x02, 0x00,                                      // family AF_INET
      0x50, 0x00,                                      // port 80
      0x00, 0x00, 0x00, 0x00,                          // flowinfo
      0x7F, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,  // 127.0.0.1, then zeros
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  //
      0x00, 0x00, 0x00, 0x00,                          // scope_id
  };
  const BindRequest b{.socket_id = 3, .addr = V4(127, 0, 0, 1, 80)};
  CHECK(EncodeRequest(5, b) == bind);
  auto db = DecodeRequest(bind);
  REQUIRE(db.ok());
  CHECK(std::get<BindRequest>(db->msg) == b);

  const Bytes listen = {
      'X',  'S',  'K',  '1',  0x01, 0x00,              // magic, version
      0x0D, 0x00,                                      // type: listen (13)
      0x1C, 0x00, 0x00, 0x00,                          // length 28
      0x06, 0x00, 0x00, 0x00,                          // seq 6
      0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // socket_id 4
      0xFE, 0xFF, 0xFF, 0xFF,                          // backlog -2
  };
  const ListenRequest l{.socket_id = 4, .backlog = -2};
  CHECK(EncodeRequest(6, l) == listen);
  auto dl = DecodeRequest(listen);
  REQUIRE(dl.ok());
  CHECK(std::get<ListenRequest>(dl->msg) == l);
}

TEST_CASE("bind and listen replies have the documented byte layout", "[protocol]") {
  const Bytes bind = {
      'X',  'S',  'K',  '1',  0x01, 0x00,              // magic, version
      0x0C, 0x80,                                      // type: bind | 0x8000
      0x30, 0x00, 0x00, 0x00,                          // length 48
      0x07, 0x00, 0x00, 0x00,                          // seq 7
      0x00, 0x00, 0x00, 0x00,                          // err 0
      0x0A, 0x00,                                      // family AF_INET6
      0x41, 0x9C,                                      // port 40001
      0x00, 0x00, 0x00, 0x00,                          // flowinfo
      0xFE, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // fe80::
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,  //       1
      0x04, 0x00, 0x00, 0x00,                          // scope_id 4
  };
  const BindReply b{.err = 0, .addr = LinkLocalV6(40001, 0, 4)};
  CHECK(EncodeReply(7, b) == bind);
  auto db = DecodeReply(bind);
  REQUIRE(db.ok());
  CHECK(std::get<BindReply>(db->msg) == b);

  const Bytes listen = {
      'X',  'S',  'K',  '1',  0x01, 0x00,  // magic, version
      0x0D, 0x80,                          // type: listen | 0x8000
      0x14, 0x00, 0x00, 0x00,              // length 20
      0x08, 0x00, 0x00, 0x00,              // seq 8
      0x16, 0x00, 0x00, 0x00,              // err EINVAL (22)
  };
  CHECK(EncodeReply(8, ListenReply{.err = EINVAL}) == listen);
  auto dl = DecodeReply(listen);
  REQUIRE(dl.ok());
  CHECK(std::get<ListenReply>(dl->msg).err == EINVAL);
}

// ---- Header ----

TEST_CASE("every truncation of every message is rejected as a header error", "[protocol]") {
  std::vector<Bytes> messages;
  for (MsgType t : AllTypes()) {
    messages.push_back(EncodedRequest(t));
    messages.push_back(EncodedReply(t));
  }
  messages.push_back(EncodeRequest(3, SetSockOptRequest{.socket_id = 1, .value = Iota(256)}));
  messages.push_back(EncodeReply(3, GetSockOptReply{.value = Iota(256)}));
  for (const Bytes& full : messages) {
    for (size_t n = 0; n < full.size(); ++n) {
      INFO("type 0x" << std::hex << (full[6] | full[7] << 8) << std::dec << ", first " << n
                     << " of " << full.size() << " bytes");
      const Bytes prefix(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
      const char* expected = n < kHeaderSize ? "header: message of" : "header.length: says";
      const bool is_reply = (full[7] & 0x80) != 0;
      CHECK_THAT(is_reply ? ReplyError(prefix) : RequestError(prefix), StartsWith(expected));
    }
  }
}

TEST_CASE("every truncation with a matching length field is rejected naming the message",
          "[protocol]") {
  for (MsgType t : AllTypes()) {
    const std::string name = Name(t);
    for (bool reply : {false, true}) {
      const Bytes full = reply ? EncodedReply(t) : EncodedRequest(t);
      for (size_t n = kHeaderSize; n < full.size(); ++n) {
        INFO(name << (reply ? " reply" : " request") << " cut to " << n << " bytes");
        Bytes cut(full.begin(), full.begin() + static_cast<ptrdiff_t>(n));
        FixLength(cut);
        CHECK_THAT(reply ? ReplyError(cut) : RequestError(cut), StartsWith(name));
      }
      INFO(name << (reply ? " reply" : " request") << " with a trailing byte");
      Bytes longer = full;
      longer.push_back(0);
      FixLength(longer);
      CHECK_THAT(reply ? ReplyError(longer) : RequestError(longer), StartsWith(name));
    }
  }
}

TEST_CASE("a wrong magic is rejected", "[protocol]") {
  for (size_t i = 0; i < 4; ++i) {
    Bytes req = EncodedRequest(MsgType::kRelease);
    Bytes rep = EncodedReply(MsgType::kRelease);
    req[i] ^= 0x20;
    rep[i] ^= 0x20;
    CHECK_THAT(RequestError(req), StartsWith("header.magic"));
    CHECK_THAT(ReplyError(rep), StartsWith("header.magic"));
  }
  Bytes swapped = EncodedRequest(MsgType::kRelease);
  std::swap(swapped[0], swapped[3]);
  std::swap(swapped[1], swapped[2]);
  CHECK_THAT(RequestError(swapped), StartsWith("header.magic: 0x58534b31"));
}

TEST_CASE("a version other than 1 is rejected, including 1 in big-endian", "[protocol]") {
  for (uint16_t v : {0, 2, 0x0100, 0xFFFF}) {
    Bytes req = EncodedRequest(MsgType::kHello);
    Bytes rep = EncodedReply(MsgType::kHello);
    Put16(req, 4, v);
    Put16(rep, 4, v);
    CHECK_THAT(RequestError(req), StartsWith("header.version: " + std::to_string(v)));
    CHECK_THAT(ReplyError(rep), StartsWith("header.version: " + std::to_string(v)));
  }
}

TEST_CASE("a length field that disagrees with the packet size is rejected", "[protocol]") {
  for (MsgType t : AllTypes()) {
    for (bool reply : {false, true}) {
      const Bytes good = reply ? EncodedReply(t) : EncodedRequest(t);
      const uint32_t size = static_cast<uint32_t>(good.size());
      for (uint32_t len : {0u, size - 1, size + 1, 0x00010000u + size, UINT32_MAX}) {
        INFO(Name(t) << (reply ? " reply" : " request") << " length field " << len);
        Bytes b = good;
        Put32(b, kLengthOffset, len);
        CHECK_THAT(reply ? ReplyError(b) : RequestError(b), StartsWith("header.length"));
      }
    }
  }
}

TEST_CASE("a packet longer than the largest message is rejected before parsing", "[protocol]") {
  Bytes b = EncodedRequest(MsgType::kSetSockOpt);
  b.resize(kMaxMessageSize + 1);
  FixLength(b);
  CHECK_THAT(RequestError(b), StartsWith("header: message of 4097 bytes exceeds 4096"));
  CHECK_THAT(ReplyError(b), StartsWith("header: message of 4097 bytes exceeds 4096"));
}

TEST_CASE("an unknown message type is rejected", "[protocol]") {
  for (uint16_t t : {0, 17, 0x100, 0x7FFF}) {
    Bytes req = EncodedRequest(MsgType::kStats);
    Bytes rep = EncodedReply(MsgType::kStats);
    Put16(req, kTypeOffset, t);
    Put16(rep, kTypeOffset, static_cast<uint16_t>(t | kReplyBit));
    CHECK_THAT(RequestError(req), StartsWith("header.type: " + std::to_string(t) + " is unknown"));
    CHECK_THAT(ReplyError(rep), StartsWith("header.type: " + std::to_string(t) + " is unknown"));
  }
}

TEST_CASE("a reply is not accepted as a request and a request not as a reply", "[protocol]") {
  for (MsgType t : AllTypes()) {
    INFO(Name(t));
    CHECK_THAT(RequestError(EncodedReply(t)),
               StartsWith("header.type") && Contains("is not a request"));
    CHECK_THAT(ReplyError(EncodedRequest(t)),
               StartsWith("header.type") && Contains("is not a reply"));
  }
}

// ---- Request fields ----

TEST_CASE("reserved request fields must be zero", "[protocol]") {
  for (MsgType t : {MsgType::kAttach, MsgType::kStats}) {
    for (size_t i = 0; i < 4; ++i) {
      Bytes b = EncodedRequest(t);
      b[kBody + i] = 1;
      CHECK_THAT(RequestError(b), StartsWith(std::string(Name(t)) + ".flags: reserved field"));
    }
  }
}

TEST_CASE("hello rejects an empty version range", "[protocol]") {
  Bytes b = EncodedRequest(MsgType::kHello);
  Put16(b, kBody, 0);
  CHECK_THAT(RequestError(b), StartsWith("hello.versions"));
  Put16(b, kBody, 3);
  Put16(b, kBody + 2, 2);
  CHECK_THAT(RequestError(b), StartsWith("hello.versions: range 3..2 is empty"));
}

TEST_CASE("socket rejects a domain, type, protocol or ring order it cannot serve", "[protocol]") {
  auto with = [](size_t off, uint32_t v) {
    Bytes b = EncodedRequest(MsgType::kSocket);
    Put32(b, kBody + off, v);
    return RequestError(b);
  };
  for (uint32_t d : {0u, uint32_t{AF_UNIX}, uint32_t{AF_PACKET}, UINT32_MAX}) {
    CHECK_THAT(with(0, d), StartsWith("socket.domain: " + std::to_string(d)));
  }
  for (uint32_t t : {uint32_t{SOCK_DGRAM}, uint32_t{SOCK_RAW}, uint32_t{SOCK_SEQPACKET},
                     uint32_t{SOCK_STREAM | SOCK_NONBLOCK}, uint32_t{SOCK_STREAM | SOCK_CLOEXEC}}) {
    CHECK_THAT(with(4, t), StartsWith("socket.type: " + std::to_string(t)));
  }
  for (uint32_t p : {uint32_t{IPPROTO_UDP}, uint32_t{IPPROTO_SCTP}, 7u, UINT32_MAX}) {
    CHECK_THAT(with(8, p), StartsWith("socket.protocol: " + std::to_string(p)));
  }
  for (uint32_t o : {1u, kMinRingOrder - 1, kMaxRingOrder + 1, 32u, UINT32_MAX}) {
    CHECK_THAT(with(12, o), StartsWith("socket.ring_order: " + std::to_string(o)));
  }
}

TEST_CASE("requests naming socket 0 are rejected", "[protocol]") {
  for (MsgType t : {MsgType::kConnect, MsgType::kRelease, MsgType::kShutdown, MsgType::kGetSockName,
                    MsgType::kGetPeerName, MsgType::kSetSockOpt, MsgType::kGetSockOpt,
                    MsgType::kBind, MsgType::kListen}) {
    Bytes b = EncodedRequest(t);
    Put64(b, kBody, 0);
    CHECK_THAT(RequestError(b), StartsWith(std::string(Name(t)) + ".socket_id: 0"));
  }
}

TEST_CASE("connect and bind reject an address family other than AF_INET and AF_INET6",
          "[protocol]") {
  for (MsgType t : {MsgType::kConnect, MsgType::kBind}) {
    for (uint16_t f : {0, AF_UNIX, AF_INET6 + 1, AF_PACKET, 0xFFFF}) {
      Bytes b = EncodedRequest(t);
      Put16(b, kBody + 8, f);
      CHECK_THAT(RequestError(b),
                 StartsWith(std::string(Name(t)) + ".addr.family: " + std::to_string(f)));
    }
  }
}

TEST_CASE("an AF_INET address must leave every IPv6-only byte zero", "[protocol]") {
  for (const Request& r : {Request{ConnectRequest{.socket_id = 1, .addr = V4(10, 0, 0, 1, 80)}},
                           Request{BindRequest{.socket_id = 1, .addr = V4(0, 0, 0, 0, 80)}}}) {
    const std::string name = Name(TypeOf(r));
    const Bytes good = EncodeRequest(1, r);
    REQUIRE(DecodeRequest(good).ok());
    constexpr size_t kAddr = kBody + 8;  // SockAddr inside connect and bind
    for (size_t i = 4; i < 16; ++i) {
      Bytes b = good;
      b[kAddr + 8 + i] = 0x01;
      CHECK_THAT(RequestError(b), StartsWith(name + ".addr.addr: bytes 4..15"));
    }
    for (size_t i = 0; i < 4; ++i) {
      Bytes flow = good;
      flow[kAddr + 4 + i] = 0x01;
      CHECK_THAT(RequestError(flow), StartsWith(name + ".addr.flowinfo"));
      Bytes scope = good;
      scope[kAddr + 24 + i] = 0x01;
      CHECK_THAT(RequestError(scope), StartsWith(name + ".addr.scope_id"));
    }
  }
}

TEST_CASE("shutdown rejects a how beyond SHUT_RDWR", "[protocol]") {
  for (uint32_t how : {3u, 4u, 0x80000000u, UINT32_MAX}) {
    Bytes b = EncodedRequest(MsgType::kShutdown);
    Put32(b, kBody + 8, how);
    CHECK_THAT(RequestError(b), StartsWith("shutdown.how: " + std::to_string(how)));
  }
}

TEST_CASE("setsockopt rejects an option longer than 256 bytes", "[protocol]") {
  Bytes b = EncodeRequest(1, SetSockOptRequest{.socket_id = 1, .value = Iota(256)});
  b.push_back(0xEE);
  Put32(b, kBody + 16, 257);
  FixLength(b);
  CHECK_THAT(RequestError(b), StartsWith("setsockopt.optlen: option length 257 exceeds 256"));
  Put32(b, kBody + 16, UINT32_MAX);
  CHECK_THAT(RequestError(b), StartsWith("setsockopt.optlen: option length 4294967295"));
}

TEST_CASE("setsockopt rejects an optlen that disagrees with the bytes that follow", "[protocol]") {
  for (uint32_t len : {0u, 3u, 5u, 256u}) {
    Bytes b = EncodedRequest(MsgType::kSetSockOpt);  // carries 4 bytes
    Put32(b, kBody + 16, len);
    CHECK_THAT(RequestError(b),
               StartsWith("setsockopt.optlen: says " + std::to_string(len) + " but 4 bytes"));
  }
}

TEST_CASE("getsockopt rejects room for more than 256 bytes", "[protocol]") {
  for (uint32_t len : {257u, 4096u, UINT32_MAX}) {
    Bytes b = EncodedRequest(MsgType::kGetSockOpt);
    Put32(b, kBody + 16, len);
    CHECK_THAT(RequestError(b), StartsWith("getsockopt.optlen: option length " +
                                           std::to_string(len) + " exceeds 256"));
  }
}

// ---- Reply fields ----

TEST_CASE("every reply rejects an errno outside 0..4095", "[protocol]") {
  for (MsgType t : AllTypes()) {
    for (int32_t err : {-1, -EINVAL, 4096, INT32_MIN, INT32_MAX}) {
      Bytes b = EncodedReply(t);
      Put32(b, kBody, static_cast<uint32_t>(err));
      CHECK_THAT(ReplyError(b), StartsWith(std::string(Name(t)) + ".err: " + std::to_string(err) +
                                           " is not an errno value"));
    }
  }
}

TEST_CASE("reserved reply fields must be zero", "[protocol]") {
  struct Field {
    MsgType type;
    size_t offset;
    size_t size;
    const char* name;
  };
  for (const Field& f : {Field{MsgType::kHello, kBody + 6, 2, "hello.reserved"},
                         Field{MsgType::kAttach, kBody + 20, 4, "attach.reserved"},
                         Field{MsgType::kStats, kBody + 4, 4, "stats.reserved"}}) {
    for (size_t i = 0; i < f.size; ++i) {
      for (int32_t err : {0, EBADF}) {  // reserved means zero even in a failed reply
        Bytes b = EncodedReply(f.type);
        Put32(b, kBody, static_cast<uint32_t>(err));
        b[f.offset + i] = 0x80;
        CHECK_THAT(ReplyError(b), StartsWith(std::string(f.name) + ": reserved field"));
      }
    }
  }
}

TEST_CASE("a successful hello reply must name version 1", "[protocol]") {
  Bytes b = EncodedReply(MsgType::kHello);
  Put16(b, kBody + 4, 2);
  CHECK_THAT(ReplyError(b), StartsWith("hello.version: 2"));
  Put32(b, kBody, EPROTONOSUPPORT);  // a refusal may name the version the server speaks
  CHECK(DecodeReply(b).ok());
}

TEST_CASE("a successful socket or attach reply needs a valid ring order and socket id",
          "[protocol]") {
  for (MsgType t : {MsgType::kSocket, MsgType::kAttach}) {
    const std::string name = Name(t);
    for (uint32_t o : {0u, kMinRingOrder - 1, kMaxRingOrder + 1, UINT32_MAX}) {
      Bytes b = EncodedReply(t);
      Put32(b, kBody + 4, o);
      CHECK_THAT(ReplyError(b), StartsWith(name + ".ring_order: " + std::to_string(o)));
      Put32(b, kBody, EMFILE);  // not checked when the call failed
      CHECK(DecodeReply(b).ok());
    }
    Bytes b = EncodedReply(t);
    Put64(b, kBody + 8, 0);
    CHECK_THAT(ReplyError(b), StartsWith(name + ".socket_id: 0"));
    Put32(b, kBody, EMFILE);
    CHECK(DecodeReply(b).ok());
  }
}

TEST_CASE("a successful attach reply needs a known socket state", "[protocol]") {
  for (uint32_t s : {6u, 0x100u, UINT32_MAX}) {
    Bytes b = EncodedReply(MsgType::kAttach);
    Put32(b, kBody + 16, s);
    CHECK_THAT(ReplyError(b), StartsWith("attach.state: " + std::to_string(s)));
  }
}

TEST_CASE("an attach reply for a listening socket has ring order 0", "[protocol]") {
  const auto listening = static_cast<uint32_t>(SocketState::kListening);
  Bytes b = EncodedReply(MsgType::kAttach);  // ring order kMinRingOrder
  Put32(b, kBody + 16, listening);
  CHECK_THAT(ReplyError(b), StartsWith("attach.ring_order: 12 must be 0 for a listening"));
  Put32(b, kBody + 4, 0);
  auto d = DecodeReply(b);
  REQUIRE(d.ok());
  CHECK(std::get<AttachReply>(d->msg).state == listening);
  Put64(b, kBody + 8, 0);  // still needs a socket id
  CHECK_THAT(ReplyError(b), StartsWith("attach.socket_id: 0"));
  // Any other state with ring order 0 is a stream socket without rings: refused.
  Put64(b, kBody + 8, 1);
  Put32(b, kBody + 16, static_cast<uint32_t>(SocketState::kConnected));
  CHECK_THAT(ReplyError(b), StartsWith("attach.ring_order: 0 is outside"));
}

TEST_CASE("address replies reject a bad family or AF_INET tail bytes on success", "[protocol]") {
  for (MsgType t : {MsgType::kGetSockName, MsgType::kGetPeerName, MsgType::kBind}) {
    const std::string name = Name(t);
    const Reply ok4 =
        t == MsgType::kGetSockName   ? Reply{GetSockNameReply{.addr = V4(1, 2, 3, 4, 5)}}
        : t == MsgType::kGetPeerName ? Reply{GetPeerNameReply{.addr = V4(1, 2, 3, 4, 5)}}
                                     : Reply{BindReply{.addr = V4(1, 2, 3, 4, 5)}};
    const Bytes good = EncodeReply(1, ok4);
    REQUIRE(DecodeReply(good).ok());
    for (uint16_t f : {0, AF_UNIX, 0xFFFF}) {
      Bytes b = good;
      Put16(b, kBody + 4, f);
      CHECK_THAT(ReplyError(b), StartsWith(name + ".addr.family: " + std::to_string(f)));
    }
    Bytes tail = good;
    tail[kBody + 4 + 8 + 15] = 1;
    CHECK_THAT(ReplyError(tail), StartsWith(name + ".addr.addr: bytes 4..15"));
    Bytes scope = good;
    scope[kBody + 4 + 24] = 1;
    CHECK_THAT(ReplyError(scope), StartsWith(name + ".addr.scope_id"));
  }
}

TEST_CASE("a failed bind reply must carry an all-zero address", "[protocol]") {
  for (size_t i = 0; i < 28; ++i) {
    Bytes b = EncodeReply(1, BindReply{.err = EADDRINUSE});
    REQUIRE(DecodeReply(b).ok());
    b[kBody + 4 + i] = 0x01;
    CHECK_THAT(ReplyError(b), StartsWith("bind.addr: must be all zero when err is 98"));
  }
}

TEST_CASE("getsockopt reply rejects a value longer than 256 bytes or a wrong optlen",
          "[protocol]") {
  Bytes big = EncodeReply(1, GetSockOptReply{.value = Iota(256)});
  big.push_back(0);
  Put32(big, kBody + 4, 257);
  FixLength(big);
  CHECK_THAT(ReplyError(big), StartsWith("getsockopt.optlen: option length 257 exceeds 256"));
  for (uint32_t len : {0u, 3u, 5u}) {
    Bytes b = EncodedReply(MsgType::kGetSockOpt);  // carries 4 bytes
    Put32(b, kBody + 4, len);
    CHECK_THAT(ReplyError(b),
               StartsWith("getsockopt.optlen: says " + std::to_string(len) + " but 4 bytes"));
  }
}

// ---- Names and descriptors ----

TEST_CASE("each message type has a name, and variants map to their type", "[protocol]") {
  const std::vector<std::string> names = {"hello",      "socket",      "connect",     "release",
                                          "shutdown",   "getsockname", "getpeername", "setsockopt",
                                          "getsockopt", "attach",      "stats",       "bind",
                                          "listen",     "resolve",     "nameinfo",    "hostent"};
  const auto requests = SampleRequests();
  const auto replies = SampleReplies();
  for (size_t i = 0; i < names.size(); ++i) {
    const auto t = static_cast<MsgType>(i + 1);
    CHECK(Name(t) == names[i]);
    CHECK(TypeOf(requests[i]) == t);
    CHECK(TypeOf(replies[i]) == t);
  }
  CHECK(std::string(Name(static_cast<MsgType>(0))) == "unknown");
  CHECK(std::string(Name(static_cast<MsgType>(17))) == "unknown");
}

TEST_CASE("only attach requests and successful socket/attach/listen replies carry descriptors",
          "[protocol]") {
  for (MsgType t : AllTypes()) {
    INFO(Name(t));
    CHECK(FdsWithRequest(t) == (t == MsgType::kAttach ? 1 : 0));
    const int reply_fds = t == MsgType::kSocket                            ? 2
                          : t == MsgType::kAttach || t == MsgType::kListen ? 1
                                                                           : 0;
    CHECK(MaxFdsWithReply(t) == reply_fds);
    CHECK(MaxFdsWithReply(t) <= 4);
    // The samples are successful replies: they carry the most, except attach (below).
    Reply ok = SampleReply(t);
    CHECK(FdsWithReply(ok) == reply_fds);
    Reply failed = ok;
    std::visit([](auto& m) { m.err = EBADF; }, failed);
    CHECK(FdsWithReply(failed) == 0);
  }
  CHECK(MaxFdsWithReply(static_cast<MsgType>(0)) == 0);
  CHECK(MaxFdsWithReply(static_cast<MsgType>(99)) == 0);
  // An attached listening socket has no memfd to pass.
  const auto listening = static_cast<uint32_t>(SocketState::kListening);
  for (uint32_t s = 0; s <= listening; ++s) {
    INFO("attach state " << s);
    const AttachReply a{.err = 0, .ring_order = 12, .socket_id = 1, .state = s};
    CHECK(FdsWithReply(a) == (s == listening ? 0 : 1));
  }
}

// ---- Accept records ----

TEST_CASE("an accept record survives a round trip, with edge values", "[protocol]") {
  std::vector<AcceptRecord> records = {
      SampleAcceptRecord(),
      AcceptRecord{.socket_id = 1,
                   .ring_order = kMinRingOrder,
                   .local = V4(0, 0, 0, 0, 0),
                   .peer = V4(255, 255, 255, 255, UINT16_MAX)},
      AcceptRecord{.socket_id = UINT64_MAX,
                   .ring_order = kMaxRingOrder,
                   .local = LinkLocalV6(8080, 0xFFFFF, UINT32_MAX),
                   .peer = LinkLocalV6(1, 0, 1)},
  };
  for (const AcceptRecord& r : records) {
    const Bytes b = EncodeAcceptRecord(r);
    CHECK(b.size() == kAcceptRecordSize);
    auto d = DecodeAcceptRecord(b);
    INFO((d.ok() ? std::string("ok") : Text(d.status())));
    REQUIRE(d.ok());
    CHECK(*d == r);
    CHECK(EncodeAcceptRecord(*d) == b);
  }
}

TEST_CASE("an accept record has the documented byte layout", "[protocol]") {
  const Bytes expected = {
      'X',  'S',  'K',  'A',                           // magic
      0x12, 0x00, 0x00, 0x00,                          // ring_order 18
      0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11,  // socket_id
      0x02, 0x00, 0x90, 0x1F, 0x00, 0x00, 0x00, 0x00,  // local: AF_INET, 8080, flowinfo
      0x7F, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00,  //   127.0.0.1
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  //
      0x00, 0x00, 0x00, 0x00,                          //   scope_id
      0x02, 0x00, 0x42, 0x9C, 0x00, 0x00, 0x00, 0x00,  // peer: AF_INET, 40002, flowinfo
      0x7F, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00,  //   127.0.0.2
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  //
      0x00, 0x00, 0x00, 0x00,                          //   scope_id
      0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,  // reserved
  };
  CHECK(EncodeAcceptRecord(SampleAcceptRecord()) == expected);
  auto d = DecodeAcceptRecord(expected);
  REQUIRE(d.ok());
  CHECK(*d == SampleAcceptRecord());
}

std::string RecordError(const Bytes& b) {
  auto d = DecodeAcceptRecord(b);
  if (d.ok()) return "(accepted)";
  CHECK(d.status().code() == absl::StatusCode::kInvalidArgument);
  return Text(d.status());
}

TEST_CASE("an accept record of any other size is rejected", "[protocol]") {
  const Bytes full = EncodeAcceptRecord(SampleAcceptRecord());
  for (size_t n = 0; n < full.size(); ++n) {
    INFO("first " << n << " bytes");
    CHECK_THAT(RecordError(Bytes(full.begin(), full.begin() + static_cast<ptrdiff_t>(n))),
               StartsWith("accept: record of " + std::to_string(n) + " bytes, expected 80"));
  }
  Bytes longer = full;
  longer.push_back(0);
  CHECK_THAT(RecordError(longer), StartsWith("accept: record of 81 bytes"));
  // A control message is not a record, even one that happens to be 80 bytes long.
  CHECK_THAT(RecordError(EncodeRequest(1, SampleRequest(MsgType::kStats))),
             StartsWith("accept: record of 20 bytes"));
}

TEST_CASE("an accept record with a bad field is rejected naming the field", "[protocol]") {
  const Bytes good = EncodeAcceptRecord(SampleAcceptRecord());
  for (size_t i = 0; i < 4; ++i) {
    Bytes b = good;
    b[i] ^= 0x20;
    CHECK_THAT(RecordError(b), StartsWith("accept.magic"));
  }
  Bytes control_magic = good;
  Put32(control_magic, 0, kMagic);
  CHECK_THAT(RecordError(control_magic), StartsWith("accept.magic: 0x314b5358 is not XSKA"));
  for (uint32_t o : {0u, kMinRingOrder - 1, kMaxRingOrder + 1, UINT32_MAX}) {
    Bytes b = good;
    Put32(b, 4, o);
    CHECK_THAT(RecordError(b), StartsWith("accept.ring_order: " + std::to_string(o)));
  }
  Bytes id = good;
  Put64(id, 8, 0);
  CHECK_THAT(RecordError(id), StartsWith("accept.socket_id: 0"));
  for (size_t i = 0; i < 8; ++i) {
    Bytes b = good;
    b[72 + i] = 0x01;
    CHECK_THAT(RecordError(b), StartsWith("accept.reserved: reserved field"));
  }
  for (const auto& [offset, name] : {std::pair<size_t, std::string>{16, "accept.local"},
                                     std::pair<size_t, std::string>{44, "accept.peer"}}) {
    for (uint16_t f : {0, AF_UNIX, 0xFFFF}) {
      Bytes b = good;
      Put16(b, offset, f);
      CHECK_THAT(RecordError(b), StartsWith(name + ".family: " + std::to_string(f)));
    }
    Bytes flow = good;
    flow[offset + 4] = 1;
    CHECK_THAT(RecordError(flow), StartsWith(name + ".flowinfo"));
    Bytes tail = good;
    tail[offset + 8 + 4] = 1;
    CHECK_THAT(RecordError(tail), StartsWith(name + ".addr: bytes 4..15"));
    Bytes scope = good;
    scope[offset + 24] = 1;
    CHECK_THAT(RecordError(scope), StartsWith(name + ".scope_id"));
  }
  // Both ends of one TCP connection have the same family.
  Bytes mixed = good;
  Put16(mixed, 44, AF_INET6);
  CHECK_THAT(RecordError(mixed), StartsWith("accept.peer.family: 10 differs from local's 2"));
}

}  // namespace
}  // namespace xsock::proto
