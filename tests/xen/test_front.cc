#include "tests/xen/test_front.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "tests/xen/xen_double.h"

namespace xsock::xen_test {
namespace {

uint32_t LoadAcquire(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
void StoreRelease(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

struct DataPages {
  void* indexes;
  void* data;
  uint32_t pages;
};
std::map<FrontRing*, DataPages> g_pages;

}  // namespace

TestFront::TestFront(const backend::xen::XenApi& api, uint32_t domid, uint32_t backend_domid,
                     bool play_toolstack)
    : api_(api), domid_(domid), backend_domid_(backend_domid), play_toolstack_(play_toolstack) {
  xen_double::ScopedDomain as(domid);
  gs_ = api_.gntshr_open(nullptr, 0);
  evt_ = api_.evtchn_open(nullptr, 0);
  // WaitEvent drains xenevtchn_pending until it fails: that needs a nonblocking fd (the
  // real library read()s it and would block until the next event).
  if (evt_ != nullptr) {
    const int fd = api_.evtchn_fd(evt_);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  }
  xs_ = api_.xs_open(0);
  front_path_ = pvcalls::FrontendPath(domid);
  back_path_ = pvcalls::BackendPath(backend_domid, domid);
}

TestFront::~TestFront() {
  std::vector<uint64_t> ids;
  for (auto& [id, r] : rings_) ids.push_back(id);
  for (uint64_t id : ids) FreeRing(id);
  if (sring_ != nullptr) api_.gntshr_unshare(gs_, sring_, 1);
  if (xs_ != nullptr) api_.xs_close(xs_);
  if (evt_ != nullptr) api_.evtchn_close(evt_);
  if (gs_ != nullptr) api_.gntshr_close(gs_);
}

void TestFront::UnshareCommandRing() {
  if (sring_ != nullptr) api_.gntshr_unshare(gs_, sring_, 1);
  sring_ = nullptr;
}

std::optional<std::string> TestFront::ReadNode(const std::string& path) const {
  if (play_toolstack_) return xen_double::StoreRead(path);
  unsigned int len = 0;
  char* v = static_cast<char*>(api_.xs_read(xs_, XBT_NULL, path.c_str(), &len));
  if (v == nullptr) return std::nullopt;
  std::string out(v, len);
  std::free(v);
  return out;
}

std::string TestFront::BackendState() const { return ReadNode(back_path_ + "/state").value_or(""); }

bool TestFront::WaitBackendState(int state, std::chrono::milliseconds timeout) const {
  const auto deadline = Clock::now() + timeout;
  const std::string want = std::to_string(state);
  while (Clock::now() < deadline) {
    if (BackendState() == want) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(play_toolstack_ ? 1 : 20));
  }
  return false;
}

bool TestFront::Connect() {
  if (gs_ == nullptr || evt_ == nullptr || xs_ == nullptr) return false;
  // The toolstack's part: both directories, Initialising.
  if (play_toolstack_) {
    xen_double::StoreWrite(front_path_ + "/backend", back_path_);
    xen_double::StoreWrite(front_path_ + "/backend-id", std::to_string(backend_domid_));
    xen_double::StoreWrite(front_path_ + "/state", "1");
    xen_double::StoreWrite(back_path_ + "/frontend-id", std::to_string(domid_));
    xen_double::StoreWrite(back_path_ + "/state", "1");
    xen_double::StoreWrite(back_path_ + "/frontend", front_path_);
  }
  if (!WaitBackendState(2)) return false;
  const auto versions = ReadNode(back_path_ + "/versions");
  const auto order = ReadNode(back_path_ + "/max-page-order");
  if (!versions || *versions != "1" || !order) return false;
  max_page_order_ = pvcalls::ParseXsUint(*order).value_or(0);
  // Our part: the command ring and its event channel. Asking for the extension, the ring
  // is shared with an unmap notification and its alive byte set (pvcalls.h).
  const int port = api_.evtchn_bind_unbound_port(evt_, backend_domid_);
  if (port < 0) return false;
  cmd_port_ = static_cast<uint32_t>(port);
  sring_ = static_cast<pvcalls::SringHeader*>(
      request_extension ? api_.gntshr_share_page_notify(gs_, backend_domid_, &ring_ref_, 1,
                                                        pvcalls::kExtFrontAliveOffset, cmd_port_)
                        : api_.gntshr_share_pages(gs_, backend_domid_, 1, &ring_ref_, 1));
  if (sring_ == nullptr) return false;
  std::memset(sring_, 0, pvcalls::kPageSize);
  sring_->req_event = 1;  // SHARED_RING_INIT
  sring_->rsp_event = 1;
  if (request_extension) pvcalls::SetAliveByte(sring_, pvcalls::kExtFrontAliveOffset);
  auto w = [&](const std::string& k, const std::string& v) {
    api_.xs_write(xs_, XBT_NULL, (front_path_ + "/" + k).c_str(), v.data(),
                  static_cast<unsigned>(v.size()));
  };
  if (request_extension) w(pvcalls::kExtFrontendNode, "1");
  ext_ = request_extension && ReadNode(back_path_ + "/" + pvcalls::kExtFeatureNode) == "1";
  w("version", "1");
  w("ring-ref", std::to_string(ring_ref_));
  w("port", std::to_string(cmd_port_));
  w("state", "3");
  if (!WaitBackendState(4)) return false;
  w("state", "4");
  return true;
}

void TestFront::Notify(uint32_t port) { api_.evtchn_notify(evt_, port); }

void TestFront::WaitEvent(std::chrono::milliseconds timeout) {
  pollfd p{api_.evtchn_fd(evt_), POLLIN, 0};
  poll(&p, 1, static_cast<int>(timeout.count()));
  for (;;) {
    const int port = api_.evtchn_pending(evt_);
    if (port < 0) break;
    api_.evtchn_unmask(evt_, static_cast<evtchn_port_t>(port));
  }
}

uint32_t TestFront::Send(pvcalls::Request r) {
  r.req_id = next_req_id_++;
  auto* slots = reinterpret_cast<uint8_t*>(sring_) + sizeof(pvcalls::SringHeader);
  std::memcpy(slots + (req_prod_pvt_ & (pvcalls::kCommandRingSize - 1)) * pvcalls::kSlotSize, &r,
              sizeof(r));
  // RING_PUSH_REQUESTS_AND_CHECK_NOTIFY.
  const uint32_t old = sring_->req_prod;
  const uint32_t now = ++req_prod_pvt_;
  StoreRelease(&sring_->req_prod, now);
  __atomic_thread_fence(__ATOMIC_SEQ_CST);
  const uint32_t event = LoadAcquire(&sring_->req_event);
  if (now - event < now - old) Notify(cmd_port_);
  return r.req_id;
}

void TestFront::Collect() {
  auto* slots = reinterpret_cast<uint8_t*>(sring_) + sizeof(pvcalls::SringHeader);
  for (;;) {
    const uint32_t prod = LoadAcquire(&sring_->rsp_prod);
    while (rsp_cons_ != prod) {
      pvcalls::Response rsp;
      std::memcpy(&rsp, slots + (rsp_cons_ & (pvcalls::kCommandRingSize - 1)) * pvcalls::kSlotSize,
                  sizeof(rsp));
      pvcalls::ExtResponse raw;
      std::memcpy(&raw, slots + (rsp_cons_ & (pvcalls::kCommandRingSize - 1)) * pvcalls::kSlotSize,
                  sizeof(raw));
      responses_[rsp.req_id] = rsp;
      raw_responses_[rsp.req_id] = raw;
      ++rsp_cons_;
    }
    // RING_FINAL_CHECK_FOR_RESPONSES.
    StoreRelease(&sring_->rsp_event, rsp_cons_ + 1);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    if (LoadAcquire(&sring_->rsp_prod) == rsp_cons_) break;
  }
}

std::optional<pvcalls::ExtResponse> TestFront::CallExt(const pvcalls::Request& r,
                                                       std::chrono::milliseconds timeout) {
  const uint32_t id = Send(r);
  if (!Wait(id, timeout)) return std::nullopt;
  auto it = raw_responses_.find(id);
  if (it == raw_responses_.end()) return std::nullopt;
  pvcalls::ExtResponse raw = it->second;
  raw_responses_.erase(it);
  return raw;
}

std::optional<pvcalls::Response> TestFront::Wait(uint32_t req_id,
                                                 std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    Collect();
    auto it = responses_.find(req_id);
    if (it != responses_.end()) {
      pvcalls::Response r = it->second;
      responses_.erase(it);
      return r;
    }
    if (Clock::now() >= deadline) return std::nullopt;
    WaitEvent(std::chrono::milliseconds(20));
  }
}

int32_t TestFront::Socket(uint64_t id) {
  pvcalls::Request r{};
  r.cmd = pvcalls::kCmdSocket;
  r.u.socket.id = id;
  r.u.socket.domain = AF_INET;
  r.u.socket.type = SOCK_STREAM;
  r.u.socket.protocol = 0;
  auto rsp = Call(r);
  return rsp ? rsp->ret : -ETIMEDOUT;
}

namespace {
void FillInet(uint8_t (&addr)[28], uint32_t addr_be, uint16_t port) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(port);
  sin.sin_addr.s_addr = addr_be;
  std::memset(addr, 0, sizeof(addr));
  std::memcpy(addr, &sin, sizeof(sin));
}
}  // namespace

