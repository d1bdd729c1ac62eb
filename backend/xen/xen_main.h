// `xsockd --transport xen`: runs the PVCalls backend (backend/xen/xen_backend.h) on the
// real Xen libraries until SIGTERM/SIGINT. Built as a stub that refuses to start when
// meson found no libxen-dev.
#pragma once

#include <string>

namespace xsock::backend {

struct DaemonOptions;

// Why the Xen transport cannot start on this machine, or "" if it can try: the build has
// no Xen support, or /dev/xen/gntdev (dom0's grant device) is missing.
std::string XenUnavailableReason();

// Returns xsockd's exit status: 0 after a clean stop, 1 when it cannot start (one line
// "xsockd: --transport xen: ..." on stderr).
int RunXenTransport(const DaemonOptions& options);

}  // namespace xsock::backend
