// Fuzzing what a PVCalls backend reads from a frontend (shared/pvcalls.h): command ring
// slots, command ring and data ring indices, XenStore values. The first byte picks the
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

void FuzzRequest(const uint8_t* data, size_t size) {
  uint8_t slot[sizeof(pv::Request)] = {};
  std::memcpy(slot, data, size < sizeof(slot) ? size : sizeof(slot));
  const pv::Request r = pv::CopyRequest(slot);
  const pv::Checked c = pv::CheckRequest(r);
  switch (c.verdict) {
    case pv::Verdict::kExecute:
      Require(r.cmd <= pv::kCmdPoll);
      if (r.cmd == pv::kCmdConnect) Require(r.u.connect.len >= 16 && r.u.connect.flags == 0);
      if (r.cmd == pv::kCmdBind) Require(r.u.bind.len >= 16);
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
  switch (data[0] % 3) {
    case 0:
      FuzzRequest(data + 1, size - 1);
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