FrontRing* TestFront::NewRing(uint64_t id, uint32_t order) {
  FreeRing(id);
  auto ring = std::make_unique<FrontRing>();
  const uint32_t pages = 1u << order;
  void* indexes = api_.gntshr_share_pages(gs_, backend_domid_, 1, &ring->indexes_ref, 1);
  std::vector<uint32_t> refs(pages);
  void* data =
      api_.gntshr_share_pages(gs_, backend_domid_, static_cast<int>(pages), refs.data(), 1);
  const int port = api_.evtchn_bind_unbound_port(evt_, backend_domid_);
  if (indexes == nullptr || data == nullptr || port < 0) return nullptr;
  std::memset(indexes, 0, pvcalls::kPageSize);
  ring->intf = static_cast<pvcalls::DataIntf*>(indexes);
  ring->intf->ring_order = order;
  std::memcpy(static_cast<uint8_t*>(indexes) + pvcalls::kDataIntfRefOffset, refs.data(),
              pages * sizeof(uint32_t));
  ring->data = static_cast<uint8_t*>(data);
  ring->order = order;
  ring->bytes = pvcalls::DataRingBytes(order);
  ring->port = static_cast<uint32_t>(port);
  FrontRing* raw = ring.get();
  g_pages[raw] = {indexes, data, pages};
  rings_[id] = std::move(ring);
  return raw;
}

