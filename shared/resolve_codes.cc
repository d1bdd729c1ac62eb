#include "shared/resolve_codes.h"

#include <netdb.h>

#include <array>
#include <utility>

#include "shared/protocol.h"

namespace xsock::proto {
namespace {

// EAI_IDN_ENCODE is glibc's (under _GNU_SOURCE, which g++ defines).
constexpr std::array<std::pair<int, GaiCode>, 13> kGai = {{
    {EAI_BADFLAGS, GaiCode::kBadFlags},
    {EAI_NONAME, GaiCode::kNoName},
    {EAI_AGAIN, GaiCode::kAgain},
    {EAI_FAIL, GaiCode::kFail},
    {EAI_FAMILY, GaiCode::kFamily},
    {EAI_SOCKTYPE, GaiCode::kSockType},
    {EAI_SERVICE, GaiCode::kService},
    {EAI_MEMORY, GaiCode::kMemory},
    {EAI_SYSTEM, GaiCode::kSystem},
    {EAI_OVERFLOW, GaiCode::kOverflow},
    {EAI_NODATA, GaiCode::kNoData},
    {EAI_ADDRFAMILY, GaiCode::kAddrFamily},
    {EAI_IDN_ENCODE, GaiCode::kIdnEncode},
}};

constexpr std::array<std::pair<int, HostErr>, 5> kHostErr = {{
    {HOST_NOT_FOUND, HostErr::kHostNotFound},
    {TRY_AGAIN, HostErr::kTryAgain},
    {NO_RECOVERY, HostErr::kNoRecovery},
    {NO_DATA, HostErr::kNoData},
    {NETDB_INTERNAL, HostErr::kInternal},
}};

constexpr std::array<std::pair<int, uint32_t>, 9> kAi = {{
    {AI_PASSIVE, kAiPassive},
    {AI_CANONNAME, kAiCanonName},
    {AI_NUMERICHOST, kAiNumericHost},
    {AI_V4MAPPED, kAiV4Mapped},
    {AI_ALL, kAiAll},
    {AI_ADDRCONFIG, kAiAddrConfig},
    {AI_NUMERICSERV, kAiNumericServ},
    {AI_IDN, kAiIdn},
    {AI_CANONIDN, kAiCanonIdn},
}};

constexpr std::array<std::pair<int, uint32_t>, 6> kNi = {{
    {NI_NUMERICHOST, kNiNumericHost},
    {NI_NUMERICSERV, kNiNumericServ},
    {NI_NOFQDN, kNiNoFqdn},
    {NI_NAMEREQD, kNiNameReqd},
    {NI_DGRAM, kNiDgram},
    {NI_IDN, kNiIdn},
}};

template <size_t N>
std::optional<uint32_t> FlagsToWire(int flags, const std::array<std::pair<int, uint32_t>, N>& t) {
  uint32_t wire = 0;
  for (const auto& [libc, bit] : t) {
    if (flags & libc) {
      wire |= bit;
      flags &= ~libc;
    }
  }
  if (flags != 0) return std::nullopt;
  return wire;
}

template <size_t N>
int FlagsFromWire(uint32_t wire, const std::array<std::pair<int, uint32_t>, N>& t) {
  int flags = 0;
  for (const auto& [libc, bit] : t) {
    if (wire & bit) flags |= libc;
  }
  return flags;
}

}  // namespace

uint16_t GaiToWire(int eai) {
  if (eai == 0) return 0;
  for (const auto& [libc, code] : kGai) {
    if (libc == eai) return static_cast<uint16_t>(code);
  }
  return static_cast<uint16_t>(GaiCode::kFail);
}

int GaiFromWire(uint16_t code) {
  if (code == 0) return 0;
  for (const auto& [libc, c] : kGai) {
    if (static_cast<uint16_t>(c) == code) return libc;
  }
  return EAI_FAIL;
}

uint16_t HostErrToWire(int herr) {
  if (herr == 0) return 0;
  for (const auto& [libc, code] : kHostErr) {
    if (libc == herr) return static_cast<uint16_t>(code);
  }
  return static_cast<uint16_t>(HostErr::kNoRecovery);
}

int HostErrFromWire(uint16_t code) {
  if (code == 0) return 0;
  for (const auto& [libc, c] : kHostErr) {
    if (static_cast<uint16_t>(c) == code) return libc;
  }
  return NO_RECOVERY;
}

std::optional<uint32_t> AiFlagsToWire(int flags) { return FlagsToWire(flags, kAi); }
int AiFlagsFromWire(uint32_t wire) { return FlagsFromWire(wire, kAi); }
std::optional<uint32_t> NiFlagsToWire(int flags) { return FlagsToWire(flags, kNi); }
int NiFlagsFromWire(uint32_t wire) { return FlagsFromWire(wire, kNi); }

}  // namespace xsock::proto
