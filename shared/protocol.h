// xsock control protocol, version 1.
//
// Messages travel on an AF_UNIX SOCK_SEQPACKET connection between libxsock.so and
// xsockd, one message per packet, descriptors (channel, memfd) beside them with
// SCM_RIGHTS. Every field is fixed-width little-endian; docs/protocol.md gives the byte
// layout of each message. The decoder treats its input as hostile: it checks the header,
// the exact length of every message type, every enumerated field and every reserved
// field, and names the offending field in the error it returns.
#pragma once

#include <sys/socket.h>

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"

namespace xsock::proto {

inline constexpr uint32_t kMagic = 0x314B5358;  // "XSK1" as little-endian bytes
inline constexpr uint16_t kVersion = 1;
inline constexpr size_t kHeaderSize = 16;
inline constexpr size_t kMaxOptLen = 256;
// The largest message: a resolve reply with kMaxResolveEntries entries and a long
// canonical name (docs/protocol.md, "Name resolution"); every other message fits in 512.
inline constexpr size_t kMaxMessageSize = 4096;
inline constexpr uint16_t kReplyBit = 0x8000;

// Capability bits exchanged in Hello; a feature is used only when both sides offer it.
inline constexpr uint32_t kCapIpv6 = 1u << 0;
inline constexpr uint32_t kCapStats = 1u << 1;
inline constexpr uint32_t kCapResolve = 1u << 2;  // resolve, nameinfo, hostent
inline constexpr uint32_t kAllCaps = kCapIpv6 | kCapStats | kCapResolve;

enum class MsgType : uint16_t {
  kHello = 1,
  kSocket = 2,
  kConnect = 3,
  kRelease = 4,
  kShutdown = 5,
  kGetSockName = 6,
  kGetPeerName = 7,
  kSetSockOpt = 8,
  kGetSockOpt = 9,
  kAttach = 10,
  kStats = 11,
  kBind = 12,
  kListen = 13,
  kResolve = 14,   // getaddrinfo on the host
  kNameInfo = 15,  // getnameinfo on the host
  kHostEnt = 16,   // gethostbyname2_r / gethostbyaddr_r on the host
};

// A socket address on the wire: 28 bytes. family is AF_INET or AF_INET6; port and
// flowinfo are numbers (not network order); for AF_INET only addr[0..3] is used and the
// rest, flowinfo and scope_id must be zero.
struct SockAddr {
  uint16_t family = 0;
  uint16_t port = 0;
  uint32_t flowinfo = 0;
  std::array<uint8_t, 16> addr{};
  uint32_t scope_id = 0;
  bool operator==(const SockAddr&) const = default;
};

// sockaddr_in / sockaddr_in6 <-> SockAddr. FromSockaddr fails (InvalidArgument) for other
// families or a length the kernel would refuse (a 24-byte RFC 2133 sockaddr_in6 is
// accepted, scope 0); ToSockaddr returns the length written.
absl::StatusOr<SockAddr> FromSockaddr(const sockaddr* sa, socklen_t len);
socklen_t ToSockaddr(const SockAddr& a, sockaddr_storage* out);
std::string ToString(const SockAddr& a);  // "127.0.0.1:80", "[::1]:22"

// ---- Requests (library -> xsockd) ----

struct HelloRequest {
  uint16_t min_version = kVersion;
  uint16_t max_version = kVersion;
  uint32_t caps = 0;
  bool operator==(const HelloRequest&) const = default;
};
// Creates a backend socket. Reply carries two descriptors: the channel, then the memfd.
struct SocketRequest {
  uint32_t domain = 0;      // AF_INET or AF_INET6
  uint32_t type = 0;        // SOCK_STREAM (flags stripped)
  uint32_t protocol = 0;    // 0 or IPPROTO_TCP
  uint32_t ring_order = 0;  // 0: backend default, else kMinRingOrder..kMaxRingOrder
  bool operator==(const SocketRequest&) const = default;
};
struct ConnectRequest {
  uint64_t socket_id = 0;
  SockAddr addr;
  bool operator==(const ConnectRequest&) const = default;
};
struct ReleaseRequest {
  uint64_t socket_id = 0;
  bool operator==(const ReleaseRequest&) const = default;
};
struct ShutdownRequest {
  uint64_t socket_id = 0;
  uint32_t how = 0;  // SHUT_RD, SHUT_WR or SHUT_RDWR
  bool operator==(const ShutdownRequest&) const = default;
};
struct GetSockNameRequest {
  uint64_t socket_id = 0;
  bool operator==(const GetSockNameRequest&) const = default;
};
struct GetPeerNameRequest {
  uint64_t socket_id = 0;
  bool operator==(const GetPeerNameRequest&) const = default;
};
struct SetSockOptRequest {
  uint64_t socket_id = 0;
  int32_t level = 0;
  int32_t optname = 0;
  std::vector<uint8_t> value;  // at most kMaxOptLen bytes
  bool operator==(const SetSockOptRequest&) const = default;
};
struct GetSockOptRequest {
  uint64_t socket_id = 0;
  int32_t level = 0;
  int32_t optname = 0;
  uint32_t optlen = 0;  // room the caller has, at most kMaxOptLen
  bool operator==(const GetSockOptRequest&) const = default;
};
// Re-attaches an inherited socket: one descriptor (the app's channel end) travels with it.
struct AttachRequest {
  bool operator==(const AttachRequest&) const = default;
};
struct StatsRequest {
  bool operator==(const StatsRequest&) const = default;
};
// Binds the socket's host socket (created here if connect has not made it yet). The
// options replayed before it (SO_REUSEADDR, SO_REUSEPORT, IPV6_V6ONLY...) apply.
struct BindRequest {
  uint64_t socket_id = 0;
  SockAddr addr;
  bool operator==(const BindRequest&) const = default;
};
// listen() on the bound host socket. A successful reply carries one descriptor: the app
// end of the socket's *listener channel* (AF_UNIX SOCK_SEQPACKET), which the library puts
// over the application's descriptor; accepted connections arrive on it as AcceptRecords
// (docs/channel.md, "Listening sockets"). From then on the socket has no rings.
struct ListenRequest {
  uint64_t socket_id = 0;
  int32_t backlog = 0;  // as passed to listen(); xsockd clamps it like the kernel
  bool operator==(const ListenRequest&) const = default;
};

// ---- Name resolution (docs/protocol.md, "Name resolution") ----
//
// Wire codes are xsock's own, not libc's numbers (EAI_* values differ between libcs);
// shared/resolve_codes.h maps them both ways.

inline constexpr size_t kMaxHostNameLen = 1024;   // NI_MAXHOST - 1: a host or canonical name
inline constexpr size_t kMaxServiceLen = 255;     // a service name or port string
inline constexpr size_t kMaxResolveEntries = 64;  // addrinfo entries in one reply
inline constexpr size_t kMaxHostAliases = 32;     // hostent aliases in one reply
inline constexpr size_t kMaxHostAddrs = 64;       // hostent addresses in one reply

// getaddrinfo/getnameinfo results (EAI_*); kOk is 0.
enum class GaiCode : uint16_t {
  kOk = 0,
  kBadFlags = 1,
  kNoName = 2,
  kAgain = 3,
  kFail = 4,
  kFamily = 5,
  kSockType = 6,
  kService = 7,
  kMemory = 8,
  kSystem = 9,  // the reply's sys_errno says which errno
  kOverflow = 10,
  kNoData = 11,
  kAddrFamily = 12,
  kIdnEncode = 13,
};
inline constexpr uint16_t kMaxGaiCode = 13;

// h_errno of gethostbyname2_r / gethostbyaddr_r; kOk is 0.
enum class HostErr : uint16_t {
  kOk = 0,
  kHostNotFound = 1,
  kTryAgain = 2,
  kNoRecovery = 3,
  kNoData = 4,
  kInternal = 5,  // NETDB_INTERNAL: the reply's sys_errno says which errno
};
inline constexpr uint16_t kMaxHostErr = 5;

// addrinfo hint flags on the wire (ResolveRequest::flags).
inline constexpr uint32_t kAiPassive = 1u << 0;
inline constexpr uint32_t kAiCanonName = 1u << 1;
inline constexpr uint32_t kAiNumericHost = 1u << 2;
inline constexpr uint32_t kAiV4Mapped = 1u << 3;
inline constexpr uint32_t kAiAll = 1u << 4;
inline constexpr uint32_t kAiAddrConfig = 1u << 5;
inline constexpr uint32_t kAiNumericServ = 1u << 6;
inline constexpr uint32_t kAiIdn = 1u << 7;
inline constexpr uint32_t kAiCanonIdn = 1u << 8;
inline constexpr uint32_t kAiAllFlags = (1u << 9) - 1;

// getnameinfo flags on the wire (NameInfoRequest::flags).
inline constexpr uint32_t kNiNumericHost = 1u << 0;
inline constexpr uint32_t kNiNumericServ = 1u << 1;
inline constexpr uint32_t kNiNoFqdn = 1u << 2;
inline constexpr uint32_t kNiNameReqd = 1u << 3;
inline constexpr uint32_t kNiDgram = 1u << 4;
inline constexpr uint32_t kNiIdn = 1u << 5;
inline constexpr uint32_t kNiAllFlags = (1u << 6) - 1;

// getaddrinfo(host, service, hints) on the host. An absent host or service is NULL.
struct ResolveRequest {
  uint32_t flags = 0;                  // kAi* bits
  uint16_t family = 0;                 // AF_UNSPEC, AF_INET or AF_INET6
  int32_t socktype = 0;                // 0..15
  int32_t protocol = 0;                // 0..65535
  std::optional<std::string> host;     // at most kMaxHostNameLen bytes, no NUL
  std::optional<std::string> service;  // at most kMaxServiceLen bytes, no NUL
  bool operator==(const ResolveRequest&) const = default;
};
// getnameinfo(addr, host?, service?, flags) on the host.
struct NameInfoRequest {
  SockAddr addr;
  uint32_t flags = 0;  // kNi* bits
  bool want_host = false;
  bool want_service = false;
  bool operator==(const NameInfoRequest&) const = default;
};
// gethostbyname2_r(name, family) or gethostbyaddr_r(addr, family) on the host.
struct HostEntRequest {
  enum Op : uint16_t { kByName = 1, kByAddr = 2 };
  uint16_t op = kByName;
  uint16_t family = 0;        // AF_INET or AF_INET6
  std::string name;           // kByName: at most kMaxHostNameLen bytes, no NUL; else empty
  std::vector<uint8_t> addr;  // kByAddr: 4 (AF_INET) or 16 (AF_INET6) bytes; else empty
  bool operator==(const HostEntRequest&) const = default;
};

using Request =
    std::variant<HelloRequest, SocketRequest, ConnectRequest, ReleaseRequest, ShutdownRequest,
                 GetSockNameRequest, GetPeerNameRequest, SetSockOptRequest, GetSockOptRequest,
                 AttachRequest, StatsRequest, BindRequest, ListenRequest, ResolveRequest,
                 NameInfoRequest, HostEntRequest>;

// ---- Replies (xsockd -> library). err is a positive errno, 0 for success. ----

struct HelloReply {
  int32_t err = 0;
  uint16_t version = kVersion;
  uint32_t caps = 0;
  uint32_t server_pid = 0;
  bool operator==(const HelloReply&) const = default;
};
struct SocketReply {
  int32_t err = 0;
  uint32_t ring_order = 0;
  uint64_t socket_id = 0;
  bool operator==(const SocketReply&) const = default;
};
// err: 0 (connected), EINPROGRESS (completion is reported through the socket page), or
// the connect's errno.
struct ConnectReply {
  int32_t err = 0;
  bool operator==(const ConnectReply&) const = default;
};
struct ReleaseReply {
  int32_t err = 0;
  bool operator==(const ReleaseReply&) const = default;
};
struct ShutdownReply {
  int32_t err = 0;
  bool operator==(const ShutdownReply&) const = default;
};
struct GetSockNameReply {
  int32_t err = 0;
  SockAddr addr;  // all zero when err != 0
  bool operator==(const GetSockNameReply&) const = default;
};
struct GetPeerNameReply {
  int32_t err = 0;
  SockAddr addr;
  bool operator==(const GetPeerNameReply&) const = default;
};
struct SetSockOptReply {
  int32_t err = 0;
  bool operator==(const SetSockOptReply&) const = default;
};
struct GetSockOptReply {
  int32_t err = 0;
  std::vector<uint8_t> value;  // at most kMaxOptLen bytes
  bool operator==(const GetSockOptReply&) const = default;
};
// A successful reply carries one descriptor (the memfd), except for a listening socket
// (state == SocketState::kListening), which has no memory and gets none.
struct AttachReply {
  int32_t err = 0;
  uint32_t ring_order = 0;
  uint64_t socket_id = 0;
  uint32_t state = 0;  // SocketState
  bool operator==(const AttachReply&) const = default;
};
struct StatsReply {
  int32_t err = 0;
  uint64_t clients_now = 0;
  uint64_t clients_total = 0;
  uint64_t sockets_now = 0;
  uint64_t sockets_total = 0;
  uint64_t connects_ok = 0;
  uint64_t connects_failed = 0;
  uint64_t bytes_to_host = 0;    // app -> host socket
  uint64_t bytes_from_host = 0;  // host socket -> app
  bool operator==(const StatsReply&) const = default;
};

struct BindReply {
  int32_t err = 0;
  SockAddr addr;  // the address actually bound (port 0 -> the real port); zero on error
  bool operator==(const BindReply&) const = default;
};
struct ListenReply {
  int32_t err = 0;
  bool operator==(const ListenReply&) const = default;
};

// Name resolution replies: err is the exchange's errno (EOPNOTSUPP without kCapResolve);
// with err 0 the lookup's own result is gai / herr. A failed lookup carries nothing else.
struct ResolveEntry {
  int32_t socktype = 0;  // 0..15
  int32_t protocol = 0;  // 0..65535
  SockAddr addr;
  bool operator==(const ResolveEntry&) const = default;
};
struct ResolveReply {
  int32_t err = 0;
  uint16_t gai = 0;                      // GaiCode; kOk: 1..kMaxResolveEntries entries
  uint32_t sys_errno = 0;                // with GaiCode::kSystem only (0..4095)
  std::optional<std::string> canonname;  // the first entry's ai_canonname
  std::vector<ResolveEntry> entries;     // in the host's order
  bool operator==(const ResolveReply&) const = default;
};
struct NameInfoReply {
  int32_t err = 0;
  uint16_t gai = 0;  // GaiCode
  uint32_t sys_errno = 0;
  std::string host;     // at most kMaxHostNameLen bytes, empty unless asked for
  std::string service;  // at most kMaxServiceLen bytes, empty unless asked for
  bool operator==(const NameInfoReply&) const = default;
};
struct HostEntReply {
  int32_t err = 0;
  uint16_t herr = 0;                 // HostErr; kOk: family set and 1..kMaxHostAddrs addresses
  uint16_t family = 0;               // h_addrtype: AF_INET (4-byte addresses) or AF_INET6 (16)
  uint32_t sys_errno = 0;            // with HostErr::kInternal only (0 allowed: errno was 0)
  std::string name;                  // h_name
  std::vector<std::string> aliases;  // h_aliases, at most kMaxHostAliases
  std::vector<std::array<uint8_t, 16>> addrs;  // h_addr_list; AF_INET uses bytes 0..3
  bool operator==(const HostEntReply&) const = default;
};

using Reply =
    std::variant<HelloReply, SocketReply, ConnectReply, ReleaseReply, ShutdownReply,
                 GetSockNameReply, GetPeerNameReply, SetSockOptReply, GetSockOptReply, AttachReply,
                 StatsReply, BindReply, ListenReply, ResolveReply, NameInfoReply, HostEntReply>;

MsgType TypeOf(const Request& r);
MsgType TypeOf(const Reply& r);
const char* Name(MsgType t);  // "connect", ...; "unknown" otherwise

// Descriptors that must accompany a message of this type.
int FdsWithRequest(MsgType t);
// Descriptors that accompany this (decoded) reply: 0 when err != 0; an attach reply for a
// listening socket carries none.
int FdsWithReply(const Reply& r);
// The most descriptors any reply of this type can carry (what a receiver makes room for).
int MaxFdsWithReply(MsgType t);

// Encoders produce a complete message (header + body). They never fail for values the
// decoder would accept; callers must not pass out-of-range values (checked by assert).
std::vector<uint8_t> EncodeRequest(uint32_t seq, const Request& r);
std::vector<uint8_t> EncodeReply(uint32_t seq, const Reply& r);

// ---- Listener channel records (xsockd -> library) ----
//
// One accepted connection, sent by xsockd as one SOCK_SEQPACKET packet on a listening
// socket's listener channel, with exactly two descriptors (SCM_RIGHTS): the app end of
// the connection's channel, then its memfd. Fixed size, no header: magic, then fields.
inline constexpr uint32_t kAcceptMagic = 0x414B5358;  // "XSKA" as little-endian bytes
inline constexpr size_t kAcceptRecordSize = 80;
inline constexpr int kFdsWithAcceptRecord = 2;
struct AcceptRecord {
  uint64_t socket_id = 0;
  uint32_t ring_order = 0;  // kMinRingOrder..kMaxRingOrder
  SockAddr local;           // the host socket's getsockname()
  SockAddr peer;            // the host socket's getpeername()
  bool operator==(const AcceptRecord&) const = default;
};
std::vector<uint8_t> EncodeAcceptRecord(const AcceptRecord& r);  // kAcceptRecordSize bytes
// Accepts exactly kAcceptRecordSize bytes; names the bad field like the other decoders.
absl::StatusOr<AcceptRecord> DecodeAcceptRecord(std::span<const uint8_t> bytes);

template <class T>
struct Decoded {
  uint32_t seq = 0;
  T msg;
};

// Decoders accept exactly one complete message. Errors are InvalidArgument with a reason
// naming the field, e.g. "connect.addr.family: 3 is neither AF_INET nor AF_INET6".
absl::StatusOr<Decoded<Request>> DecodeRequest(std::span<const uint8_t> bytes);
absl::StatusOr<Decoded<Reply>> DecodeReply(std::span<const uint8_t> bytes);

}  // namespace xsock::proto
