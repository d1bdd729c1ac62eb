#include "shared/protocol.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cassert>
#include <cerrno>
#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "shared/socket_page.h"

namespace xsock::proto {
namespace {

// ---- Byte writer / reader: explicit little-endian, bounds-checked. ----

class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(v); }
  void U16(uint16_t v) {
    for (int i = 0; i < 2; ++i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void U32(uint32_t v) {
    for (int i = 0; i < 4; ++i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void U64(uint64_t v) {
    for (int i = 0; i < 8; ++i) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  void I32(int32_t v) { U32(static_cast<uint32_t>(v)); }
  void Bytes(std::span<const uint8_t> b) { out_.insert(out_.end(), b.begin(), b.end()); }
  void Str(std::string_view s) { out_.insert(out_.end(), s.begin(), s.end()); }
  void Addr(const SockAddr& a) {
    U16(a.family);
    U16(a.port);
    U32(a.flowinfo);
    Bytes(a.addr);
    U32(a.scope_id);
  }
  std::vector<uint8_t>& out() { return out_; }

 private:
  std::vector<uint8_t> out_;
};

class Reader {
 public:
  explicit Reader(std::span<const uint8_t> b) : b_(b) {}
  size_t left() const { return b_.size() - pos_; }
  uint16_t U16() { return static_cast<uint16_t>(Take(2)); }
  uint32_t U32() { return static_cast<uint32_t>(Take(4)); }
  uint64_t U64() { return Take(8); }
  int32_t I32() { return static_cast<int32_t>(U32()); }
  void Bytes(uint8_t* dst, size_t n) {
    assert(n <= left());
    if (n == 0) return;  // dst may be an empty vector's nullptr: memcpy(nullptr, ...) is UB
    std::memcpy(dst, b_.data() + pos_, n);
    pos_ += n;
  }
  std::string Str(size_t n) {
    assert(n <= left());
    std::string s(reinterpret_cast<const char*>(b_.data() + pos_), n);
    pos_ += n;
    return s;
  }
  SockAddr Addr() {
    SockAddr a;
    a.family = U16();
    a.port = U16();
    a.flowinfo = U32();
    Bytes(a.addr.data(), a.addr.size());
    a.scope_id = U32();
    return a;
  }

 private:
  // Callers check the total length first; reading past the end is a bug, not bad input.
  uint64_t Take(int n) {
    assert(static_cast<size_t>(n) <= left());
    uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= uint64_t{b_[pos_ + i]} << (8 * i);
    pos_ += n;
    return v;
  }
  std::span<const uint8_t> b_;
  size_t pos_ = 0;
};

constexpr size_t kAddrSize = 28;

absl::Status Bad(absl::string_view what) { return absl::InvalidArgumentError(what); }

template <class... Args>
absl::Status Badf(const Args&... args) {
  return absl::InvalidArgumentError(absl::StrCat(args...));
}

absl::Status CheckAddr(absl::string_view where, const SockAddr& a) {
  if (a.family != AF_INET && a.family != AF_INET6) {
    return Badf(where, ".family: ", a.family, " is neither AF_INET nor AF_INET6");
  }
  if (a.family == AF_INET) {
    if (a.flowinfo != 0) return Badf(where, ".flowinfo: ", a.flowinfo, " must be 0 for AF_INET");
    if (a.scope_id != 0) return Badf(where, ".scope_id: ", a.scope_id, " must be 0 for AF_INET");
    for (size_t i = 4; i < a.addr.size(); ++i) {
      if (a.addr[i] != 0) return Badf(where, ".addr: bytes 4..15 must be 0 for AF_INET");
    }
  }
  return absl::OkStatus();
}

absl::Status CheckErr(absl::string_view where, int32_t err) {
  if (err < 0 || err >= 4096) return Badf(where, ".err: ", err, " is not an errno value");
  return absl::OkStatus();
}

absl::Status CheckOptLen(absl::string_view where, uint64_t len) {
  if (len > kMaxOptLen) return Badf(where, ": option length ", len, " exceeds ", kMaxOptLen);
  return absl::OkStatus();
}

// Body sizes of fixed-size messages (without the header); -1: variable.
int RequestBodySize(MsgType t) {
  switch (t) {
    case MsgType::kHello:
      return 8;
    case MsgType::kSocket:
      return 16;
    case MsgType::kConnect:
      return 8 + kAddrSize;
    case MsgType::kRelease:
      return 8;
    case MsgType::kShutdown:
      return 12;
    case MsgType::kGetSockName:
      return 8;
    case MsgType::kGetPeerName:
      return 8;
    case MsgType::kSetSockOpt:
      return -1;  // 20 + optlen
    case MsgType::kGetSockOpt:
      return 20;
    case MsgType::kAttach:
      return 4;
    case MsgType::kStats:
      return 4;
    case MsgType::kBind:
      return 8 + kAddrSize;
    case MsgType::kListen:
      return 12;
    case MsgType::kResolve:
      return -1;  // 20 + host + service
    case MsgType::kNameInfo:
      return kAddrSize + 8;
    case MsgType::kHostEnt:
      return -1;  // 8 + name or address
  }
  return -2;
}

int ReplyBodySize(MsgType t) {
  switch (t) {
    case MsgType::kHello:
      return 16;
    case MsgType::kSocket:
      return 16;
    case MsgType::kConnect:
      return 4;
    case MsgType::kRelease:
      return 4;
    case MsgType::kShutdown:
      return 4;
    case MsgType::kGetSockName:
      return 4 + kAddrSize;
    case MsgType::kGetPeerName:
      return 4 + kAddrSize;
    case MsgType::kSetSockOpt:
      return 4;
    case MsgType::kGetSockOpt:
      return -1;  // 8 + optlen
    case MsgType::kAttach:
      return 24;
    case MsgType::kStats:
      return 8 + 8 * 8;
    case MsgType::kBind:
      return 4 + kAddrSize;
    case MsgType::kListen:
      return 4;
    case MsgType::kResolve:
      return -1;  // 16 + canonname + 36 per entry
    case MsgType::kNameInfo:
      return -1;  // 16 + host + service
    case MsgType::kHostEnt:
      return -1;  // 20 + name + aliases + addresses
  }
  return -2;
}

// The fixed part of a variable-size message's body, which must be present.
size_t MinVariableBody(MsgType t, bool reply) {
  switch (t) {
    case MsgType::kSetSockOpt:
      return 20;
    case MsgType::kGetSockOpt:
      return 8;
    case MsgType::kResolve:
      return reply ? 16 : 20;
    case MsgType::kNameInfo:
      return 16;
    case MsgType::kHostEnt:
      return reply ? 20 : 8;
    default:
      return 0;
  }
}

void WriteHeader(Writer& w, uint16_t type, uint32_t seq) {
  w.U32(kMagic);
  w.U16(kVersion);
  w.U16(type);
  w.U32(0);  // length, patched by Finish()
  w.U32(seq);
}

std::vector<uint8_t> Finish(Writer& w) {
  auto& out = w.out();
  const auto len = static_cast<uint32_t>(out.size());
  for (int i = 0; i < 4; ++i) out[8 + i] = static_cast<uint8_t>(len >> (8 * i));
  assert(out.size() <= kMaxMessageSize);
  return std::move(out);
}

struct ParsedHeader {
  MsgType type;
  uint32_t seq;
};

// Validates the header and the body length; on success the reader is positioned at the body.
absl::StatusOr<ParsedHeader> ReadHeader(Reader& r, std::span<const uint8_t> bytes, bool reply) {
  if (bytes.size() < kHeaderSize) {
    return Badf("header: message of ", bytes.size(), " bytes is shorter than ", kHeaderSize);
  }
  if (bytes.size() > kMaxMessageSize) {
    return Badf("header: message of ", bytes.size(), " bytes exceeds ", kMaxMessageSize);
  }
  const uint32_t magic = r.U32();
  if (magic != kMagic) return Badf("header.magic: 0x", absl::Hex(magic), " is not XSK1");
  const uint16_t version = r.U16();
  if (version != kVersion) return Badf("header.version: ", version, " is not supported");
  const uint16_t raw_type = r.U16();
  const uint32_t length = r.U32();
  const uint32_t seq = r.U32();
  if (length != bytes.size()) {
    return Badf("header.length: says ", length, " but the message has ", bytes.size());
  }
  if (((raw_type & kReplyBit) != 0) != reply) {
    return Badf("header.type: 0x", absl::Hex(raw_type),
                reply ? " is not a reply" : " is not a request");
  }
  const auto type = static_cast<MsgType>(raw_type & ~kReplyBit);
  const int fixed = reply ? ReplyBodySize(type) : RequestBodySize(type);
  if (fixed == -2) return Badf("header.type: ", raw_type & ~kReplyBit, " is unknown");
  const size_t body = bytes.size() - kHeaderSize;
  if (fixed >= 0 && body != static_cast<size_t>(fixed)) {
    return Badf(Name(type), ": body of ", body, " bytes, expected ", fixed);
  }
  // Variable-size messages: the fixed part before the option bytes must be there.
  const size_t min_variable = MinVariableBody(type, reply);
  if (fixed == -1 && body < min_variable) {
    return Badf(Name(type), ": body of ", body, " bytes, expected at least ", min_variable);
  }
  return ParsedHeader{type, seq};
}

absl::Status CheckSocketId(absl::string_view where, uint64_t id) {
  if (id == 0) return Badf(where, ".socket_id: 0 is not a socket");
  return absl::OkStatus();
}

absl::Status CheckZero(absl::string_view where, uint64_t v) {
  if (v != 0) return Badf(where, ": reserved field is ", v, ", must be 0");
  return absl::OkStatus();
}

// A name or service string: bounded, and free of NUL (it becomes a C string).
absl::Status CheckText(absl::string_view where, absl::string_view s, size_t max) {
  if (s.size() > max) return Badf(where, ": ", s.size(), " bytes exceed ", max);
  if (s.find('\0') != absl::string_view::npos) return Badf(where, ": contains a NUL byte");
  return absl::OkStatus();
}

absl::Status CheckFamily(absl::string_view where, uint32_t f, bool unspec_ok) {
  if (f == AF_INET || f == AF_INET6 || (unspec_ok && f == AF_UNSPEC)) return absl::OkStatus();
  return Badf(
      where, ": ", f,
      unspec_ok ? " is not AF_UNSPEC, AF_INET or AF_INET6" : " is neither AF_INET nor AF_INET6");
}

absl::Status CheckTypeProto(absl::string_view where, int32_t socktype, int32_t protocol) {
  if (socktype < 0 || socktype > 15) return Badf(where, ".socktype: ", socktype, " is not 0..15");
  if (protocol < 0 || protocol > 65535) {
    return Badf(where, ".protocol: ", protocol, " is not 0..65535");
  }
  return absl::OkStatus();
}

// sys_errno accompanies only the code that means "see errno" (EAI_SYSTEM, NETDB_INTERNAL).
absl::Status CheckSysErrno(absl::string_view where, uint32_t sys_errno, bool allowed) {
  if (sys_errno >= 4096) return Badf(where, ".sys_errno: ", sys_errno, " is not an errno value");
  if (!allowed && sys_errno != 0) {
    return Badf(where, ".sys_errno: ", sys_errno, " without EAI_SYSTEM/NETDB_INTERNAL");
  }
  return absl::OkStatus();
}

size_t AddrLen(uint16_t family) { return family == AF_INET ? 4 : 16; }

absl::StatusOr<Request> ReadRequest(MsgType type, Reader& r) {
  switch (type) {
    case MsgType::kHello: {
      HelloRequest m;
      m.min_version = r.U16();
      m.max_version = r.U16();
      m.caps = r.U32();
      if (m.min_version == 0 || m.min_version > m.max_version) {
        return Badf("hello.versions: range ", m.min_version, "..", m.max_version, " is empty");
      }
      return m;
    }
    case MsgType::kSocket: {
      SocketRequest m;
      m.domain = r.U32();
      m.type = r.U32();
      m.protocol = r.U32();
      m.ring_order = r.U32();
      if (m.domain != AF_INET && m.domain != AF_INET6) {
        return Badf("socket.domain: ", m.domain, " is neither AF_INET nor AF_INET6");
      }
      if (m.type != SOCK_STREAM) return Badf("socket.type: ", m.type, " is not SOCK_STREAM");
      if (m.protocol != 0 && m.protocol != IPPROTO_TCP) {
        return Badf("socket.protocol: ", m.protocol, " is not 0 or IPPROTO_TCP");
      }
      if (m.ring_order != 0 && (m.ring_order < kMinRingOrder || m.ring_order > kMaxRingOrder)) {
        return Badf("socket.ring_order: ", m.ring_order, " is outside ", kMinRingOrder, "..",
                    kMaxRingOrder);
      }
      return m;
    }
    case MsgType::kConnect: {
      ConnectRequest m;
      m.socket_id = r.U64();
      m.addr = r.Addr();
      if (auto s = CheckSocketId("connect", m.socket_id); !s.ok()) return s;
      if (auto s = CheckAddr("connect.addr", m.addr); !s.ok()) return s;
      return m;
    }
    case MsgType::kRelease: {
      ReleaseRequest m;
      m.socket_id = r.U64();
      if (auto s = CheckSocketId("release", m.socket_id); !s.ok()) return s;
      return m;
    }
    case MsgType::kShutdown: {
      ShutdownRequest m;
      m.socket_id = r.U64();
      m.how = r.U32();
      if (auto s = CheckSocketId("shutdown", m.socket_id); !s.ok()) return s;
      if (m.how > SHUT_RDWR) return Badf("shutdown.how: ", m.how, " is not SHUT_RD/WR/RDWR");
      return m;
    }
    case MsgType::kGetSockName: {
      GetSockNameRequest m;
      m.socket_id = r.U64();
      if (auto s = CheckSocketId("getsockname", m.socket_id); !s.ok()) return s;
      return m;
    }
    case MsgType::kGetPeerName: {
      GetPeerNameRequest m;
      m.socket_id = r.U64();
      if (auto s = CheckSocketId("getpeername", m.socket_id); !s.ok()) return s;
      return m;
    }
    case MsgType::kSetSockOpt: {
      if (r.left() < 20) return Badf("setsockopt: body of ", r.left(), " bytes, expected >= 20");
      SetSockOptRequest m;
      m.socket_id = r.U64();
      m.level = r.I32();
      m.optname = r.I32();
      const uint32_t len = r.U32();
      if (auto s = CheckSocketId("setsockopt", m.socket_id); !s.ok()) return s;
      if (auto s = CheckOptLen("setsockopt.optlen", len); !s.ok()) return s;
      if (len != r.left()) {
        return Badf("setsockopt.optlen: says ", len, " but ", r.left(), " bytes follow");
      }
      m.value.resize(len);
      r.Bytes(m.value.data(), len);
      return m;
    }
    case MsgType::kGetSockOpt: {
      GetSockOptRequest m;
      m.socket_id = r.U64();
      m.level = r.I32();
      m.optname = r.I32();
      m.optlen = r.U32();
      if (auto s = CheckSocketId("getsockopt", m.socket_id); !s.ok()) return s;
      if (auto s = CheckOptLen("getsockopt.optlen", m.optlen); !s.ok()) return s;
      return m;
    }
    case MsgType::kAttach: {
      if (auto s = CheckZero("attach.flags", r.U32()); !s.ok()) return s;
      return AttachRequest{};
    }
    case MsgType::kStats: {
      if (auto s = CheckZero("stats.flags", r.U32()); !s.ok()) return s;
      return StatsRequest{};
    }
    case MsgType::kBind: {
      BindRequest m;
      m.socket_id = r.U64();
      m.addr = r.Addr();
      if (auto s = CheckSocketId("bind", m.socket_id); !s.ok()) return s;
      if (auto s = CheckAddr("bind.addr", m.addr); !s.ok()) return s;
      return m;
    }
    case MsgType::kListen: {
      // Any backlog is valid: listen() takes any int and the kernel clamps it.
      ListenRequest m;
      m.socket_id = r.U64();
      m.backlog = r.I32();
      if (auto s = CheckSocketId("listen", m.socket_id); !s.ok()) return s;
      return m;
    }
    case MsgType::kResolve: {
      ResolveRequest m;
      m.flags = r.U32();
      m.family = r.U16();
      const uint16_t present = r.U16();
      m.socktype = r.I32();
      m.protocol = r.I32();
      const uint16_t host_len = r.U16();
      const uint16_t service_len = r.U16();
      if (m.flags & ~kAiAllFlags)
        return Badf("resolve.flags: 0x", absl::Hex(m.flags), " has unknown bits");
      if (auto s = CheckFamily("resolve.family", m.family, true); !s.ok()) return s;
      if (present & ~3u)
        return Badf("resolve.present: 0x", absl::Hex(present), " has unknown bits");
      if (auto s = CheckTypeProto("resolve", m.socktype, m.protocol); !s.ok()) return s;
      if (!(present & 1) && host_len != 0)
        return Badf("resolve.host_len: ", host_len, " for no host");
      if (!(present & 2) && service_len != 0) {
        return Badf("resolve.service_len: ", service_len, " for no service");
      }
      if (size_t{host_len} + service_len != r.left()) {
        return Badf("resolve: host and service lengths say ", host_len + service_len, " but ",
                    r.left(), " bytes follow");
      }
      if (present & 1) m.host = r.Str(host_len);
      if (present & 2) m.service = r.Str(service_len);
      if (m.host) {
        if (auto s = CheckText("resolve.host", *m.host, kMaxHostNameLen); !s.ok()) return s;
      }
      if (m.service) {
        if (auto s = CheckText("resolve.service", *m.service, kMaxServiceLen); !s.ok()) return s;
      }
      return m;
    }
    case MsgType::kNameInfo: {
      NameInfoRequest m;
      m.addr = r.Addr();
      m.flags = r.U32();
      const uint32_t want = r.U32();
      if (auto s = CheckAddr("nameinfo.addr", m.addr); !s.ok()) return s;
      if (m.flags & ~kNiAllFlags) {
        return Badf("nameinfo.flags: 0x", absl::Hex(m.flags), " has unknown bits");
      }
      if (want == 0 || (want & ~3u)) return Badf("nameinfo.want: ", want, " is not 1..3");
      m.want_host = want & 1;
      m.want_service = want & 2;
      return m;
    }
    case MsgType::kHostEnt: {
      HostEntRequest m;
      m.op = r.U16();
      m.family = r.U16();
      const uint16_t len = r.U16();
      if (auto s = CheckZero("hostent.reserved", r.U16()); !s.ok()) return s;
      if (m.op != HostEntRequest::kByName && m.op != HostEntRequest::kByAddr) {
        return Badf("hostent.op: ", m.op, " is neither by-name (1) nor by-address (2)");
      }
      if (auto s = CheckFamily("hostent.family", m.family, false); !s.ok()) return s;
      if (len != r.left())
        return Badf("hostent.len: says ", len, " but ", r.left(), " bytes follow");
      if (m.op == HostEntRequest::kByName) {
        m.name = r.Str(len);
        if (auto s = CheckText("hostent.name", m.name, kMaxHostNameLen); !s.ok()) return s;
      } else {
        if (len != AddrLen(m.family)) {
          return Badf("hostent.len: ", len, " is not the address length of family ", m.family);
        }
        m.addr.resize(len);
        r.Bytes(m.addr.data(), len);
      }
      return m;
    }
  }
  return Bad("unreachable");
}

absl::StatusOr<Reply> ReadResolveReply(int32_t err, Reader& r) {
  ResolveReply m;
  m.err = err;
  m.gai = r.U16();
  const uint16_t flags = r.U16();
  m.sys_errno = r.U32();
  const uint16_t canon_len = r.U16();
  const uint16_t count = r.U16();
  if (m.gai > kMaxGaiCode) return Badf("resolve.gai: ", m.gai, " is not a result code");
  if (flags & ~1u) return Badf("resolve.flags: 0x", absl::Hex(flags), " has unknown bits");
  if (auto s =
          CheckSysErrno("resolve", m.sys_errno, m.gai == static_cast<uint16_t>(GaiCode::kSystem));
      !s.ok()) {
    return s;
  }
  const bool failed = err != 0 || m.gai != 0;
  if (err != 0 && (m.gai != 0 || m.sys_errno != 0)) {
    return Badf("resolve.gai: must be 0 when err is ", err);
  }
  if (failed && (flags != 0 || canon_len != 0 || count != 0)) {
    return Badf("resolve: a failed lookup carries no name and no entries");
  }
  if (!failed && (count == 0 || count > kMaxResolveEntries)) {
    return Badf("resolve.count: ", count, " is not 1..", kMaxResolveEntries);
  }
  if (!(flags & 1) && canon_len != 0) return Badf("resolve.canon_len: ", canon_len, " for no name");
  constexpr size_t kEntrySize = 8 + kAddrSize;
  if (size_t{canon_len} + count * kEntrySize != r.left()) {
    return Badf("resolve: canon_len and count say ", canon_len + count * kEntrySize, " but ",
                r.left(), " bytes follow");
  }
  if (flags & 1) {
    m.canonname = r.Str(canon_len);
    if (auto s = CheckText("resolve.canonname", *m.canonname, kMaxHostNameLen); !s.ok()) return s;
  }
  for (uint16_t i = 0; i < count; ++i) {
    ResolveEntry e;
    e.socktype = r.I32();
    e.protocol = r.I32();
    e.addr = r.Addr();
    const std::string where = absl::StrCat("resolve.entry[", i, "]");
    if (auto s = CheckTypeProto(where, e.socktype, e.protocol); !s.ok()) return s;
    if (auto s = CheckAddr(where + ".addr", e.addr); !s.ok()) return s;
    m.entries.push_back(e);
  }
  return m;
}

absl::StatusOr<Reply> ReadNameInfoReply(int32_t err, Reader& r) {
  NameInfoReply m;
  m.err = err;
  m.gai = r.U16();
  if (auto s = CheckZero("nameinfo.reserved", r.U16()); !s.ok()) return s;
  m.sys_errno = r.U32();
  const uint16_t host_len = r.U16();
  const uint16_t service_len = r.U16();
  if (m.gai > kMaxGaiCode) return Badf("nameinfo.gai: ", m.gai, " is not a result code");
  if (auto s =
          CheckSysErrno("nameinfo", m.sys_errno, m.gai == static_cast<uint16_t>(GaiCode::kSystem));
      !s.ok()) {
    return s;
  }
  if (err != 0 && (m.gai != 0 || m.sys_errno != 0)) {
    return Badf("nameinfo.gai: must be 0 when err is ", err);
  }
  if ((err != 0 || m.gai != 0) && (host_len != 0 || service_len != 0)) {
    return Badf("nameinfo: a failed lookup carries no names");
  }
  if (size_t{host_len} + service_len != r.left()) {
    return Badf("nameinfo: host and service lengths say ", host_len + service_len, " but ",
                r.left(), " bytes follow");
  }
  m.host = r.Str(host_len);
  m.service = r.Str(service_len);
  if (auto s = CheckText("nameinfo.host", m.host, kMaxHostNameLen); !s.ok()) return s;
  if (auto s = CheckText("nameinfo.service", m.service, kMaxServiceLen); !s.ok()) return s;
  return m;
}

absl::StatusOr<Reply> ReadHostEntReply(int32_t err, Reader& r) {
  HostEntReply m;
  m.err = err;
  m.herr = r.U16();
  m.family = r.U16();
  m.sys_errno = r.U32();
  const uint16_t name_len = r.U16();
  const uint16_t alias_count = r.U16();
  const uint16_t addr_count = r.U16();
  if (auto s = CheckZero("hostent.reserved", r.U16()); !s.ok()) return s;
  if (m.herr > kMaxHostErr) return Badf("hostent.herr: ", m.herr, " is not an h_errno code");
  if (auto s = CheckSysErrno("hostent", m.sys_errno,
                             m.herr == static_cast<uint16_t>(HostErr::kInternal));
      !s.ok()) {
    return s;
  }
  if (err != 0 && (m.herr != 0 || m.sys_errno != 0)) {
    return Badf("hostent.herr: must be 0 when err is ", err);
  }
  if (err != 0 || m.herr != 0) {
    if (m.family != 0 || name_len != 0 || alias_count != 0 || addr_count != 0 || r.left() != 0) {
      return Badf("hostent: a failed lookup carries no family, names or addresses");
    }
    return m;
  }
  if (auto s = CheckFamily("hostent.family", m.family, false); !s.ok()) return s;
  if (alias_count > kMaxHostAliases) {
    return Badf("hostent.alias_count: ", alias_count, " exceeds ", kMaxHostAliases);
  }
  if (addr_count == 0 || addr_count > kMaxHostAddrs) {
    return Badf("hostent.addr_count: ", addr_count, " is not 1..", kMaxHostAddrs);
  }
  if (name_len > r.left()) return Badf("hostent.name_len: ", name_len, " exceeds the message");
  m.name = r.Str(name_len);
  if (auto s = CheckText("hostent.name", m.name, kMaxHostNameLen); !s.ok()) return s;
  for (uint16_t i = 0; i < alias_count; ++i) {
    const std::string where = absl::StrCat("hostent.alias[", i, "]");
    if (r.left() < 2) return Badf(where, ": no room for its length");
    const uint16_t len = r.U16();
    if (len > r.left()) return Badf(where, ": length ", len, " exceeds the message");
    m.aliases.push_back(r.Str(len));
    if (auto s = CheckText(where, m.aliases.back(), kMaxHostNameLen); !s.ok()) return s;
  }
  const size_t alen = AddrLen(m.family);
  if (addr_count * alen != r.left()) {
    return Badf("hostent.addr_count: ", addr_count, " addresses of ", alen, " bytes, but ",
                r.left(), " bytes follow");
  }
  for (uint16_t i = 0; i < addr_count; ++i) {
    std::array<uint8_t, 16> a{};
    r.Bytes(a.data(), alen);
    m.addrs.push_back(a);
  }
  return m;
}

absl::StatusOr<Reply> ReadReply(MsgType type, Reader& r) {
  const int32_t err = r.I32();
  const std::string where = Name(type);
  if (auto s = CheckErr(where, err); !s.ok()) return s;
  switch (type) {
    case MsgType::kHello: {
      HelloReply m;
      m.err = err;
      m.version = r.U16();
      if (auto s = CheckZero("hello.reserved", r.U16()); !s.ok()) return s;
      m.caps = r.U32();
      m.server_pid = r.U32();
      if (err == 0 && m.version != kVersion) {
        return Badf("hello.version: ", m.version, " is not supported");
      }
      return m;
    }
    case MsgType::kSocket: {
      SocketReply m;
      m.err = err;
      m.ring_order = r.U32();
      m.socket_id = r.U64();
      if (err == 0) {
        if (m.ring_order < kMinRingOrder || m.ring_order > kMaxRingOrder) {
          return Badf("socket.ring_order: ", m.ring_order, " is outside ", kMinRingOrder, "..",
                      kMaxRingOrder);
        }
        if (auto s = CheckSocketId("socket", m.socket_id); !s.ok()) return s;
      }
      return m;
    }
    case MsgType::kConnect:
      return ConnectReply{err};
    case MsgType::kRelease:
      return ReleaseReply{err};
    case MsgType::kShutdown:
      return ShutdownReply{err};
    case MsgType::kSetSockOpt:
      return SetSockOptReply{err};
    case MsgType::kGetSockName:
    case MsgType::kGetPeerName: {
      const SockAddr a = r.Addr();
      if (err == 0) {
        if (auto s = CheckAddr(where + ".addr", a); !s.ok()) return s;
      }
      if (type == MsgType::kGetSockName) return GetSockNameReply{err, a};
      return GetPeerNameReply{err, a};
    }
    case MsgType::kGetSockOpt: {
      if (r.left() < 4) return Badf("getsockopt: body too short for optlen");
      const uint32_t len = r.U32();
      if (auto s = CheckOptLen("getsockopt.optlen", len); !s.ok()) return s;
      if (len != r.left()) {
        return Badf("getsockopt.optlen: says ", len, " but ", r.left(), " bytes follow");
      }
      GetSockOptReply m;
      m.err = err;
      m.value.resize(len);
      r.Bytes(m.value.data(), len);
      return m;
    }
    case MsgType::kAttach: {
      AttachReply m;
      m.err = err;
      m.ring_order = r.U32();
      m.socket_id = r.U64();
      m.state = r.U32();
      if (auto s = CheckZero("attach.reserved", r.U32()); !s.ok()) return s;
      if (err == 0) {
        if (m.state > static_cast<uint32_t>(SocketState::kListening)) {
          return Badf("attach.state: ", m.state, " is not a socket state");
        }
        // A listening socket has no rings: its ring_order is 0, like a reserved field.
        if (m.state == static_cast<uint32_t>(SocketState::kListening)) {
          if (m.ring_order != 0) {
            return Badf("attach.ring_order: ", m.ring_order, " must be 0 for a listening socket");
          }
        } else if (m.ring_order < kMinRingOrder || m.ring_order > kMaxRingOrder) {
          return Badf("attach.ring_order: ", m.ring_order, " is outside ", kMinRingOrder, "..",
                      kMaxRingOrder);
        }
        if (auto s = CheckSocketId("attach", m.socket_id); !s.ok()) return s;
      }
      return m;
    }
    case MsgType::kStats: {
      if (auto s = CheckZero("stats.reserved", r.U32()); !s.ok()) return s;
      StatsReply m;
      m.err = err;
      m.clients_now = r.U64();
      m.clients_total = r.U64();
      m.sockets_now = r.U64();
      m.sockets_total = r.U64();
      m.connects_ok = r.U64();
      m.connects_failed = r.U64();
      m.bytes_to_host = r.U64();
      m.bytes_from_host = r.U64();
      return m;
    }
    case MsgType::kBind: {
      BindReply m;
      m.err = err;
      m.addr = r.Addr();
      if (err == 0) {
        if (auto s = CheckAddr("bind.addr", m.addr); !s.ok()) return s;
      } else if (m.addr != SockAddr{}) {
        return Badf("bind.addr: must be all zero when err is ", err);
      }
      return m;
    }
    case MsgType::kListen:
      return ListenReply{err};
    case MsgType::kResolve:
      return ReadResolveReply(err, r);
    case MsgType::kNameInfo:
      return ReadNameInfoReply(err, r);
    case MsgType::kHostEnt:
      return ReadHostEntReply(err, r);
  }
  return Bad("unreachable");
}

}  // namespace

absl::StatusOr<SockAddr> FromSockaddr(const sockaddr* sa, socklen_t len) {
  SockAddr a;
  if (sa == nullptr || len < static_cast<socklen_t>(sizeof(sa_family_t))) {
    return Bad("address: too short");
  }
  if (sa->sa_family == AF_INET) {
    if (len < static_cast<socklen_t>(sizeof(sockaddr_in))) return Bad("address: short sockaddr_in");
    sockaddr_in in;
    std::memcpy(&in, sa, sizeof(in));
    a.family = AF_INET;
    a.port = ntohs(in.sin_port);
    std::memcpy(a.addr.data(), &in.sin_addr, 4);
    return a;
  }
  if (sa->sa_family == AF_INET6) {
    // Linux accepts the RFC 2133 sockaddr_in6 without sin6_scope_id (24 bytes), and then
    // takes the scope as 0; so do we, so a routed socket accepts what a kernel one does.
    constexpr socklen_t kRfc2133Len = offsetof(sockaddr_in6, sin6_scope_id);
    if (len < kRfc2133Len) return Bad("address: short sockaddr_in6");
    sockaddr_in6 in6 = {};
    std::memcpy(&in6, sa, std::min<size_t>(len, sizeof(in6)));
    a.family = AF_INET6;
    a.port = ntohs(in6.sin6_port);
    a.flowinfo = ntohl(in6.sin6_flowinfo);  // a number on the wire, like the port
    std::memcpy(a.addr.data(), &in6.sin6_addr, 16);
    a.scope_id = in6.sin6_scope_id;
    return a;
  }
  return Badf("address: family ", sa->sa_family, " is neither AF_INET nor AF_INET6");
}

socklen_t ToSockaddr(const SockAddr& a, sockaddr_storage* out) {
  std::memset(out, 0, sizeof(*out));
  if (a.family == AF_INET) {
    auto* in = reinterpret_cast<sockaddr_in*>(out);
    in->sin_family = AF_INET;
    in->sin_port = htons(a.port);
    std::memcpy(&in->sin_addr, a.addr.data(), 4);
    return sizeof(sockaddr_in);
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(out);
  in6->sin6_family = AF_INET6;
  in6->sin6_port = htons(a.port);
  in6->sin6_flowinfo = htonl(a.flowinfo);
  std::memcpy(&in6->sin6_addr, a.addr.data(), 16);
  in6->sin6_scope_id = a.scope_id;
  return sizeof(sockaddr_in6);
}

std::string ToString(const SockAddr& a) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (a.family == AF_INET) {
    inet_ntop(AF_INET, a.addr.data(), buf, sizeof(buf));
    return absl::StrCat(buf, ":", a.port);
  }
  if (a.family == AF_INET6) {
    inet_ntop(AF_INET6, a.addr.data(), buf, sizeof(buf));
    return absl::StrCat("[", buf, "]:", a.port);
  }
  return absl::StrCat("<family ", a.family, ">");
}

MsgType TypeOf(const Request& r) { return static_cast<MsgType>(r.index() + 1); }
MsgType TypeOf(const Reply& r) { return static_cast<MsgType>(r.index() + 1); }

const char* Name(MsgType t) {
  switch (t) {
    case MsgType::kHello:
      return "hello";
    case MsgType::kSocket:
      return "socket";
    case MsgType::kConnect:
      return "connect";
    case MsgType::kRelease:
      return "release";
    case MsgType::kShutdown:
      return "shutdown";
    case MsgType::kGetSockName:
      return "getsockname";
    case MsgType::kGetPeerName:
      return "getpeername";
    case MsgType::kSetSockOpt:
      return "setsockopt";
    case MsgType::kGetSockOpt:
      return "getsockopt";
    case MsgType::kAttach:
      return "attach";
    case MsgType::kStats:
      return "stats";
    case MsgType::kBind:
      return "bind";
    case MsgType::kListen:
      return "listen";
    case MsgType::kResolve:
      return "resolve";
    case MsgType::kNameInfo:
      return "nameinfo";
    case MsgType::kHostEnt:
      return "hostent";
  }
  return "unknown";
}

int FdsWithRequest(MsgType t) { return t == MsgType::kAttach ? 1 : 0; }

int FdsWithReply(const Reply& r) {
  const int32_t err = std::visit([](const auto& m) { return m.err; }, r);
  if (err != 0) return 0;
  if (const auto* a = std::get_if<AttachReply>(&r)) {
    // A listening socket has no memfd; the caller already holds its listener channel.
    return a->state == static_cast<uint32_t>(SocketState::kListening) ? 0 : 1;
  }
  return MaxFdsWithReply(TypeOf(r));
}

int MaxFdsWithReply(MsgType t) {
  switch (t) {
    case MsgType::kSocket:
      return 2;  // channel, memfd
    case MsgType::kAttach:
      return 1;  // memfd
    case MsgType::kListen:
      return 1;  // listener channel
    default:
      return 0;
  }
}

std::vector<uint8_t> EncodeRequest(uint32_t seq, const Request& req) {
  Writer w;
  WriteHeader(w, static_cast<uint16_t>(TypeOf(req)), seq);
  std::visit(
      [&w](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<T, HelloRequest>) {
          w.U16(m.min_version);
          w.U16(m.max_version);
          w.U32(m.caps);
        } else if constexpr (std::is_same_v<T, SocketRequest>) {
          w.U32(m.domain);
          w.U32(m.type);
          w.U32(m.protocol);
          w.U32(m.ring_order);
        } else if constexpr (std::is_same_v<T, ConnectRequest>) {
          w.U64(m.socket_id);
          w.Addr(m.addr);
        } else if constexpr (std::is_same_v<T, ShutdownRequest>) {
          w.U64(m.socket_id);
          w.U32(m.how);
        } else if constexpr (std::is_same_v<T, SetSockOptRequest>) {
          assert(m.value.size() <= kMaxOptLen);
          w.U64(m.socket_id);
          w.I32(m.level);
          w.I32(m.optname);
          w.U32(static_cast<uint32_t>(m.value.size()));
          w.Bytes(m.value);
        } else if constexpr (std::is_same_v<T, GetSockOptRequest>) {
          w.U64(m.socket_id);
          w.I32(m.level);
          w.I32(m.optname);
          w.U32(m.optlen);
        } else if constexpr (std::is_same_v<T, AttachRequest> || std::is_same_v<T, StatsRequest>) {
          w.U32(0);
        } else if constexpr (std::is_same_v<T, BindRequest>) {
          w.U64(m.socket_id);
          w.Addr(m.addr);
        } else if constexpr (std::is_same_v<T, ListenRequest>) {
          w.U64(m.socket_id);
          w.I32(m.backlog);
        } else if constexpr (std::is_same_v<T, ResolveRequest>) {
          assert(!m.host || m.host->size() <= kMaxHostNameLen);
          assert(!m.service || m.service->size() <= kMaxServiceLen);
          w.U32(m.flags);
          w.U16(m.family);
          w.U16(static_cast<uint16_t>((m.host ? 1 : 0) | (m.service ? 2 : 0)));
          w.I32(m.socktype);
          w.I32(m.protocol);
          w.U16(static_cast<uint16_t>(m.host ? m.host->size() : 0));
          w.U16(static_cast<uint16_t>(m.service ? m.service->size() : 0));
          if (m.host) w.Str(*m.host);
          if (m.service) w.Str(*m.service);
        } else if constexpr (std::is_same_v<T, NameInfoRequest>) {
          w.Addr(m.addr);
          w.U32(m.flags);
          w.U32((m.want_host ? 1u : 0u) | (m.want_service ? 2u : 0u));
        } else if constexpr (std::is_same_v<T, HostEntRequest>) {
          const bool by_name = m.op == HostEntRequest::kByName;
          assert(m.name.size() <= kMaxHostNameLen && m.addr.size() <= 16);
          w.U16(m.op);
          w.U16(m.family);
          w.U16(static_cast<uint16_t>(by_name ? m.name.size() : m.addr.size()));
          w.U16(0);
          if (by_name) {
            w.Str(m.name);
          } else {
            w.Bytes(m.addr);
          }
        } else {  // Release, GetSockName, GetPeerName
          w.U64(m.socket_id);
        }
      },
      req);
  return Finish(w);
}

std::vector<uint8_t> EncodeReply(uint32_t seq, const Reply& rep) {
  Writer w;
  WriteHeader(w, static_cast<uint16_t>(TypeOf(rep)) | kReplyBit, seq);
  std::visit(
      [&w](const auto& m) {
        using T = std::decay_t<decltype(m)>;
        w.I32(m.err);
        if constexpr (std::is_same_v<T, HelloReply>) {
          w.U16(m.version);
          w.U16(0);
          w.U32(m.caps);
          w.U32(m.server_pid);
        } else if constexpr (std::is_same_v<T, SocketReply>) {
          w.U32(m.ring_order);
          w.U64(m.socket_id);
        } else if constexpr (std::is_same_v<T, GetSockNameReply> ||
                             std::is_same_v<T, GetPeerNameReply> || std::is_same_v<T, BindReply>) {
          w.Addr(m.addr);
        } else if constexpr (std::is_same_v<T, GetSockOptReply>) {
          assert(m.value.size() <= kMaxOptLen);
          w.U32(static_cast<uint32_t>(m.value.size()));
          w.Bytes(m.value);
        } else if constexpr (std::is_same_v<T, AttachReply>) {
          w.U32(m.ring_order);
          w.U64(m.socket_id);
          w.U32(m.state);
          w.U32(0);
        } else if constexpr (std::is_same_v<T, StatsReply>) {
          w.U32(0);
          for (uint64_t v :
               {m.clients_now, m.clients_total, m.sockets_now, m.sockets_total, m.connects_ok,
                m.connects_failed, m.bytes_to_host, m.bytes_from_host}) {
            w.U64(v);
          }
        } else if constexpr (std::is_same_v<T, ResolveReply>) {
          assert(m.entries.size() <= kMaxResolveEntries);
          assert(!m.canonname || m.canonname->size() <= kMaxHostNameLen);
          w.U16(m.gai);
          w.U16(m.canonname ? 1 : 0);
          w.U32(m.sys_errno);
          w.U16(static_cast<uint16_t>(m.canonname ? m.canonname->size() : 0));
          w.U16(static_cast<uint16_t>(m.entries.size()));
          if (m.canonname) w.Str(*m.canonname);
          for (const ResolveEntry& e : m.entries) {
            w.I32(e.socktype);
            w.I32(e.protocol);
            w.Addr(e.addr);
          }
        } else if constexpr (std::is_same_v<T, NameInfoReply>) {
          assert(m.host.size() <= kMaxHostNameLen && m.service.size() <= kMaxServiceLen);
          w.U16(m.gai);
          w.U16(0);
          w.U32(m.sys_errno);
          w.U16(static_cast<uint16_t>(m.host.size()));
          w.U16(static_cast<uint16_t>(m.service.size()));
          w.Str(m.host);
          w.Str(m.service);
        } else if constexpr (std::is_same_v<T, HostEntReply>) {
          assert(m.name.size() <= kMaxHostNameLen && m.aliases.size() <= kMaxHostAliases &&
                 m.addrs.size() <= kMaxHostAddrs);
          w.U16(m.herr);
          w.U16(m.family);
          w.U32(m.sys_errno);
          w.U16(static_cast<uint16_t>(m.name.size()));
          w.U16(static_cast<uint16_t>(m.aliases.size()));
          w.U16(static_cast<uint16_t>(m.addrs.size()));
          w.U16(0);
          w.Str(m.name);
          for (const std::string& a : m.aliases) {
            w.U16(static_cast<uint16_t>(a.size()));
            w.Str(a);
          }
          for (const auto& a : m.addrs) w.Bytes(std::span(a).first(AddrLen(m.family)));
        }
      },
      rep);
  return Finish(w);
}

std::vector<uint8_t> EncodeAcceptRecord(const AcceptRecord& rec) {
  Writer w;
  w.U32(kAcceptMagic);
  w.U32(rec.ring_order);
  w.U64(rec.socket_id);
  w.Addr(rec.local);
  w.Addr(rec.peer);
  w.U64(0);  // reserved
  assert(w.out().size() == kAcceptRecordSize);
  return std::move(w.out());
}

absl::StatusOr<AcceptRecord> DecodeAcceptRecord(std::span<const uint8_t> bytes) {
  if (bytes.size() != kAcceptRecordSize) {
    return Badf("accept: record of ", bytes.size(), " bytes, expected ", kAcceptRecordSize);
  }
  Reader r(bytes);
  const uint32_t magic = r.U32();
  if (magic != kAcceptMagic) return Badf("accept.magic: 0x", absl::Hex(magic), " is not XSKA");
  AcceptRecord m;
  m.ring_order = r.U32();
  m.socket_id = r.U64();
  m.local = r.Addr();
  m.peer = r.Addr();
  if (auto s = CheckZero("accept.reserved", r.U64()); !s.ok()) return s;
  if (m.ring_order < kMinRingOrder || m.ring_order > kMaxRingOrder) {
    return Badf("accept.ring_order: ", m.ring_order, " is outside ", kMinRingOrder, "..",
                kMaxRingOrder);
  }
  if (auto s = CheckSocketId("accept", m.socket_id); !s.ok()) return s;
  if (auto s = CheckAddr("accept.local", m.local); !s.ok()) return s;
  if (auto s = CheckAddr("accept.peer", m.peer); !s.ok()) return s;
  // One TCP connection has one family at both ends.
  if (m.peer.family != m.local.family) {
    return Badf("accept.peer.family: ", m.peer.family, " differs from local's ", m.local.family);
  }
  return m;
}

absl::StatusOr<Decoded<Request>> DecodeRequest(std::span<const uint8_t> bytes) {
  Reader r(bytes);
  auto h = ReadHeader(r, bytes, /*reply=*/false);
  if (!h.ok()) return h.status();
  auto m = ReadRequest(h->type, r);
  if (!m.ok()) return m.status();
  return Decoded<Request>{h->seq, std::move(*m)};
}

absl::StatusOr<Decoded<Reply>> DecodeReply(std::span<const uint8_t> bytes) {
  Reader r(bytes);
  auto h = ReadHeader(r, bytes, /*reply=*/true);
  if (!h.ok()) return h.status();
  auto m = ReadReply(h->type, r);
  if (!m.ok()) return m.status();
  return Decoded<Reply>{h->seq, std::move(*m)};
}

}  // namespace xsock::proto
