// Built instead of xen_main.cc when meson found no libxen-dev (-Dxen=auto/disabled).
#include <cstdio>

#include "backend/host_stack.h"
#include "backend/xen/xen_main.h"

namespace xsock::backend {

std::string XenUnavailableReason() {
  return "this xsockd was built without Xen support (libxen-dev missing at build time)";
}

int RunXenTransport(const DaemonOptions&) {
  std::fprintf(stderr, "xsockd: --transport xen: %s\n", XenUnavailableReason().c_str());
  return 1;
}

std::string XenFrontUnavailableReason() { return XenUnavailableReason(); }

std::unique_ptr<HostStack> StartXenFront(const DaemonOptions&) {
  std::fprintf(stderr, "xsockd: --front xen: %s\n", XenFrontUnavailableReason().c_str());
  return nullptr;
}

}  // namespace xsock::backend
