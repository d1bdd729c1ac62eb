// PVCalls version 1 on the wire (Xen's docs/misc/pvcalls.pandoc, xen/io/pvcalls.h):
// the command ring's request and response slots, the indexes page of a data ring, the
// XenStore keys of the handshake, the error convention, and the strict checks a backend
// applies to everything a frontend writes.
//
// The layouts are spelled out here (not included from libxen-dev) so that this file and
// its tests build without libxen-dev; pvcalls.cc static_asserts them against Xen's own
// header whenever that header is present.
//
// Trust model: every byte of a shared page can change while it is being read. A backend
// copies a request out of its slot first (CopyRequest, Xen's RING_COPY_REQUEST) and then
// validates the copy (CheckRequest); it never reads a slot twice. Indices written by the
// peer are checked against the indices the backend keeps privately (CheckCommandRing,
// CheckOutRing, CheckInRing) before anything is copied.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace xsock::pvcalls {

// Commands (xen_pvcalls_request.cmd).
inline constexpr uint32_t kCmdSocket = 0;
inline constexpr uint32_t kCmdConnect = 1;
inline constexpr uint32_t kCmdRelease = 2;
inline constexpr uint32_t kCmdBind = 3;
inline constexpr uint32_t kCmdListen = 4;
inline constexpr uint32_t kCmdAccept = 5;
inline constexpr uint32_t kCmdPoll = 6;

// ---- the xsock extension (docs/xen.md "The xsock extension") ---------------------------
// Negotiated per frontend: the backend publishes kExtFeatureNode = "1" beside `versions`,
// a frontend that wants it writes kExtFrontendNode = "1" before Initialised. Without both,
// these numbers are unknown commands (-ENOTSUPP), as for any standard backend. They lie far
// from the standard 0..6 ("xs" in the top half) so that no future PVCalls command collides.
inline constexpr char kExtFeatureNode[] = "feature-xsock-ext";  // backend directory
inline constexpr char kExtFrontendNode[] = "xsock-ext";         // frontend directory
inline constexpr uint32_t kCmdExtShutdown = 0x78730001;
inline constexpr uint32_t kCmdExtSetSockOpt = 0x78730002;
inline constexpr uint32_t kCmdExtGetSockOpt = 0x78730003;
inline constexpr uint32_t kCmdExtGetSockName = 0x78730004;
inline constexpr uint32_t kCmdExtGetPeerName = 0x78730005;
inline constexpr bool IsExtCommand(uint32_t cmd) {
  return cmd >= kCmdExtShutdown && cmd <= kCmdExtGetPeerName;
}
// Largest option value carried (SO_LINGER's struct linger is 8 bytes).
inline constexpr uint32_t kExtMaxOptLen = 32;
// Extension liveness bytes in the command ring page's header padding (SringHeader::pad),
// set up with Xen's unmap notification: the frontend shares the page with notify offset
// kExtFrontAliveOffset, dom0 maps it with kExtBackAliveOffset, each sets its byte to 1; the
// kernel zeroes it and signals the command ring's event channel when that side unmaps
// the page or its process dies, so the other side learns at once.
inline constexpr uint32_t kExtFrontAliveOffset = 16;
inline constexpr uint32_t kExtBackAliveOffset = 17;
inline void SetAliveByte(void* page, uint32_t offset) {
  __atomic_store_n(static_cast<uint8_t*>(page) + offset, uint8_t{1}, __ATOMIC_RELEASE);
}
inline bool AliveByte(const void* page, uint32_t offset) {
  return __atomic_load_n(static_cast<const uint8_t*>(page) + offset, __ATOMIC_ACQUIRE) != 0;
}

// Grant pages are 4 KiB (XEN_PAGE_SIZE) whatever the host's page size.
inline constexpr size_t kPageSize = 4096;
inline constexpr uint32_t kPageShift = 12;

// XenbusState (xen/io/xenbus.h).
enum class XenbusState : int {
  kUnknown = 0,
  kInitialising = 1,
  kInitWait = 2,
  kInitialised = 3,
  kConnected = 4,
  kClosing = 5,
  kClosed = 6,
  kReconfiguring = 7,
  kReconfigured = 8,
};

// The protocol's XenStore vocabulary.
inline constexpr char kDeviceName[] = "pvcalls";
inline constexpr char kProtocolVersion[] = "1";  // frontend "version", backend "versions"
inline constexpr char kFunctionCalls[] = "1";    // socket..poll
// A data ring of order n spans 2^n grant pages (half `in`, half `out`). The refs fit in
// the indexes page up to order 9; xsockd offers at most this much (Linux's pvcalls-back
// offers 4, XENBUS_MAX_RING_GRANT_ORDER).
inline constexpr uint32_t kMaxRingOrder = 9;
inline constexpr uint32_t kDefaultMaxRingOrder = 4;

