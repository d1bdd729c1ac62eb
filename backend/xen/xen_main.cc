#include "backend/xen/xen_main.h"

#include <unistd.h>

#include <cstdio>

#include "backend/options.h"
#include "backend/xen/xen_api.h"
#include "backend/xen/xen_backend.h"

namespace xsock::backend {

std::string XenUnavailableReason() {
  if (access("/dev/xen/gntdev", F_OK) != 0) return "not running on Xen (/dev/xen/gntdev missing)";
  return "";
}

int RunXenTransport(const DaemonOptions& options) {
  if (const std::string why = XenUnavailableReason(); !why.empty()) {
    std::fprintf(stderr, "xsockd: --transport xen: %s\n", why.c_str());
    return 1;
  }
  xen::XenBackendOptions xo;
  xo.handle_signals = true;
  // ring_order counts bytes per ring locally; PVCalls counts pages for both rings.
  (void)options;
  auto backend = xen::XenBackend::Create(xen::RealXenApi(), xo);
  if (!backend.ok()) {
    std::fprintf(stderr, "xsockd: --transport xen: %s\n",
                 std::string(backend.status().message()).c_str());
    return 1;
  }
  if (auto s = (*backend)->Run(); !s.ok()) {
    std::fprintf(stderr, "xsockd: --transport xen: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  return 0;
}

}  // namespace xsock::backend
