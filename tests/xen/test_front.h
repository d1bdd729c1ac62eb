// A small PVCalls frontend for tests, written against the XenApi table (so it runs on
// the test double): it plays the toolstack (creates both XenStore directories), does the
// frontend half of the XenBus handshake, shares the command ring and data rings with
// xengntshr, and uses event channels the way Linux's pvcalls-front does (notify after
// every ring update; treat an event only as "look again"). It also exposes the shared
// pages so tests can behave like a hostile frontend.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "backend/xen/xen_api.h"
#include "shared/pvcalls.h"

namespace xsock::xen_test {

using Clock = std::chrono::steady_clock;
inline constexpr std::chrono::milliseconds kWait{10000};

// One data ring the frontend shared (indexes page + 2^order pages).
struct FrontRing {
  pvcalls::DataIntf* intf = nullptr;
  uint8_t* data = nullptr;
  uint32_t order = 0;
  uint32_t bytes = 0;  // of each of in and out
  uint32_t indexes_ref = 0;
  uint32_t port = 0;  // our end
  uint32_t out_prod = 0;
  uint32_t in_cons = 0;
};

class TestFront {
 public:
  // play_toolstack: write the toolstack's XenStore nodes into the double (tests); false on
  // real Xen, where xl wrote them and the frontend reads through its own xs handle.
  TestFront(const backend::xen::XenApi& api, uint32_t domid, uint32_t backend_domid = 0,
            bool play_toolstack = true);
  ~TestFront();
  TestFront(const TestFront&) = delete;
  TestFront& operator=(const TestFront&) = delete;

  // Toolstack nodes + handshake; true once the backend is Connected.
  bool Connect();
  uint32_t domid() const { return domid_; }
  uint32_t max_page_order() const { return max_page_order_; }
  std::string BackendState() const;
  bool WaitBackendState(int state, std::chrono::milliseconds timeout = kWait) const;

  // Commands. Send returns the req_id; Wait waits for its response.
  uint32_t Send(pvcalls::Request r);
  std::optional<pvcalls::Response> Wait(uint32_t req_id, std::chrono::milliseconds timeout = kWait);
  std::optional<pvcalls::Response> Call(const pvcalls::Request& r,
                                        std::chrono::milliseconds timeout = kWait) {
    return Wait(Send(r), timeout);
  }
  // Extension commands: the whole 64-byte response slot, copied once.
  std::optional<pvcalls::ExtResponse> CallExt(const pvcalls::Request& r,
                                              std::chrono::milliseconds timeout = kWait);
  // Ask for the xsock extension (written before Initialised) in Connect.
  bool request_extension = false;
  // Whether it was negotiated (the backend offered it too): the data rings then follow the
  // extension's wake rule (pvcalls::ArmWake / TakeWake) instead of notifying every update.
  bool extension() const { return ext_; }
  // Events sent on data rings by Write and Read.
  uint64_t data_notifies() const { return data_notifies_; }
  int32_t Socket(uint64_t id);
  // Shares a data ring of `order` and connects; the ring is kept under `id`.
  int32_t ConnectTo(uint64_t id, uint16_t port, uint32_t order = 4, uint32_t addr_be = 0x0100007f);
  int32_t Bind(uint64_t id, uint16_t port, uint32_t addr_be = 0x0100007f);
  int32_t Listen(uint64_t id, uint32_t backlog = 16);
  // Sends accept with a freshly shared ring for id_new; returns the req_id.
  uint32_t SendAccept(uint64_t id, uint64_t id_new, uint32_t order = 4);
  int32_t Release(uint64_t id);

  FrontRing* Ring(uint64_t id);
  // Moves bytes through a ring without blocking; return how many.
  size_t Write(FrontRing& ring, const void* p, size_t n);
  size_t Read(FrontRing& ring, void* p, size_t n);
  // Waits for any event (or the timeout), then unmasks what came.
  void WaitEvent(std::chrono::milliseconds timeout);
  void Notify(uint32_t port);

  // As if this frontend's process died: the command ring is unshared (its unmap
  // notification fires) and nothing is written to XenStore.
  void UnshareCommandRing();

  // The raw command ring, for hostile tests.
  pvcalls::SringHeader* sring() { return sring_; }
  uint32_t req_prod_pvt() const { return req_prod_pvt_; }
  uint32_t cmd_port() const { return cmd_port_; }

 private:
  FrontRing* NewRing(uint64_t id, uint32_t order);
  void FreeRing(uint64_t id);
  void Collect();
  std::optional<std::string> ReadNode(const std::string& path) const;

  backend::xen::XenApi api_;
  uint32_t domid_;
  uint32_t backend_domid_;
  bool play_toolstack_;
  bool ext_ = false;
  uint64_t data_notifies_ = 0;
  std::string front_path_;
  std::string back_path_;
  xengntshr_handle* gs_ = nullptr;
  xenevtchn_handle* evt_ = nullptr;
  struct xs_handle* xs_ = nullptr;
  pvcalls::SringHeader* sring_ = nullptr;
  uint32_t ring_ref_ = 0;
  uint32_t cmd_port_ = 0;
  uint32_t max_page_order_ = 0;
  uint32_t req_prod_pvt_ = 0;
  uint32_t rsp_cons_ = 0;
  uint32_t next_req_id_ = 1;
  std::map<uint32_t, pvcalls::Response> responses_;
  std::map<uint32_t, pvcalls::ExtResponse> raw_responses_;
  std::map<uint64_t, std::unique_ptr<FrontRing>> rings_;
};

}  // namespace xsock::xen_test
