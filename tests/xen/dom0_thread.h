// dom0's side of a test over the Xen double: the real XenBackend serving in a thread as
// domain 0, and the XenStore nodes the toolstack (xl, on real Xen) makes for a domU's
// PVCalls device. Used by the front's tests and its benchmark (bench/xen/).
#pragma once

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "backend/xen/xen_backend.h"
#include "shared/pvcalls.h"
#include "tests/xen/xen_double.h"

namespace xsock::xen_test {

struct Dom0Thread {
  std::unique_ptr<backend::xen::XenBackend> backend;
  std::thread thread;
  std::atomic<bool> run_ok{false};
  explicit Dom0Thread(uint32_t max_order = 4, bool extension = true) {
    xen_double::ScopedDomain as(0);
    backend::xen::XenBackendOptions o;
    o.max_ring_order = max_order;
    o.extension = extension;
    auto b = backend::xen::XenBackend::Create(xen_double::Api(), o);
    REQUIRE(b.ok());
    backend = std::move(*b);
    thread = std::thread([this] { run_ok = backend->Run().ok(); });
  }
  // Stops it (a front sees its backend go away).
  void Stop() {
    if (!backend) return;
    backend->Stop();
    thread.join();
    backend.reset();
  }
  ~Dom0Thread() { Stop(); }
};

// The toolstack's nodes for domain `domu`'s PVCalls device, backend in domain 0.
inline void WriteToolstackNodes(uint32_t domu) {
  const std::string front = pvcalls::FrontendPath(domu);
  const std::string back = pvcalls::BackendPath(0, domu);
  xen_double::StoreWrite(front + "/backend", back);
  xen_double::StoreWrite(front + "/backend-id", "0");
  xen_double::StoreWrite(front + "/state", "1");
  xen_double::StoreWrite(back + "/frontend-id", std::to_string(domu));
  xen_double::StoreWrite(back + "/state", "1");
  xen_double::StoreWrite(back + "/frontend", front);
}

}  // namespace xsock::xen_test
