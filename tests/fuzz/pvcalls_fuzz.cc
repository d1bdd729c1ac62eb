// Fuzzing what a PVCalls backend reads from a frontend (shared/pvcalls.h): command ring
// slots (standard, and with the xsock extension negotiated), command ring and data ring
// indices, XenStore values, and the extension responses a frontend reads. The first byte picks the
// decoder; the rest is its input. Every accepted value is checked against the property
// the caller relies on (an abort is a finding).
#include <netinet/in.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

#include "shared/pvcalls.h"

namespace pv = xsock::pvcalls;

namespace {

void Require(bool ok) {
  if (!ok) std::abort();
}

uint32_t U32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}

// With `ext`, as a backend that negotiated the xsock extension reads it, and the same bytes
// as the extension response a frontend reads (its payload is a peer-written address).
void FuzzRequest(const uint8_t* data, size_t size, bool ext) {
  uint8_t slot[sizeof(pv::Request)] = {};
  std::memcpy(slot, data, size < sizeof(slot) ? size : sizeof(slot));
  const pv::Request r = pv::CopyRequest(slot);
  const pv::Checked c = pv::CheckRequest(r, ext);
  switch (c.verdict) {
    case pv::Verdict::kExecute:
      Require(r.cmd <= pv::kCmdPoll || (ext && pv::IsExtCommand(r.cmd)));
      if (r.cmd == pv::kCmdConnect) Require(r.u.connect.len >= 16 && r.u.connect.flags == 0);
      if (r.cmd == pv::kCmdBind) Require(r.u.bind.len >= 16);
      if (r.cmd == pv::kCmdConnect || r.cmd == pv::kCmdBind) {
        const uint32_t len = r.cmd == pv::kCmdConnect ? r.u.connect.len : r.u.bind.len;
        Require(c.inet.family == AF_INET || (ext && c.inet.family == AF_INET6 && len >= 28));
        uint8_t sa[28];
        const uint32_t n = pv::ToSockaddr(c.inet, sa);
        Require(n == (c.inet.family == AF_INET6 ? 28u : 16u));
        Require(!pv::AddrText(c.inet).empty());
      }
      if (r.cmd == pv::kCmdSocket) {
        Require(r.u.socket.domain == AF_INET || (ext && r.u.socket.domain == AF_INET6));
      }
      if (r.cmd == pv::kCmdExtShutdown) Require(r.u.ext_shutdown.how <= 2);
      if (r.cmd == pv::kCmdExtSetSockOpt || r.cmd == pv::kCmdExtGetSockOpt) {
        const auto& o = r.u.ext_sockopt;
        Require(o.len >= 1 && o.len <= pv::kExtMaxOptLen);
        Require(pv::ExtOptionAllowed(o.level, o.name, r.cmd == pv::kCmdExtSetSockOpt));
      }
      if (r.cmd == pv::kCmdListen) Require(c.backlog <= pv::kMaxBacklog);
      if (r.cmd == pv::kCmdRelease) Require(r.u.release.reuse <= 1);
      break;
    case pv::Verdict::kReject:
      Require(c.error < 0);
      Require(pv::FromWireErrno(c.error) > 0);
      break;
    case pv::Verdict::kGarbage:
      Require(r.cmd == pv::kCmdConnect || r.cmd == pv::kCmdRelease);
      break;
  }
  const pv::Response rsp = pv::MakeResponse(r, c.error);
  Require(rsp.req_id == r.req_id && rsp.cmd == r.cmd && rsp.pad == 0);
  if (ext) {
    // The front's reading of an extension response: len checked before the payload.
    pv::ExtResponse e;
    static_assert(sizeof(e) == sizeof(slot));
    std::memcpy(&e, slot, sizeof(e));
    if (e.len <= sizeof(e.data)) {
      if (auto a = pv::FromSockaddr(e.data, e.len, true)) {
        Require(a->family == AF_INET || a->family == AF_INET6);
        Require(e.len >= (a->family == AF_INET6 ? 28u : 16u));
      }
    }
  }
}

void FuzzRings(const uint8_t* data, size_t size) {
  if (size < 17) return;
  const uint32_t a = U32(data), b = U32(data + 4), c = U32(data + 8), d = U32(data + 12);
  const uint32_t order = 1 + data[16] % pv::kMaxRingOrder;
  const uint32_t bytes = pv::DataRingBytes(order);
  if (auto n = pv::CheckCommandRing(a, b, c)) {
    Require(*n <= pv::kCommandRingSize);
    Require(a - c <= pv::kCommandRingSize);
  }
  if (auto filled = pv::CheckOutRing(a, b, bytes)) {
    Require(*filled <= bytes);
    const pv::Regions r = pv::RingRegions(b, *filled, bytes);
    Require(r.first_offset < bytes && r.first_offset + r.first_len <= bytes);
    Require(r.second_len <= r.first_offset || r.second_len == 0);
    Require(r.first_len + r.second_len == *filled);
  }
  if (auto room = pv::CheckInRing(a, d, c, bytes)) {
    Require(*room <= bytes);
    Require(c - a <= bytes);
    const pv::Regions r = pv::RingRegions(c, *room, bytes);
    Require(r.first_offset + r.first_len <= bytes && r.first_len + r.second_len == *room);
  }
}

void FuzzXenStore(const uint8_t* data, size_t size) {
  const std::string_view s(reinterpret_cast<const char*>(data), size);
  if (auto v = pv::ParseXsUint(s)) Require(std::to_string(*v) == s);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  switch (data[0] % 4) {
    case 0:
      FuzzRequest(data + 1, size - 1, false);
      break;
    case 3:
      FuzzRequest(data + 1, size - 1, true);
      break;
    case 1:
      FuzzRings(data + 1, size - 1);
      break;
    case 2:
      FuzzXenStore(data + 1, size - 1);
      break;
  }
  return 0;
}