void TestFront::FreeRing(uint64_t id) {
  auto it = rings_.find(id);
  if (it == rings_.end()) return;
  FrontRing* raw = it->second.get();
  const DataPages p = g_pages[raw];
  g_pages.erase(raw);
  api_.evtchn_unbind(evt_, raw->port);
  api_.gntshr_unshare(gs_, p.data, p.pages);
  api_.gntshr_unshare(gs_, p.indexes, 1);
  rings_.erase(it);
}

FrontRing* TestFront::Ring(uint64_t id) {
  auto it = rings_.find(id);
  return it == rings_.end() ? nullptr : it->second.get();
}

int32_t TestFront::ConnectTo(uint64_t id, uint16_t port, uint32_t order, uint32_t addr_be) {
  FrontRing* ring = NewRing(id, order);
  if (ring == nullptr) return -ENOMEM;
  pvcalls::Request r{};
  r.cmd = pvcalls::kCmdConnect;
  r.u.connect.id = id;
  FillInet(r.u.connect.addr, addr_be, port);
  r.u.connect.len = sizeof(sockaddr_in);
  r.u.connect.ref = ring->indexes_ref;
  r.u.connect.evtchn = ring->port;
  auto rsp = Call(r);
  const int32_t ret = rsp ? rsp->ret : -ETIMEDOUT;
  if (ret != 0) FreeRing(id);
  return ret;
}

