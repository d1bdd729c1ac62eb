// xsockd's Xen transport: a PVCalls version 1 backend in user space (docs/xen.md).
//
// One thread, one epoll set: the XenStore watch fd, the event channel fd (all ports of
// all frontends), every host socket, a stop eventfd and optionally a signalfd. For each
// frontend domain that the toolstack lists under <backend>/backend/pvcalls/ it performs
// the XenBus handshake, maps the command ring, binds its event channel and serves
// socket, connect, release, bind, listen, accept and poll on host sockets; each
// connected socket's data ring (indexes page and 2^ring_order pages the frontend
// grants) is filled and drained with recvmsg/sendmsg straight into and out of the ring.
//
// Everything reached through `api` (backend/xen/xen_api.h), so tests run this code
// against the test double of the Xen libraries.
#pragma once

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "backend/xen/xen_api.h"
#include "shared/pvcalls.h"

namespace xsock::backend::xen {

struct XenBackendOptions {
  // The domain xsockd runs in (0 in dom0): backend nodes live under its XenStore path.
  uint32_t backend_domid = 0;
  // Largest data ring order offered in max-page-order (1..pvcalls::kMaxRingOrder).
  uint32_t max_ring_order = pvcalls::kDefaultMaxRingOrder;
  // Live sockets per frontend; more socket requests are answered -EMFILE.
  uint32_t max_sockets_per_frontend = 1024;
  // Offer the xsock extension (feature-xsock-ext, docs/xen.md): shutdown, socket options,
  // names, IPv6 for frontends that ask for it. Off: a plain PVCalls v1 backend.
  bool extension = true;
  // Stop cleanly on SIGTERM/SIGINT (the caller has blocked them).
  bool handle_signals = false;
};

// Counters for tests and logs.
struct XenBackendStats {
  uint64_t frontends_connected = 0;
  uint64_t frontends_cut_off = 0;
  uint64_t requests = 0;
  uint64_t data_events = 0;  // events sent on data rings (standard: one per busy pass)
  uint64_t bytes_in = 0;     // host → frontend
  uint64_t bytes_out = 0;    // frontend → host
};

class XenBackend {
 public:
  // Opens the libraries' handles and starts watching XenStore. Errors name the call.
  static absl::StatusOr<std::unique_ptr<XenBackend>> Create(const XenApi& api,
                                                            const XenBackendOptions& options);
  ~XenBackend();
  XenBackend(const XenBackend&) = delete;
  XenBackend& operator=(const XenBackend&) = delete;

  // Serves until Stop() or a handled signal; then releases every frontend.
  absl::Status Run();
  // Thread-safe.
  void Stop();
  // Thread-safe snapshot.
  XenBackendStats Stats() const;

 private:
  struct Impl;
  explicit XenBackend(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace xsock::backend::xen