// struct xen_pvcalls_request: 64 bytes, little-endian host layout (x86 and Arm guests).
struct Request {
  uint32_t req_id;  // the frontend's cookie, echoed
  uint32_t cmd;
  union {
    struct {
      uint64_t id;
      uint32_t domain;
      uint32_t type;
      uint32_t protocol;
      uint8_t pad[4];
    } socket;
    struct {
      uint64_t id;
      uint8_t addr[28];
      uint32_t len;
      uint32_t flags;
      uint32_t ref;  // grant of the indexes page
      uint32_t evtchn;
      uint8_t pad[4];
    } connect;
    struct {
      uint64_t id;
      uint8_t reuse;
      uint8_t pad[7];
    } release;
    struct {
      uint64_t id;
      uint8_t addr[28];
      uint32_t len;
    } bind;
    struct {
      uint64_t id;
      uint32_t backlog;
      uint8_t pad[4];
    } listen;
    struct {
      uint64_t id;
      uint64_t id_new;
      uint32_t ref;
      uint32_t evtchn;
    } accept;
    struct {
      uint64_t id;
    } poll;
    // Extension requests (only after negotiation).
    struct {
      uint64_t id;
      uint32_t how;  // SHUT_RD, SHUT_WR or SHUT_RDWR
    } ext_shutdown;
    struct {
      uint64_t id;
      uint32_t level;
      uint32_t name;
      uint32_t len;  // 1..kExtMaxOptLen bytes of value (getsockopt: the buffer size)
      uint8_t value[32];
    } ext_sockopt;  // setsockopt and getsockopt
    struct {
      uint64_t id;
    } ext_name;  // getsockname and getpeername
    uint8_t dummy[56];
  } u;
};
static_assert(sizeof(Request) == 64);
static_assert(offsetof(Request, u) == 8 && sizeof(Request{}.u.ext_sockopt) <= 56);

// struct xen_pvcalls_response: 24 bytes.
struct Response {
  uint32_t req_id;
  uint32_t cmd;
  int32_t ret;  // 0 or a negative Linux errno
  uint32_t pad;
  uint64_t id;  // every command echoes one socket id (accept: the listener's)
};
static_assert(sizeof(Response) == 24);

// An extension response: the standard 24 bytes, then a payload in the slot's remaining 40
// bytes (slots are 64 bytes, kSlotSize). getsockopt: the value; getsockname/getpeername: a
// sockaddr_in or sockaddr_in6. len says how many payload bytes count; a frontend copies the
// whole slot once, then checks len <= sizeof(data) before using data.
struct ExtResponse {
  Response base;
  uint32_t len;
  uint8_t pad[4];
  uint8_t data[32];
};
static_assert(sizeof(ExtResponse) == 64);

// The command ring page (DEFINE_RING_TYPES(xen_pvcalls, ...) in one 4 KiB page): the
// sring header, then slots of max(request, response) bytes.
struct SringHeader {
  uint32_t req_prod;
  uint32_t req_event;
  uint32_t rsp_prod;
  uint32_t rsp_event;
  uint8_t pad[48];
};
static_assert(sizeof(SringHeader) == 64);
inline constexpr size_t kSlotSize = 64;
// __RING_SIZE: the largest power of two of slots that fits after the header.
inline constexpr uint32_t kCommandRingSize = 32;
static_assert(sizeof(SringHeader) + kCommandRingSize * kSlotSize <= kPageSize);
static_assert(sizeof(SringHeader) + 2 * kCommandRingSize * kSlotSize > kPageSize);

