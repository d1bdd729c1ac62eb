// libc's numbers <-> the wire codes of the name resolution messages (shared/protocol.h):
// EAI_* results, h_errno values, AI_* and NI_* flags. The wire codes are xsock's own, so
// that the two sides need not agree on libc constants (glibc and musl number EAI_* apart).
// Each To* function maps a libc value onto the wire, each From* back; a value one side
// does not know becomes the closest general code (EAI_FAIL, NO_RECOVERY).
#pragma once

#include <cstdint>
#include <optional>

namespace xsock::proto {

uint16_t GaiToWire(int eai);       // 0 -> 0; unknown -> GaiCode::kFail
int GaiFromWire(uint16_t code);    // GaiCode -> EAI_*; unknown -> EAI_FAIL
uint16_t HostErrToWire(int herr);  // h_errno (NETDB_INTERNAL = -1) -> HostErr
int HostErrFromWire(uint16_t code);

// AI_* / NI_* flags onto the wire; nullopt if `flags` has a bit the wire cannot carry
// (the caller lets the local libc answer, which rejects it the way it always does).
std::optional<uint32_t> AiFlagsToWire(int flags);
int AiFlagsFromWire(uint32_t wire);
std::optional<uint32_t> NiFlagsToWire(int flags);
int NiFlagsFromWire(uint32_t wire);

}  // namespace xsock::proto