int32_t TestFront::Bind(uint64_t id, uint16_t port, uint32_t addr_be) {
  pvcalls::Request r{};
  r.cmd = pvcalls::kCmdBind;
  r.u.bind.id = id;
  FillInet(r.u.bind.addr, addr_be, port);
  r.u.bind.len = sizeof(sockaddr_in);
  auto rsp = Call(r);
  return rsp ? rsp->ret : -ETIMEDOUT;
}

int32_t TestFront::Listen(uint64_t id, uint32_t backlog) {
  pvcalls::Request r{};
  r.cmd = pvcalls::kCmdListen;
  r.u.listen.id = id;
  r.u.listen.backlog = backlog;
  auto rsp = Call(r);
  return rsp ? rsp->ret : -ETIMEDOUT;
}

uint32_t TestFront::SendAccept(uint64_t id, uint64_t id_new, uint32_t order) {
  FrontRing* ring = NewRing(id_new, order);
  pvcalls::Request r{};
  r.cmd = pvcalls::kCmdAccept;
  r.u.accept.id = id;
  r.u.accept.id_new = id_new;
  r.u.accept.ref = ring != nullptr ? ring->indexes_ref : 0;
  r.u.accept.evtchn = ring != nullptr ? ring->port : 0;
  return Send(r);
}

int32_t TestFront::Release(uint64_t id) {
  pvcalls::Request r{};
  r.cmd = pvcalls::kCmdRelease;
  r.u.release.id = id;
  auto rsp = Call(r);
  // The backend unmapped the ring before answering; now it can go.
  FreeRing(id);
  return rsp ? rsp->ret : -ETIMEDOUT;
}

size_t TestFront::Write(FrontRing& ring, const void* p, size_t n) {
  uint32_t room = ring.bytes - (ring.out_prod - LoadAcquire(&ring.intf->out_cons));
  if (room == 0 && ext_) {
    // The extension's wake rule (pvcalls::ArmWake): ask for an event, look once more.
    pvcalls::ArmWake(&ring.intf->ext_fe_out_room_wake);
    room = ring.bytes - (ring.out_prod - LoadAcquire(&ring.intf->out_cons));
  }
  const size_t len = n < room ? n : room;
  if (len == 0) return 0;
  const auto reg = pvcalls::RingRegions(ring.out_prod, static_cast<uint32_t>(len), ring.bytes);
  uint8_t* out = ring.data + ring.bytes;
  std::memcpy(out + reg.first_offset, p, reg.first_len);
  std::memcpy(out, static_cast<const uint8_t*>(p) + reg.first_len, reg.second_len);
  ring.out_prod += static_cast<uint32_t>(len);
  StoreRelease(&ring.intf->out_prod, ring.out_prod);
  if (!ext_ || pvcalls::TakeWake(&ring.intf->ext_be_out_data_wake)) {
    Notify(ring.port);
    ++data_notifies_;
  }
  return len;
}

size_t TestFront::Read(FrontRing& ring, void* p, size_t n) {
  uint32_t avail = LoadAcquire(&ring.intf->in_prod) - ring.in_cons;
  if (avail == 0 && ext_) {
    pvcalls::ArmWake(&ring.intf->ext_fe_in_wake);
    avail = LoadAcquire(&ring.intf->in_prod) - ring.in_cons;
  }
  const size_t len = n < avail ? n : avail;
  if (len == 0) return 0;
  const auto reg = pvcalls::RingRegions(ring.in_cons, static_cast<uint32_t>(len), ring.bytes);
  std::memcpy(p, ring.data + reg.first_offset, reg.first_len);
  std::memcpy(static_cast<uint8_t*>(p) + reg.first_len, ring.data, reg.second_len);
  ring.in_cons += static_cast<uint32_t>(len);
  StoreRelease(&ring.intf->in_cons, ring.in_cons);
  if (!ext_ || pvcalls::TakeWake(&ring.intf->ext_be_in_room_wake)) {
    Notify(ring.port);
    ++data_notifies_;
  }
  return len;
}

}  // namespace xsock::xen_test
