// A test double of the parts of libxengnttab (xengnttab_* and xengntshr_*),
// libxenevtchn and libxenstore that the Xen transport uses, behind the same XenApi table
// as the real libraries (backend/xen/xen_api.h), so the transport's real code paths run
// in tests without Xen. Both sides of a connection live in one process; each handle
// belongs to the domain the opening thread acts as (ScopedDomain).
//
// What it models, and how faithfully:
// * Grants: xengntshr_share_pages allocates the pages in a memfd; the sharer's mapping
//   and every xengnttab_map_grant_ref(s) mapping of the peer are MAP_SHARED views of the
//   same memfd pages, so both sides see the same memory, as with real grants. A grant is
//   mappable only by the domain it was granted to (else EINVAL), writable mappings of
//   read-only grants fail (EACCES), unknown refs fail (EINVAL). Multi-page maps are
//   virtually contiguous. Unsharing a mapped grant leaves the peer's mapping valid (as
//   gntalloc defers the revocation until the peer unmaps). Unmap notifications
//   (xengntshr_share_page_notify, xengnttab_map_grant_ref_notify): at unshare/unmap the
//   byte at the offset is zeroed and the port signalled; unlike Linux, the port must still
//   be bound then (Linux holds a reference to it).
// * Event channels: ports are per domain, numbered from 1. bind_interdomain needs an
//   unbound port of the remote domain offered to the caller's domain (else EINVAL).
//   As on Xen: binding an interdomain port delivers one spurious event at once;
//   xenevtchn_pending returns a port and leaves it masked until xenevtchn_unmask;
//   notifications while the port is masked or already queued coalesce into one event.
//   The handle's fd (an eventfd) is readable iff an event is queued. It starts blocking,
//   as /dev/xen/evtchn's: the real xenevtchn_pending read()s it and, with nothing queued,
//   waits for the next event (perhaps forever). Users set O_NONBLOCK on xenevtchn_fd and
//   then get EAGAIN; the double aborts with a message when pending is called on an empty
//   blocking handle, so a caller that would hang on real Xen fails loudly here.
// * XenStore: an in-memory tree (writes create missing parents, rm removes subtrees,
//   directory lists children), watches that fire once when registered and then for
//   every write or rm at or below the watched path, delivered through xs_fileno (an
//   eventfd) and xs_check_watch / xs_read_watch (which does not block either: EAGAIN).
//   Returned arrays are one malloc'd block, as the real library's. No permissions and
//   no transactions (the transport uses none).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>

#include "backend/xen/xen_api.h"

namespace xsock::xen_double {

// While alive, handles the calling thread opens belong to `domid`.
class ScopedDomain {
 public:
  explicit ScopedDomain(uint32_t domid);
  ~ScopedDomain();
  ScopedDomain(const ScopedDomain&) = delete;
  ScopedDomain& operator=(const ScopedDomain&) = delete;

 private:
  uint32_t previous_;
};

// The API table backed by the double.
backend::xen::XenApi Api();

// Forgets every node, grant, mapping and port. Call only with no handle open.
void Reset();

// Direct access to the store, as the toolstack (no handle, no domain).
void StoreWrite(const std::string& path, const std::string& value);
std::optional<std::string> StoreRead(const std::string& path);
void StoreRm(const std::string& path);

// Leak checks: grants shared and not unshared, peer mappings not unmapped, bound ports.
size_t LiveShares();
size_t LiveMappings();
size_t LivePorts();

}  // namespace xsock::xen_double
