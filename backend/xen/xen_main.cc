#include "backend/xen/xen_main.h"

#include <unistd.h>

#include <cstdio>

#include "backend/options.h"
#include "backend/xen/front_stack.h"
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
  xo.extension = options.xen_extension;
  if (options.xen_ring_order != 0) xo.max_ring_order = options.xen_ring_order;
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

std::string XenFrontUnavailableReason() {
  if (access("/dev/xen", F_OK) != 0) return "not running on Xen (/dev/xen missing)";
  if (access("/dev/xen/gntalloc", F_OK) != 0) {
    return "not running on Xen or xen-gntalloc not loaded (/dev/xen/gntalloc missing)";
  }
  if (access("/dev/xen/evtchn", F_OK) != 0) {
    return "not running on Xen or xen-evtchn not loaded (/dev/xen/evtchn missing)";
  }
  return "";
}

std::unique_ptr<HostStack> StartXenFront(const DaemonOptions& options) {
  if (const std::string why = XenFrontUnavailableReason(); !why.empty()) {
    std::fprintf(stderr, "xsockd: --front xen: %s\n", why.c_str());
    return nullptr;
  }
  xen::FrontStackOptions fo;
  fo.extension = options.xen_extension;
  if (options.xen_ring_order != 0) fo.ring_order = options.xen_ring_order;
  auto front = xen::FrontStack::Create(xen::RealXenApi(), fo);
  if (!front.ok()) {
    std::fprintf(stderr, "xsockd: --front xen: %s\n",
                 std::string(front.status().message()).c_str());
    return nullptr;
  }
  return std::move(*front);
}

}  // namespace xsock::backend