// struct pvcalls_data_intf, the indexes page of one data ring. ref[] follows ring_order.
struct DataIntf {
  uint32_t in_cons;  // frontend-written
  uint32_t in_prod;  // backend-written
  int32_t in_error;  // backend-written: negative errno; -ENOTCONN after an orderly EOF
  // Extension wake flags (padding in standard PVCalls; see ArmWake below).
  uint32_t ext_fe_in_wake;       // frontend found `in` empty: event when in_prod moves
  uint32_t ext_be_in_room_wake;  // backend found `in` full: event when in_cons moves
  uint8_t pad1[44];
  uint32_t out_cons;              // backend-written
  uint32_t out_prod;              // frontend-written
  int32_t out_error;              // backend-written
  uint32_t ext_fe_out_room_wake;  // frontend found `out` full: event when out_cons moves
  uint32_t ext_be_out_data_wake;  // backend found `out` empty: event when out_prod moves
  uint8_t pad2[44];
  uint32_t ring_order;  // frontend-written, read once at connect/accept
};
// The refs start right after ring_order (offset 132): the spec's "N is maximum 991
// ((4096-132)/4)"; its older diagram with ring_order at 76 predates pad2.
inline constexpr size_t kDataIntfRefOffset = 132;
static_assert(sizeof(DataIntf) == kDataIntfRefOffset);
static_assert(offsetof(DataIntf, in_cons) == 0 && offsetof(DataIntf, in_prod) == 4 &&
              offsetof(DataIntf, in_error) == 8 && offsetof(DataIntf, out_cons) == 64 &&
              offsetof(DataIntf, out_prod) == 68 && offsetof(DataIntf, out_error) == 72 &&
              offsetof(DataIntf, ring_order) == 128);

static_assert(offsetof(DataIntf, ext_fe_in_wake) == 12 &&
              offsetof(DataIntf, ext_fe_out_room_wake) == 76);

// Data-ring notifications. Standard PVCalls: after every update an event (Linux's
// pvcalls-front sleeps until one comes). Under the xsock extension, libxenvchan's rule: a
// side that cannot go on for want of data or room arms the flag for it (ArmWake, a full
// fence after the store) and then checks the ring once more before it sleeps; the other
// side, after moving the index that flag is about, takes it (TakeWake: a full fence, then
// an exchange with 0) and sends an event only if it was armed. Either the sleeper's
// re-check sees the move or the mover sees the flag; both is a harmless extra event.
// Events stay wake-ups, never counted. Error words (in_error, out_error) always notify.
inline void ArmWake(uint32_t* flag) {
  __atomic_store_n(flag, 1u, __ATOMIC_RELAXED);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
}
inline bool TakeWake(uint32_t* flag) {
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  return __atomic_exchange_n(flag, 0u, __ATOMIC_ACQ_REL) != 0;
}
// A pump loop found no data or no room: under the extension, arms `flag` the first time
// and returns true (look once more); false when the loop should stop and wait.
inline bool ArmOnce(bool ext, bool* armed, uint32_t* flag) {
  if (!ext || *armed) return false;
  ArmWake(flag);
  *armed = true;
  return true;
}
// After a pass that moved the index each flag is about (moved_a, moved_b): whether to
// signal the peer. Standard PVCalls: whenever anything moved; extension: only for an
// armed flag (each is taken).
inline bool SignalAfterPass(bool ext, bool moved_a, uint32_t* flag_a, bool moved_b,
                            uint32_t* flag_b) {
  if (!ext) return moved_a || moved_b;
  const bool a = moved_a && TakeWake(flag_a);
  const bool b = moved_b && TakeWake(flag_b);
  return a || b;
}

// Bytes of each of `in` and `out` for a ring of the given order (XEN_FLEX_RING_SIZE).
constexpr uint32_t DataRingBytes(uint32_t ring_order) {
  return uint32_t{1} << (ring_order + kPageShift - 1);
}

// ---- errors ---------------------------------------------------------------------------

// PVCalls carries Linux errno values, negated, in `ret`, in_error and out_error.
// Linux-internal ENOTSUPP, which the spec uses for unimplemented commands.
inline constexpr int32_t kWireENOTSUPP = -524;
// The wire value for a host errno (> 0): its negation, as host and wire are Linux (the
// .cc static_asserts the spec's table against <errno.h>). Values outside Linux's errno
// range become -EIO.
int32_t ToWireErrno(int host_errno);
// The host errno for a wire value: 0 for 0 and positive values, the errno for
// -1..-4095, EOPNOTSUPP for -ENOTSUPP (which user space does not have), EIO otherwise.
int FromWireErrno(int32_t wire);

// ---- requests -------------------------------------------------------------------------

// Copies one slot out of shared memory (once, with a compiler barrier after it), so that
// every later check and use sees the same bytes.
Request CopyRequest(const void* shared_slot);

// What the backend does with a copied request.
enum class Verdict {
  kExecute,  // fields valid: run the command
  kReject,   // answer `error` (negative errno), the frontend stays
  kGarbage,  // a value no conforming frontend writes: cut the frontend off
};

// An address from connect/bind, decoded. AF_INET always; AF_INET6 only under the xsock
// extension (the 28-byte addr field is exactly a sockaddr_in6).
struct InetAddr {
  uint16_t family = 2;     // AF_INET or AF_INET6
  uint16_t port = 0;       // host order
  uint32_t addr_be = 0;    // AF_INET, network order
  uint8_t addr6[16] = {};  // AF_INET6
  uint32_t scope_id = 0;   // AF_INET6 (link-local addresses)
};

