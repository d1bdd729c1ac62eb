// `xsockd --transport xen`: runs the PVCalls backend (backend/xen/xen_backend.h) on the
// real Xen libraries until SIGTERM/SIGINT. Built as a stub that refuses to start when
// meson found no libxen-dev.
#pragma once

#include <memory>
#include <string>

namespace xsock::backend {

struct DaemonOptions;
class HostStack;

// Why the Xen transport cannot start on this machine, or "" if it can try: the build has
// no Xen support, or /dev/xen/gntdev (dom0's grant device) is missing.
std::string XenUnavailableReason();

// Returns xsockd's exit status: 0 after a clean stop, 1 when it cannot start (one line
// "xsockd: --transport xen: ..." on stderr).
int RunXenTransport(const DaemonOptions& options);

// `xsockd --front xen` (backend/xen/front_stack.h): why the PVCalls frontend cannot start
// here ("" if it can try): no Xen support in the build, or /dev/xen/gntalloc or
// /dev/xen/evtchn missing (not a Xen guest, or the modules are not loaded).
std::string XenFrontUnavailableReason();

// Starts the frontend on the real Xen libraries (its thread does the XenBus handshake
// and waits for dom0's backend). nullptr after one line "xsockd: --front xen: ..." on
// stderr when it cannot start. Install it with InstallHostStack before the server starts;
// destroy it after the server.
std::unique_ptr<HostStack> StartXenFront(const DaemonOptions& options);

}  // namespace xsock::backend