struct Checked {
  Verdict verdict = Verdict::kReject;
  int32_t error = 0;        // kReject: the negative errno to answer
  const char* reason = "";  // kReject/kGarbage: why, for the log
  InetAddr inet{};          // connect, bind: the address
  uint32_t backlog = 0;     // listen: clamped to kMaxBacklog
};

inline constexpr uint32_t kMaxBacklog = 4096;

// Validates a copied request. The rules (docs/xen.md has the table):
// * cmd outside 0..6 (and, with `ext`, the extension's commands): kReject with -ENOTSUPP,
//   as the spec says for unimplemented commands;
// * socket: domain AF_INET (with `ext` also AF_INET6), type SOCK_STREAM, protocol 0 or
//   IPPROTO_TCP, else -EAFNOSUPPORT (as Linux's pvcalls-back);
// * connect, bind: len >= 16 (longer is accepted, only 28 bytes exist), family AF_INET;
//   with `ext` also len 28, family AF_INET6; else -EINVAL. connect.flags must be 0
//   (reserved) and release.reuse 0 or 1: other values are kGarbage. Padding is not
//   checked: Linux's frontend reuses slots without clearing them, so padding holds old
//   bytes;
// * extension shutdown: how SHUT_RD, SHUT_WR or SHUT_RDWR, else -EINVAL; set/getsockopt:
//   len 1..kExtMaxOptLen, else -EINVAL, and an option ExtOptionAllowed, else -ENOPROTOOPT.
Checked CheckRequest(const Request& r, bool ext = false);

// The socket options the extension carries: keepalive, buffer sizes, SO_REUSEADDR,
// SO_LINGER, TCP_NODELAY and the keepalive timers, IPV6_V6ONLY; SO_ERROR read only.
bool ExtOptionAllowed(uint32_t level, uint32_t name, bool set);

// A sockaddr for an address (returns its length), and the address of a sockaddr_in or,
// with `ext`, sockaddr_in6 (nullopt for anything else or too short).
uint32_t ToSockaddr(const InetAddr& a, void* storage /* >= 28 bytes */);
std::optional<InetAddr> FromSockaddr(const void* sa, uint32_t len, bool ext);
// "127.0.0.1:80", "[::1]:80".
std::string AddrText(const InetAddr& a);

// The response to a request, with the id field echoed as the spec asks.
Response MakeResponse(const Request& r, int32_t ret);

// ---- ring indices ---------------------------------------------------------------------

// The command ring: the frontend's req_prod against what the backend consumed and
// answered. Requests between rsp_prod_pvt and req_prod can never exceed the ring size
// (RING_REQUEST_PROD_OVERFLOW); returns the number of new requests, or nullopt when the
// index is impossible.
std::optional<uint32_t> CheckCommandRing(uint32_t req_prod, uint32_t req_cons,
                                         uint32_t rsp_prod_pvt);

// `out` (frontend → backend): bytes filled, from the frontend's out_prod and the
// backend's private out_cons; nullopt if out_prod - out_cons exceeds the ring.
std::optional<uint32_t> CheckOutRing(uint32_t out_prod, uint32_t out_cons_private,
                                     uint32_t ring_bytes);

// `in` (backend → frontend): free bytes, from the frontend's in_cons and the backend's
// private in_prod. in_cons may only lie in [last_in_cons, in_prod] (it never moves
// back, never passes the producer); nullopt otherwise.
std::optional<uint32_t> CheckInRing(uint32_t in_cons, uint32_t last_in_cons,
                                    uint32_t in_prod_private, uint32_t ring_bytes);

// The (at most two) contiguous regions of `len` bytes starting at free-running index
// `index` in a ring of ring_bytes (a power of two).
struct Regions {
  size_t first_offset = 0;
  size_t first_len = 0;
  size_t second_len = 0;  // continues at offset 0
};
Regions RingRegions(uint32_t index, uint32_t len, uint32_t ring_bytes);

// ---- XenStore values ------------------------------------------------------------------

// A decimal uint32 as frontends write it: digits only, no sign, no spaces, no leading
// zeros (but "0"), at most 10 digits, within range. XenStore values are guest-written.
std::optional<uint32_t> ParseXsUint(std::string_view value);

// The two directories of one frontend, as the toolstack creates them.
std::string BackendPath(uint32_t backend_domid, uint32_t frontend_domid);
std::string FrontendPath(uint32_t frontend_domid);

}  // namespace xsock::pvcalls
