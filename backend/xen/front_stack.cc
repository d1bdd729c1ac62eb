#include "backend/xen/front_stack.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "backend/fd.h"
#include "backend/log.h"
#include "backend/unix_diag.h"
#include "fmt/format.h"
#include "shared/pvcalls.h"

namespace xsock::backend::xen {
namespace {

using Clock = std::chrono::steady_clock;
using pvcalls::Request;
using pvcalls::Response;

// epoll tokens: kind in the top byte, a socket id below.
enum Kind : uint64_t { kWake = 1, kStore = 2, kEvtchn = 3, kPair = 4 };
uint64_t Token(Kind k, uint64_t id) { return (static_cast<uint64_t>(k) << 56) | id; }
constexpr uint64_t kIdMask = (uint64_t{1} << 56) - 1;

constexpr char kBackendStateToken[] = "front-be-state";
constexpr char kFrontendToken[] = "front-fe";
// The liveness probe releases this id, which no socket ever has.
constexpr uint64_t kProbeId = kIdMask;
// Send queue of the descriptors handed to the server (the kernel doubles it): the bytes
// the front can hold between the backend's pumps and the PVCalls ring.
constexpr int kPairSndBuf = 64 * 1024;
constexpr std::chrono::milliseconds kTick{50};
// Loop iterations of one direction in one pass over a socket.
constexpr int kPassGuard = 64;
// Connections accepted from dom0 and not yet taken by the server, per listener.
constexpr size_t kMaxQueuedAccepts = 16;

uint32_t LoadAcquire(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
int32_t LoadAcquire(const int32_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
void StoreRelease(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
void FullFence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

using pvcalls::AddrText;
using pvcalls::ExtResponse;

bool VersionsHave1(const std::string& list) {
  size_t start = 0;
  while (start <= list.size()) {
    size_t comma = list.find(',', start);
    if (comma == std::string::npos) comma = list.size();
    if (list.compare(start, comma - start, pvcalls::kProtocolVersion) == 0) return true;
    start = comma + 1;
  }
  return false;
}

}  // namespace

// One data ring this front shared with dom0: the indexes page, 2^order data pages (`in`
// then `out`) and an unbound event channel port offered to the backend.
struct DataRing {
  pvcalls::DataIntf* intf = nullptr;
  uint8_t* data = nullptr;
  uint32_t pages = 0;
  uint32_t bytes = 0;  // of each of in and out
  uint32_t indexes_ref = 0;
  uint32_t port = 0;
  // Indices this side owns, kept privately (never read back from the page).
  uint32_t in_cons = 0;
  uint32_t out_prod = 0;
  uint32_t last_out_cons = 0;
};

struct FSock {
  enum class State { kIdle, kConnecting, kConnected, kListening };
  uint64_t id = 0;
  State state = State::kIdle;
  bool remote = false;  // PVCALLS_SOCKET sent (or created by accept)
  UniqueFd b;           // ours; `a` went to the server
  ino_t a_ino = 0;
  uint64_t a_cookie = 0;
  size_t stuffed = 0;    // bytes written from `a` at creation, drained at completion
  int domain = AF_INET;  // AF_INET6 only under the extension
  int so_error = 0;
  int eof_error = 0;
  std::unique_ptr<DataRing> ring;
  pvcalls::InetAddr local{};
  pvcalls::InetAddr peer{};
  bool bound = false;
  bool has_peer = false;
  // Extension: local/peer hold dom0's answer, which cannot change any more (connected, or
  // listening for the local name): asked once.
  bool local_exact = false;
  bool peer_exact = false;
  bool b_readable = false;
  bool b_writable = false;
  bool b_eof = false;         // the server shut `a` for writing or closed it
  bool in_finished = false;   // dom0's in_error forwarded: shutdown(b, SHUT_WR)
  bool out_finished = false;  // dom0's out_error forwarded: shutdown(b, SHUT_RD)
  bool a_gone = false;
  // Extension: the server shut `a` for writing; once `b` reads EOF (every byte before it
  // is in `out`) a SHUTDOWN(SHUT_WR) follows, which dom0 applies when `out` drained.
  bool shut_wr_wanted = false;
  bool shut_wr_sent = false;
  Clock::time_point release_deadline{};
  bool release_sent = false;
  // Listener.
  std::deque<UniqueFd> queue;  // accepted `a` ends waiting for Accept()
  bool token = false;          // one byte queued on `a`: it polls readable
  bool accept_outstanding = false;
  bool accept_retry = false;
  uint32_t accept_req_id = 0;
  std::unique_ptr<FSock> pending_conn;  // the ring and id of the outstanding accept
  uint32_t backlog = 0;
  std::map<std::pair<int, int>, std::string> options;
};

struct FrontStack::Impl {
  enum class Phase { kFind, kWaitInitWait, kWaitConnected, kConnected, kStopped };
  // The whole response slot goes to every handler; only extension responses carry a
  // payload (len checked <= 32 before the handler runs, 0 for standard commands).
  using Handler = std::function<void(int32_t, const ExtResponse&)>;
  struct Pending {
    uint32_t cmd;
    Handler fn;
  };

  XenApi api;
  FrontStackOptions opt;
  xengntshr_handle* gs = nullptr;
  xenevtchn_handle* evt = nullptr;
  struct xs_handle* xs = nullptr;
  int epoll_fd = -1;
  int wake_fd = -1;
  std::thread thread;
  std::atomic<bool> stopping{false};

  mutable std::mutex mu;
  std::condition_variable cv;

  Phase phase = Phase::kFind;
  uint32_t domid = 0;
  std::string front_path;
  std::string back_path;
  uint32_t backend_domid = 0;
  bool watching_back = false;
  std::string last_back_state;
  uint32_t ring_order = 1;
  bool ext = false;              // the xsock extension negotiated in the current handshake
  bool back_alive_seen = false;  // extension: dom0 set its alive byte in the command ring
  pvcalls::SringHeader* sring = nullptr;
  uint32_t ring_ref = 0;
  uint32_t cmd_port = 0;
  uint32_t req_prod_pvt = 0;
  uint32_t rsp_cons = 0;
  uint32_t next_req_id = 1;
  std::map<uint32_t, Pending> handlers;
  uint64_t next_id = 1;
  std::map<ino_t, std::unique_ptr<FSock>> socks;  // by `a`'s inode
  std::unordered_map<uint64_t, FSock*> by_id;
  std::unordered_map<uint32_t, FSock*> by_port;
  std::unordered_set<uint64_t> busy;  // sockets whose last pass stopped at kPassGuard
  bool probe_outstanding = false;
  Clock::time_point probe_sent{};
  Clock::time_point next_probe{};
  Clock::time_point last_sweep{};
  FrontStats stats;

  ~Impl();
  absl::Status Open();
  void Loop();

  // XenStore and the handshake.
  std::optional<std::string> Read(const std::string& path);
  void Write(const std::string& path, const std::string& value);
  void Advance();
  bool ShareCommandRing();
  void FreeCommandRing();
  void BackendGone(const std::string& reason);

  // The command ring.
  uint32_t FreeSlots() const { return pvcalls::kCommandRingSize - (req_prod_pvt - rsp_cons); }
  bool Send(Request r, std::function<void(int32_t)> fn);
  bool SendExt(Request r, Handler fn);  // false without the extension
  bool Push(Request& r, Handler fn);
  // Sends and waits (bounded by call_timeout) for the answer; `out` gets the whole slot.
  int32_t CallSync(std::unique_lock<std::mutex>& lock, const Request& r,
                   ExtResponse* out = nullptr);
  void Collect();
  void OnTick();
  void OnEvtchn();

  // Sockets.
  FSock* Find(int fd);
  std::unique_ptr<DataRing> NewRing();
  void FreeRing(FSock& s);
  bool EnsureRemote(FSock& s);
  void Register(FSock& s);
  void DrainStuffing(FSock& s);
  void OnConnected(uint64_t id, int32_t ret);
  void PostAccept(FSock& l);
  void OnAccepted(uint64_t lid, int32_t ret);
  void OnPair(uint64_t id, uint32_t events);
  void Pass(FSock& s);
  void MaybeSendShutdown(FSock& s);
  int AskName(std::unique_lock<std::mutex>& lock, FSock& s, bool peer, pvcalls::InetAddr* out);
  int Name(std::unique_lock<std::mutex>& lock, int fd, bool peer, sockaddr* addr, socklen_t* len);
  void Corrupt(FSock& s, const std::string& what);
  void Reset(FSock& s, int err);
  void MaybeRelease(FSock& s);
  void Forget(FSock& s);
};

// ---- set-up -------------------------------------------------------------------------------

namespace {
absl::Status Errno(const std::string& what) {
  const int e = errno;
  return absl::UnavailableError(fmt::format("{}: {}", what, ErrnoName(e)));
}
}  // namespace

FrontStack::Impl::~Impl() {
  std::vector<FSock*> all;
  for (auto& [ino, s] : socks) all.push_back(s.get());
  for (FSock* s : all) Forget(*s);
  if (phase == Phase::kConnected || phase == Phase::kWaitConnected) {
    // Tell the backend we are gone: it frees every socket of ours.
    Write(front_path + "/state", std::to_string(static_cast<int>(pvcalls::XenbusState::kClosed)));
  }
  FreeCommandRing();
  if (xs != nullptr) api.xs_close(xs);
  if (evt != nullptr) api.evtchn_close(evt);
  if (gs != nullptr) api.gntshr_close(gs);
  if (epoll_fd >= 0) close(epoll_fd);
  if (wake_fd >= 0) close(wake_fd);
}

absl::Status FrontStack::Impl::Open() {
  gs = api.gntshr_open(nullptr, 0);
  if (gs == nullptr) return Errno("xengntshr_open");
  evt = api.evtchn_open(nullptr, 0);
  if (evt == nullptr) return Errno("xenevtchn_open");
  // xenevtchn_pending read()s this fd: nonblocking, so draining ends with EAGAIN.
  if (const int fl = fcntl(api.evtchn_fd(evt), F_GETFL);
      fl < 0 || fcntl(api.evtchn_fd(evt), F_SETFL, fl | O_NONBLOCK) != 0) {
    return Errno("fcntl O_NONBLOCK on xenevtchn_fd");
  }
  xs = api.xs_open(0);
  if (xs == nullptr) return Errno("xs_open");
  if (opt.domid) {
    domid = *opt.domid;
  } else {
    const auto d = Read("domid");  // relative: this domain's home
    const auto parsed = d ? pvcalls::ParseXsUint(*d) : std::nullopt;
    if (!parsed) return absl::UnavailableError("xs_read domid: no domain id in XenStore");
    domid = *parsed;
  }
  front_path = pvcalls::FrontendPath(domid);
  epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) return Errno("epoll_create1");
  wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd < 0) return Errno("eventfd");
  auto add = [&](int fd, uint64_t token) -> absl::Status {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = token;
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) return Errno("epoll_ctl");
    return absl::OkStatus();
  };
  if (auto s = add(wake_fd, Token(kWake, 0)); !s.ok()) return s;
  if (auto s = add(api.xs_fileno(xs), Token(kStore, 0)); !s.ok()) return s;
  if (auto s = add(api.evtchn_fd(evt), Token(kEvtchn, 0)); !s.ok()) return s;
  if (!api.xs_watch(xs, front_path.c_str(), kFrontendToken)) {
    return Errno("xs_watch " + front_path);
  }
  ring_order = opt.ring_order < 1 ? 1 : opt.ring_order;
  Log(LogLevel::kInfo, "event=front_waiting domid={} device={}", domid, front_path);
  return absl::OkStatus();
}

void FrontStack::Impl::Loop() {
  epoll_event events[64];
  bool again = false;  // sockets left in `busy`: poll without waiting
  while (!stopping.load()) {
    const int n = epoll_wait(epoll_fd, events, 64, again ? 0 : static_cast<int>(kTick.count()));
    std::unique_lock lock(mu);
    for (int i = 0; i < n; ++i) {
      const uint64_t token = events[i].data.u64;
      switch (token >> 56) {
        case kWake: {
          uint64_t v;
          [[maybe_unused]] ssize_t r = read(wake_fd, &v, sizeof(v));
          break;
        }
        case kStore:
          for (int guard = 0; guard < 256; ++guard) {
            char** w = api.xs_check_watch(xs);
            if (w == nullptr) break;
            std::free(w);
          }
          Advance();
          break;
        case kEvtchn:
          OnEvtchn();
          break;
        case kPair:
          OnPair(token & kIdMask, events[i].events);
          break;
      }
    }
    // Sockets with more to move than one pass takes, after everyone else had a turn.
    if (!busy.empty()) {
      const auto ids = std::exchange(busy, {});
      for (uint64_t id : ids) {
        auto it = by_id.find(id);
        if (it != by_id.end() && it->second->state == FSock::State::kConnected) Pass(*it->second);
      }
    }
    OnTick();
    again = !busy.empty();
    lock.unlock();
    cv.notify_all();
  }
}

// ---- XenStore and the handshake -------------------------------------------------------------

std::optional<std::string> FrontStack::Impl::Read(const std::string& path) {
  unsigned int len = 0;
  void* v = api.xs_read(xs, XBT_NULL, path.c_str(), &len);
  if (v == nullptr) return std::nullopt;
  std::string s(static_cast<const char*>(v), len);
  std::free(v);
  return s;
}

void FrontStack::Impl::Write(const std::string& path, const std::string& value) {
  if (!api.xs_write(xs, XBT_NULL, path.c_str(), value.data(),
                    static_cast<unsigned>(value.size()))) {
    Log(LogLevel::kWarn, "event=xs_write_failed path={} errno={}", path, ErrnoName(errno));
  }
}

bool FrontStack::Impl::ShareCommandRing() {
  const int port = api.evtchn_bind_unbound_port(evt, backend_domid);
  if (port < 0) {
    Log(LogLevel::kWarn, "event=front_handshake_failed reason={}",
        Quoted("xenevtchn_bind_unbound_port: " + ErrnoName(errno)));
    return false;
  }
  cmd_port = static_cast<uint32_t>(port);
  // Under the extension with an unmap notification: if this process dies, dom0 finds
  // the alive byte zeroed and an event on the command ring's port.
  sring = static_cast<pvcalls::SringHeader*>(
      ext ? api.gntshr_share_page_notify(gs, backend_domid, &ring_ref, 1,
                                         pvcalls::kExtFrontAliveOffset, cmd_port)
          : api.gntshr_share_pages(gs, backend_domid, 1, &ring_ref, 1));
  if (sring == nullptr) {
    Log(LogLevel::kWarn, "event=front_handshake_failed reason={}",
        Quoted("sharing the command ring: " + ErrnoName(errno)));
    FreeCommandRing();
    return false;
  }
  std::memset(static_cast<void*>(sring), 0, pvcalls::kPageSize);
  sring->req_event = 1;  // SHARED_RING_INIT
  sring->rsp_event = 1;
  if (ext) pvcalls::SetAliveByte(sring, pvcalls::kExtFrontAliveOffset);
  back_alive_seen = false;
  req_prod_pvt = rsp_cons = 0;
  return true;
}

void FrontStack::Impl::FreeCommandRing() {
  // Unshared before the port goes: the unmap notification signals on it.
  if (sring != nullptr) api.gntshr_unshare(gs, sring, 1);
  sring = nullptr;
  if (cmd_port != 0) api.evtchn_unbind(evt, cmd_port);
  cmd_port = 0;
}

void FrontStack::Impl::Advance() {
  if (phase == Phase::kStopped) return;
  if (phase == Phase::kFind) {
    const auto back = Read(front_path + "/backend");
    const auto back_id = Read(front_path + "/backend-id");
    const auto id = back_id ? pvcalls::ParseXsUint(*back_id) : std::nullopt;
    if (!back || back->empty() || !id) return;  // the toolstack has not made the device yet
    back_path = *back;
    backend_domid = *id;
    const std::string state = back_path + "/state";
    watching_back = api.xs_watch(xs, state.c_str(), kBackendStateToken);
    if (!watching_back) {
      Log(LogLevel::kWarn, "event=xs_watch_failed path={} errno={}", state, ErrnoName(errno));
    }
    Log(LogLevel::kInfo, "event=front_device backend={} backend_id={}", back_path, backend_domid);
    Write(front_path + "/state", "1");
    phase = Phase::kWaitInitWait;
  }
  const std::string back_state = Read(back_path + "/state").value_or("");
  if (back_state != last_back_state) {
    Log(LogLevel::kDebug, "event=front_backend_state state={}", Quoted(back_state));
    last_back_state = back_state;
  }
  switch (phase) {
    case Phase::kWaitInitWait: {
      if (back_state != "2") return;
      const auto versions = Read(back_path + "/versions");
      const auto order_text = Read(back_path + "/max-page-order");
      const auto max_order = order_text ? pvcalls::ParseXsUint(*order_text) : std::nullopt;
      if (!versions || !VersionsHave1(*versions) || !max_order || *max_order < 1) {
        Log(LogLevel::kWarn, "event=front_handshake_failed reason={}",
            Quoted(fmt::format("backend versions '{}' max-page-order '{}'", versions.value_or(""),
                               order_text.value_or(""))));
        return;
      }
      ring_order = std::min(std::max(opt.ring_order, uint32_t{1}),
                            std::min(*max_order, pvcalls::kMaxRingOrder));
      // The extension only if this backend offers it; otherwise a standard frontend.
      ext = opt.extension && Read(back_path + "/" + pvcalls::kExtFeatureNode) == "1";
      if (!ShareCommandRing()) return;
      Write(front_path + "/" + pvcalls::kExtFrontendNode, ext ? "1" : "0");
      Write(front_path + "/version", pvcalls::kProtocolVersion);
      Write(front_path + "/ring-ref", std::to_string(ring_ref));
      Write(front_path + "/port", std::to_string(cmd_port));
      Write(front_path + "/state", "3");
      phase = Phase::kWaitConnected;
      return;
    }
    case Phase::kWaitConnected:
      if (back_state == "4") {
        Write(front_path + "/state", "4");
        phase = Phase::kConnected;
        ++stats.handshakes;
        probe_outstanding = false;
        next_probe = Clock::now() + opt.probe_interval;
        Log(LogLevel::kInfo,
            "event=front_connected backend={} ring_ref={} port={} ring_order={} ext={}", back_path,
            ring_ref, cmd_port, ring_order, ext ? 1 : 0);
      } else if (back_state == "5" || back_state == "6") {
        BackendGone("backend state " + back_state + " during the handshake");
      }
      return;
    case Phase::kConnected:
      if (back_state != "4") BackendGone("backend state '" + back_state + "'");
      return;
    default:
      return;
  }
}

void FrontStack::Impl::BackendGone(const std::string& reason) {
  Log(LogLevel::kWarn, "event=front_backend_gone backend={} reason={} sockets={}", back_path,
      Quoted(reason), socks.size());
  ++stats.backend_losses;
  phase = Phase::kWaitInitWait;  // Send() refuses from here on
  // Every outstanding command fails: connects report ENETDOWN, waiters wake.
  auto pending = std::move(handlers);
  handlers.clear();
  for (auto& [req_id, p] : pending) p.fn(-ENETDOWN, ExtResponse{});
  std::vector<FSock*> all;
  for (auto& [ino, s] : socks) all.push_back(s.get());
  for (FSock* s : all) {
    s->remote = false;  // nothing to release on a backend that is gone
    if (s->ring) {
      Reset(*s, ECONNRESET);
    } else if (s->state == FSock::State::kListening) {
      s->pending_conn.reset();
      s->accept_outstanding = false;
      Log(LogLevel::kInfo, "event=front_listener_lost id={}", s->id);
    }
  }
  FreeCommandRing();
  probe_outstanding = false;
  // Start again: the next backend (dom0's xsockd restarted) publishes InitWait.
  Write(front_path + "/state", "1");
}

// ---- the command ring -----------------------------------------------------------------------

bool FrontStack::Impl::Send(Request r, std::function<void(int32_t)> fn) {
  return Push(r, [fn = std::move(fn)](int32_t ret, const ExtResponse&) { fn(ret); });
}

bool FrontStack::Impl::SendExt(Request r, Handler fn) { return ext && Push(r, std::move(fn)); }

bool FrontStack::Impl::Push(Request& r, Handler fn) {
  if (phase != Phase::kConnected || sring == nullptr || FreeSlots() == 0) return false;
  r.req_id = next_req_id++;
  auto* slots = reinterpret_cast<uint8_t*>(sring) + sizeof(pvcalls::SringHeader);
  std::memcpy(slots + (req_prod_pvt & (pvcalls::kCommandRingSize - 1)) * pvcalls::kSlotSize, &r,
              sizeof(r));
  handlers[r.req_id] = Pending{r.cmd, std::move(fn)};
  // RING_PUSH_REQUESTS_AND_CHECK_NOTIFY.
  const uint32_t old = req_prod_pvt;
  const uint32_t now = ++req_prod_pvt;
  StoreRelease(&sring->req_prod, now);
  FullFence();
  const uint32_t event = LoadAcquire(&sring->req_event);
  if (static_cast<uint32_t>(now - event) < static_cast<uint32_t>(now - old)) {
    api.evtchn_notify(evt, cmd_port);
  }
  return true;
}

int32_t FrontStack::Impl::CallSync(std::unique_lock<std::mutex>& lock, const Request& r,
                                   ExtResponse* out) {
  auto result = std::make_shared<std::optional<std::pair<int32_t, ExtResponse>>>();
  Handler fn = [result](int32_t ret, const ExtResponse& rsp) { *result = {ret, rsp}; };
  Request copy = r;
  const bool sent =
      pvcalls::IsExtCommand(r.cmd) ? SendExt(copy, std::move(fn)) : Push(copy, std::move(fn));
  if (!sent) {
    return phase == Phase::kConnected ? -ENOBUFS : -ENETDOWN;
  }
  const auto deadline = Clock::now() + opt.call_timeout;
  cv.wait_until(lock, deadline, [&] { return result->has_value(); });
  if (!result->has_value()) return -ETIMEDOUT;
  if (out != nullptr) *out = (*result)->second;
  return (*result)->first;
}

void FrontStack::Impl::Collect() {
  if (phase != Phase::kConnected || sring == nullptr) return;
  if (ext) {
    // dom0 maps the page with an unmap notification: a zeroed alive byte means its
    // xsockd unmapped it or died (the event that woke us came with it).
    const bool alive = pvcalls::AliveByte(sring, pvcalls::kExtBackAliveOffset);
    if (alive) back_alive_seen = true;
    if (back_alive_seen && !alive) {
      ++stats.backend_unmaps;
      BackendGone("dom0 unmapped the command ring (its xsockd stopped or died)");
      return;
    }
  }
  auto* slots = reinterpret_cast<uint8_t*>(sring) + sizeof(pvcalls::SringHeader);
  for (int guard = 0; guard < 64; ++guard) {
    const uint32_t prod = LoadAcquire(&sring->rsp_prod);
    // The backend cannot answer more than was asked.
    if (prod - rsp_cons > req_prod_pvt - rsp_cons) {
      BackendGone(fmt::format("rsp_prod {} impossible (rsp_cons {}, req_prod {})", prod, rsp_cons,
                              req_prod_pvt));
      return;
    }
    while (rsp_cons != prod) {
      // The whole slot, once: an extension response carries its payload after the 24
      // standard bytes.
      ExtResponse full;
      std::memcpy(&full, slots + (rsp_cons & (pvcalls::kCommandRingSize - 1)) * pvcalls::kSlotSize,
                  sizeof(full));
      asm volatile("" ::: "memory");
      const Response rsp = full.base;
      ++rsp_cons;
      auto it = handlers.find(rsp.req_id);
      if (it == handlers.end() || it->second.cmd != rsp.cmd) {
        Log(LogLevel::kWarn, "event=front_bad_response req_id={} cmd={} ret={}", rsp.req_id,
            rsp.cmd, rsp.ret);
        continue;
      }
      Pending p = std::move(it->second);
      handlers.erase(it);
      // 0 or a negative errno; anything else is not PVCalls.
      int32_t ret = rsp.ret > 0 ? -EIO : rsp.ret;
      if (!pvcalls::IsExtCommand(rsp.cmd)) {
        full.len = 0;  // standard responses end after 24 bytes
      } else if (full.len > sizeof(full.data)) {
        Log(LogLevel::kWarn, "event=front_bad_response req_id={} cmd={} len={}", rsp.req_id,
            rsp.cmd, full.len);
        ret = -EIO;
        full.len = 0;
      }
      p.fn(ret, full);
      if (phase != Phase::kConnected) return;
    }
    // RING_FINAL_CHECK_FOR_RESPONSES: ask for an event at the next response, re-check.
    StoreRelease(&sring->rsp_event, rsp_cons + 1);
    FullFence();
    if (LoadAcquire(&sring->rsp_prod) == rsp_cons) break;
  }
}

void FrontStack::Impl::OnEvtchn() {
  // A pending port only means "look at the shared pages"; events are never counted.
  std::vector<uint32_t> ports;
  for (int guard = 0; guard < 1024; ++guard) {
    const int port = api.evtchn_pending(evt);
    if (port < 0) break;
    api.evtchn_unmask(evt, static_cast<evtchn_port_t>(port));
    ports.push_back(static_cast<uint32_t>(port));
  }
  Collect();
  for (uint32_t port : ports) {
    auto it = by_port.find(port);
    if (it != by_port.end() && it->second->state == FSock::State::kConnected) Pass(*it->second);
  }
}

void FrontStack::Impl::OnTick() {
  const auto now = Clock::now();
  if (phase != Phase::kConnected) {
    Advance();
    return;
  }
  Collect();
  if (phase != Phase::kConnected) return;
  if (probe_outstanding && now - probe_sent > opt.probe_timeout) {
    BackendGone(fmt::format("no answer to the liveness probe in {} ms", opt.probe_timeout.count()));
    return;
  }
  if (!probe_outstanding && now >= next_probe) {
    Request r{};
    r.cmd = pvcalls::kCmdRelease;
    r.u.release.id = kProbeId;
    if (Send(r, [this](int32_t) {
          probe_outstanding = false;
          next_probe = Clock::now() + opt.probe_interval;
        })) {
      probe_outstanding = true;
      probe_sent = now;
    }
  }
  // Releases waiting for dom0 to drain, accepts to retry, and the a-ends that went away
  // while their b-end had already been shut both ways: once per tick, not per event.
  if (now - last_sweep < kTick) return;
  last_sweep = now;
  std::vector<FSock*> all;
  for (auto& [ino, s] : socks) all.push_back(s.get());
  for (FSock* s : all) {
    if (s->state == FSock::State::kListening && s->accept_retry && !s->accept_outstanding) {
      s->accept_retry = false;
      PostAccept(*s);
    }
    if (!s->a_gone && s->in_finished && s->b_eof) {
      if (LookUpUnixSocket(s->a_ino, &s->a_cookie) == UnixPresence::kGone) {
        s->a_gone = true;
        s->release_deadline = now + opt.release_linger;
      }
    }
    if (s->state == FSock::State::kConnected) MaybeSendShutdown(*s);
    if (s->a_gone) MaybeRelease(*s);  // may free s
  }
}

// ---- sockets --------------------------------------------------------------------------------

FSock* FrontStack::Impl::Find(int fd) {
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return nullptr;
  auto it = socks.find(st.st_ino);
  return it == socks.end() ? nullptr : it->second.get();
}

std::unique_ptr<DataRing> FrontStack::Impl::NewRing() {
  auto ring = std::make_unique<DataRing>();
  const uint32_t pages = uint32_t{1} << ring_order;
  void* indexes = api.gntshr_share_pages(gs, backend_domid, 1, &ring->indexes_ref, 1);
  if (indexes == nullptr) return nullptr;
  std::vector<uint32_t> refs(pages);
  void* data = api.gntshr_share_pages(gs, backend_domid, static_cast<int>(pages), refs.data(), 1);
  if (data == nullptr) {
    api.gntshr_unshare(gs, indexes, 1);
    return nullptr;
  }
  const int port = api.evtchn_bind_unbound_port(evt, backend_domid);
  if (port < 0) {
    api.gntshr_unshare(gs, data, pages);
    api.gntshr_unshare(gs, indexes, 1);
    return nullptr;
  }
  std::memset(indexes, 0, pvcalls::kPageSize);
  ring->intf = static_cast<pvcalls::DataIntf*>(indexes);
  ring->intf->ring_order = ring_order;
  std::memcpy(static_cast<uint8_t*>(indexes) + pvcalls::kDataIntfRefOffset, refs.data(),
              pages * sizeof(uint32_t));
  ring->data = static_cast<uint8_t*>(data);
  ring->pages = pages;
  ring->bytes = pvcalls::DataRingBytes(ring_order);
  ring->port = static_cast<uint32_t>(port);
  return ring;
}

void FrontStack::Impl::FreeRing(FSock& s) {
  if (!s.ring) return;
  DataRing& r = *s.ring;
  by_port.erase(r.port);
  api.evtchn_unbind(evt, r.port);
  api.gntshr_unshare(gs, r.data, r.pages);
  api.gntshr_unshare(gs, r.intf, 1);
  s.ring.reset();
}

bool FrontStack::Impl::EnsureRemote(FSock& s) {
  if (s.remote) return true;
  Request r{};
  r.cmd = pvcalls::kCmdSocket;
  r.u.socket.id = s.id;
  r.u.socket.domain = static_cast<uint32_t>(s.domain);
  r.u.socket.type = SOCK_STREAM;
  r.u.socket.protocol = 0;
  const uint64_t id = s.id;
  // The command that follows is executed after it (the ring is ordered) and fails with
  // EBADF if this one did.
  if (!Send(r, [id](int32_t ret) {
        if (ret != 0) Log(LogLevel::kInfo, "event=front_socket_failed id={} ret={}", id, ret);
      })) {
    return false;
  }
  s.remote = true;
  return true;
}

void FrontStack::Impl::Register(FSock& s) {
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = Token(kPair, s.id);
  if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, s.b.get(), &ev) != 0) {
    Log(LogLevel::kWarn, "event=front_epoll_failed id={} errno={}", s.id, ErrnoName(errno));
  }
}

void FrontStack::Impl::DrainStuffing(FSock& s) {
  char buf[16384];
  for (int guard = 0; s.stuffed > 0 && guard < 4096; ++guard) {
    const ssize_t n = read(s.b.get(), buf, std::min(sizeof(buf), s.stuffed));
    if (n > 0) {
      s.stuffed -= static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  s.stuffed = 0;
}

void FrontStack::Impl::OnConnected(uint64_t id, int32_t ret) {
  auto it = by_id.find(id);
  if (it == by_id.end()) return;
  FSock& s = *it->second;
  if (s.state != FSock::State::kConnecting) return;
  if (ret == 0) {
    s.state = FSock::State::kConnected;
    s.so_error = 0;
    Log(LogLevel::kDebug, "event=front_connect_ok id={} dst={}", s.id, AddrText(s.peer));
  } else {
    // dom0 unmapped the ring before answering.
    FreeRing(s);
    s.state = FSock::State::kIdle;
    s.so_error = pvcalls::FromWireErrno(ret);
    Log(LogLevel::kInfo, "event=front_connect_failed id={} dst={} errno={}", s.id, AddrText(s.peer),
        ErrnoName(s.so_error));
  }
  // The result first, then the stuffing goes: `a` turns writable, the server's EPOLLOUT,
  // then its SO_ERROR read finds the result.
  DrainStuffing(s);
  if (s.state == FSock::State::kConnected) {
    s.b_readable = s.b_writable = true;
    Pass(s);
  } else if (s.a_gone) {
    MaybeRelease(s);
  }
}

void FrontStack::Impl::PostAccept(FSock& l) {
  if (l.accept_outstanding || l.a_gone || l.queue.size() >= kMaxQueuedAccepts ||
      l.queue.size() >= std::max<uint32_t>(l.backlog, 1)) {
    return;
  }
  // One slot stays free for the probe and releases.
  if (phase != Phase::kConnected || FreeSlots() < 2) {
    l.accept_retry = true;
    return;
  }
  auto conn = std::make_unique<FSock>();
  conn->id = next_id++;
  conn->ring = NewRing();
  if (!conn->ring) {
    Log(LogLevel::kWarn, "event=front_accept_failed id={} reason={}", l.id,
        Quoted("sharing a data ring: " + ErrnoName(errno)));
    l.accept_retry = true;
    return;
  }
  Request r{};
  r.cmd = pvcalls::kCmdAccept;
  r.u.accept.id = l.id;
  r.u.accept.id_new = conn->id;
  r.u.accept.ref = conn->ring->indexes_ref;
  r.u.accept.evtchn = conn->ring->port;
  const uint64_t lid = l.id;
  const uint32_t req_id = next_req_id;
  if (!Send(r, [this, lid](int32_t ret) { OnAccepted(lid, ret); })) {
    FreeRing(*conn);
    l.accept_retry = true;
    return;
  }
  l.accept_outstanding = true;
  l.accept_req_id = req_id;
  l.pending_conn = std::move(conn);
}

void FrontStack::Impl::OnAccepted(uint64_t lid, int32_t ret) {
  auto it = by_id.find(lid);
  if (it == by_id.end()) return;
  FSock& l = *it->second;
  l.accept_outstanding = false;
  std::unique_ptr<FSock> conn = std::move(l.pending_conn);
  if (!conn) return;
  if (ret != 0) {
    FreeRing(*conn);
    if (ret != -ENETDOWN) {
      Log(LogLevel::kInfo, "event=front_accept_failed id={} errno={}", l.id,
          ErrnoName(pvcalls::FromWireErrno(ret)));
      l.accept_retry = true;  // on the next tick, not in a loop
    }
    return;
  }
  int pair[2];
  struct stat st;
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0) {
    Log(LogLevel::kWarn, "event=front_accept_failed id={} reason={}", l.id,
        Quoted("socketpair: " + ErrnoName(errno)));
    // dom0 has the connection: give it back.
    Request r{};
    r.cmd = pvcalls::kCmdRelease;
    r.u.release.id = conn->id;
    DataRing* raw = conn->ring.release();
    Send(r, [this, raw](int32_t) {
      FSock tmp;
      tmp.ring.reset(raw);
      FreeRing(tmp);
    });
    l.accept_retry = true;
    return;
  }
  UniqueFd a(pair[0]);
  conn->b.reset(pair[1]);
  setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &kPairSndBuf, sizeof(kPairSndBuf));
  fstat(a.get(), &st);
  conn->a_ino = st.st_ino;
  LookUpUnixSocket(conn->a_ino, &conn->a_cookie);
  conn->state = FSock::State::kConnected;
  conn->remote = true;
  conn->domain = l.domain;
  conn->local = l.local;
  conn->bound = true;
  conn->peer.family = static_cast<uint16_t>(l.domain);  // PVCalls v1 does not say who
  conn->has_peer = true;                                // connected (the extension does)
  conn->b_readable = conn->b_writable = true;
  FSock* c = conn.get();
  by_id[c->id] = c;
  by_port[c->ring->port] = c;
  socks[c->a_ino] = std::move(conn);
  Register(*c);
  Log(LogLevel::kDebug, "event=front_accept listener={} id={}", l.id, c->id);
  l.queue.push_back(std::move(a));
  if (!l.token) {
    const char t = 'a';
    if (write(l.b.get(), &t, 1) == 1) l.token = true;
  }
  Pass(*c);
  PostAccept(l);
}

void FrontStack::Impl::OnPair(uint64_t id, uint32_t events) {
  auto it = by_id.find(id);
  if (it == by_id.end()) return;
  FSock& s = *it->second;
  if (events & EPOLLIN) s.b_readable = true;
  if (events & EPOLLOUT) s.b_writable = true;
  if ((events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)) && !s.a_gone) {
    const UnixPresence p = LookUpUnixSocket(s.a_ino, &s.a_cookie);
    // Without sock_diag: a HUP we did not cause ourselves means `a` was closed.
    if (p == UnixPresence::kGone ||
        (p == UnixPresence::kUnknown && (events & EPOLLHUP) && !s.in_finished)) {
      s.a_gone = true;
      s.release_deadline = Clock::now() + opt.release_linger;
      s.b_readable = true;  // what the server wrote before closing is still to be read
    }
  }
  if (s.state == FSock::State::kConnected) Pass(s);
  if (by_id.count(id) && s.a_gone) MaybeRelease(s);
}

void FrontStack::Impl::Corrupt(FSock& s, const std::string& what) {
  Log(LogLevel::kWarn, "event=front_ring_corrupt id={} backend={} what={} action=reset", s.id,
      back_path, Quoted(what));
  Reset(s, ECONNRESET);
  // dom0 keeps the socket until released; the ring is ours to free afterwards.
  if (s.remote && !s.release_sent) {
    Request r{};
    r.cmd = pvcalls::kCmdRelease;
    r.u.release.id = s.id;
    DataRing* raw = s.ring.release();
    if (raw != nullptr) by_port.erase(raw->port);
    s.remote = false;
    if (!Send(r, [this, raw](int32_t) {
          FSock tmp;
          tmp.ring.reset(raw);
          FreeRing(tmp);
        })) {
      FSock tmp;
      tmp.ring.reset(raw);
      FreeRing(tmp);
    }
  }
}

void FrontStack::Impl::Reset(FSock& s, int err) {
  ++stats.sockets_reset;
  if (s.state == FSock::State::kConnecting) {
    FreeRing(s);
    s.state = FSock::State::kIdle;
    s.so_error = err == ECONNRESET ? ENETDOWN : err;
    DrainStuffing(s);
    return;
  }
  // The server's next read sees EOF, and EofError makes it this error.
  s.eof_error = err;
  if (!s.in_finished) {
    shutdown(s.b.get(), SHUT_WR);
    s.in_finished = true;
  }
  s.out_finished = true;
  if (s.remote == false) FreeRing(s);
}

void FrontStack::Impl::Pass(FSock& s) {
  if (!s.ring || s.state != FSock::State::kConnected) return;
  DataRing& r = *s.ring;
  // What this pass did, for the event at its end (pvcalls::ArmWake/TakeWake).
  bool consumed_in = false, produced_out = false, armed_in = false, armed_out = false;
  // in (dom0 → us) → b. Bounded per pass; a socket with more to move is passed again at
  // once after the other events (`busy`).
  int guard = 0;
  for (; guard < kPassGuard; ++guard) {
    const uint32_t prod = LoadAcquire(&r.intf->in_prod);
    const uint32_t avail = prod - r.in_cons;
    if (avail > r.bytes) {
      return Corrupt(
          s, fmt::format("in_prod {} (in_cons {}, ring {} bytes)", prod, r.in_cons, r.bytes));
    }
    if (avail == 0) {
      // Empty: ask for an event at dom0's next byte, then look once more.
      if (pvcalls::ArmOnce(ext, &armed_in, &r.intf->ext_fe_in_wake)) continue;
      break;
    }
    if (s.in_finished || s.a_gone) {
      // Nobody will read these: consume them so that dom0 is not held up.
      r.in_cons = prod;
      StoreRelease(&r.intf->in_cons, r.in_cons);
      consumed_in = true;
      break;
    }
    if (!s.b_writable) break;
    const pvcalls::Regions reg = pvcalls::RingRegions(r.in_cons, avail, r.bytes);
    iovec iov[2] = {{r.data + reg.first_offset, reg.first_len}, {r.data, reg.second_len}};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = reg.second_len != 0 ? 2 : 1;
    const ssize_t n = sendmsg(s.b.get(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      r.in_cons += static_cast<uint32_t>(n);
      StoreRelease(&r.intf->in_cons, r.in_cons);
      stats.bytes_from_dom0 += static_cast<uint64_t>(n);
      consumed_in = true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      s.b_writable = false;
      break;
    }
    // The server shut `a` for reading or closed it: drop what comes.
    s.a_gone = s.a_gone || LookUpUnixSocket(s.a_ino, &s.a_cookie) == UnixPresence::kGone;
    r.in_cons = prod;
    StoreRelease(&r.intf->in_cons, r.in_cons);
    consumed_in = true;
    break;
  }
  bool more = guard == kPassGuard;
  // dom0's end of `in`, after its last byte.
  if (!s.in_finished) {
    const int32_t err = LoadAcquire(&r.intf->in_error);
    if (err != 0 && LoadAcquire(&r.intf->in_prod) == r.in_cons) {
      s.eof_error = err == -ENOTCONN ? 0 : (err > 0 ? ECONNRESET : pvcalls::FromWireErrno(err));
      shutdown(s.b.get(), SHUT_WR);
      s.in_finished = true;
      Log(LogLevel::kDebug, "event=front_in_end id={} errno={}", s.id,
          s.eof_error == 0 ? "eof" : ErrnoName(s.eof_error));
    }
  }
  // b → out (us → dom0).
  for (guard = 0; guard < kPassGuard && s.b_readable && !s.b_eof && !s.out_finished; ++guard) {
    const uint32_t cons = LoadAcquire(&r.intf->out_cons);
    // out_cons only moves forward, and never past what we produced.
    if (static_cast<uint32_t>(cons - r.last_out_cons) >
        static_cast<uint32_t>(r.out_prod - r.last_out_cons)) {
      return Corrupt(s, fmt::format("out_cons {} (out_prod {}, last out_cons {})", cons, r.out_prod,
                                    r.last_out_cons));
    }
    r.last_out_cons = cons;
    const uint32_t room = r.bytes - (r.out_prod - cons);
    if (room == 0) {
      // dom0's event after it consumed brings us back; under the extension only if asked
      // for, then a last look.
      if (pvcalls::ArmOnce(ext, &armed_out, &r.intf->ext_fe_out_room_wake)) continue;
      break;
    }
    const pvcalls::Regions reg = pvcalls::RingRegions(r.out_prod, room, r.bytes);
    uint8_t* out = r.data + r.bytes;
    iovec iov[2] = {{out + reg.first_offset, reg.first_len}, {out, reg.second_len}};
    const ssize_t n = readv(s.b.get(), iov, reg.second_len != 0 ? 2 : 1);
    if (n > 0) {
      r.out_prod += static_cast<uint32_t>(n);
      StoreRelease(&r.intf->out_prod, r.out_prod);
      stats.bytes_to_dom0 += static_cast<uint64_t>(n);
      produced_out = true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      s.b_readable = false;
      break;
    }
    // 0: the server shut `a` for writing or closed it (PVCalls v1 cannot carry a
    // half-close; the extension can).
    s.b_eof = true;
  }
  more = more || guard == kPassGuard;
  MaybeSendShutdown(s);
  if (!s.out_finished && LoadAcquire(&r.intf->out_error) != 0) {
    // dom0 cannot send any more: the server's next send fails with EPIPE.
    shutdown(s.b.get(), SHUT_RD);
    s.out_finished = true;
  }
  // Standard PVCalls: an event after every update; extension: only for what dom0 armed.
  if (pvcalls::SignalAfterPass(ext, consumed_in, &r.intf->ext_be_in_room_wake, produced_out,
                               &r.intf->ext_be_out_data_wake)) {
    api.evtchn_notify(evt, r.port);
    ++stats.events_to_dom0;
  }
  if (more) busy.insert(s.id);
}

void FrontStack::Impl::MaybeSendShutdown(FSock& s) {
  if (!s.shut_wr_wanted || s.shut_wr_sent || !s.b_eof || !s.remote || !ext) return;
  Request r{};
  r.cmd = pvcalls::kCmdExtShutdown;
  r.u.ext_shutdown.id = s.id;
  r.u.ext_shutdown.how = SHUT_WR;
  const uint64_t id = s.id;
  if (!SendExt(r, [id](int32_t ret, const ExtResponse&) {
        if (ret != 0) Log(LogLevel::kInfo, "event=front_shutdown_failed id={} ret={}", id, ret);
      })) {
    return;  // no free slot: the tick tries again
  }
  s.shut_wr_sent = true;
  Log(LogLevel::kDebug, "event=front_shutdown id={} how=wr", s.id);
}

void FrontStack::Impl::MaybeRelease(FSock& s) {
  if (!s.a_gone || s.release_sent) return;
  // dom0 drops a pending connect unanswered at release: wait for its answer first.
  if (s.state == FSock::State::kConnecting) return;
  if (s.state == FSock::State::kConnected && s.ring && !s.out_finished) {
    if (s.b_readable && !s.b_eof) Pass(s);
    if (!by_id.count(s.id) || s.release_sent) return;
    if (s.ring && LoadAcquire(&s.ring->intf->out_cons) != s.ring->out_prod &&
        Clock::now() < s.release_deadline) {
      return;  // dom0 has not taken everything the app wrote before closing
    }
  }
  if (!s.remote || phase != Phase::kConnected) {
    Forget(s);
    return;
  }
  Request r{};
  r.cmd = pvcalls::kCmdRelease;
  r.u.release.id = s.id;
  const uint64_t id = s.id;
  if (!Send(r, [this, id](int32_t) {
        auto it = by_id.find(id);
        if (it == by_id.end()) return;
        FSock& l = *it->second;
        if (l.accept_outstanding) {
          // dom0 dropped the pending accept unanswered (responses come in order, so an
          // answer would have come first): its slot is lost for this connection.
          handlers.erase(l.accept_req_id);
          l.accept_outstanding = false;
          ++stats.leaked_slots;
        }
        Forget(l);
      })) {
    return;  // no free slot: the tick tries again
  }
  s.release_sent = true;
  Log(LogLevel::kDebug, "event=front_release id={}", s.id);
}

void FrontStack::Impl::Forget(FSock& s) {
  FreeRing(s);
  if (s.pending_conn) FreeRing(*s.pending_conn);
  if (s.b.valid()) epoll_ctl(epoll_fd, EPOLL_CTL_DEL, s.b.get(), nullptr);
  by_id.erase(s.id);
  socks.erase(s.a_ino);  // destroys s (and closes queued accepted `a` ends)
}

// ---- FrontStack ---------------------------------------------------------------------------

FrontStack::FrontStack(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

FrontStack::~FrontStack() {
  impl_->stopping.store(true);
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(impl_->wake_fd, &one, sizeof(one));
  if (impl_->thread.joinable()) impl_->thread.join();
}

absl::StatusOr<std::unique_ptr<FrontStack>> FrontStack::Create(const XenApi& api,
                                                               const FrontStackOptions& options) {
  auto impl = std::make_unique<Impl>();
  impl->api = api;
  impl->opt = options;
  if (auto s = impl->Open(); !s.ok()) return s;
  {
    std::lock_guard lock(impl->mu);
    impl->Advance();
  }
  Impl* raw = impl.get();
  std::unique_ptr<FrontStack> stack(new FrontStack(std::move(impl)));
  raw->thread = std::thread([raw] { raw->Loop(); });
  return stack;
}

bool FrontStack::WaitConnected(std::chrono::milliseconds timeout) {
  std::unique_lock lock(impl_->mu);
  return impl_->cv.wait_for(lock, timeout, [&] { return impl_->phase == Impl::Phase::kConnected; });
}

bool FrontStack::Extension() const {
  std::lock_guard lock(impl_->mu);
  return impl_->ext;
}

FrontStats FrontStack::Stats() const {
  std::lock_guard lock(impl_->mu);
  FrontStats s = impl_->stats;
  s.live_sockets = impl_->socks.size();
  return s;
}

int FrontStack::Socket(int domain) {
  std::lock_guard lock(impl_->mu);
  Impl& m = *impl_;
  if (m.phase != Impl::Phase::kConnected) return -ENETDOWN;
  // PVCalls v1: IPv4 stream sockets; the extension adds IPv6.
  if (domain != AF_INET && !(domain == AF_INET6 && m.ext)) return -EAFNOSUPPORT;
  int pair[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, pair) != 0) return -errno;
  UniqueFd a(pair[0]);
  auto s = std::make_unique<FSock>();
  s->b.reset(pair[1]);
  s->id = m.next_id++;
  s->domain = domain;
  // Unwritable until the connect is answered: the send queue is filled (the bytes wait in
  // b's receive queue and are drained at completion).
  setsockopt(a.get(), SOL_SOCKET, SO_SNDBUF, &kPairSndBuf, sizeof(kPairSndBuf));
  std::vector<char> junk(16384, 0);
  for (int guard = 0; guard < 1024; ++guard) {
    const ssize_t n = send(a.get(), junk.data(), junk.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      s->stuffed += static_cast<size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else {
      break;
    }
  }
  struct stat st;
  if (fstat(a.get(), &st) != 0) return -errno;
  s->a_ino = st.st_ino;
  LookUpUnixSocket(s->a_ino, &s->a_cookie);
  FSock* raw = s.get();
  m.by_id[raw->id] = raw;
  m.socks[raw->a_ino] = std::move(s);
  m.Register(*raw);
  return a.release();
}

namespace {
// The address of a connect or bind on a socket of `domain`, as the kernel checks it.
int ParseAddr(const sockaddr* addr, socklen_t len, int domain, pvcalls::InetAddr* out) {
  if (addr == nullptr) return EFAULT;
  const socklen_t need = domain == AF_INET6 ? sizeof(sockaddr_in6) : sizeof(sockaddr_in);
  if (len < need) return EINVAL;
  if (addr->sa_family != domain) return EAFNOSUPPORT;
  const auto a = pvcalls::FromSockaddr(addr, len, true);
  if (!a) return EAFNOSUPPORT;
  *out = *a;
  return 0;
}
}  // namespace

int FrontStack::Connect(int fd, const sockaddr* addr, socklen_t len) {
  std::lock_guard lock(impl_->mu);
  Impl& m = *impl_;
  FSock* s = m.Find(fd);
  if (s == nullptr) return EBADF;
  pvcalls::InetAddr dst;
  if (const int err = ParseAddr(addr, len, s->domain, &dst); err != 0) return err;
  switch (s->state) {
    case FSock::State::kIdle:
      break;
    case FSock::State::kConnecting:
      return EALREADY;
    case FSock::State::kConnected:
      return EISCONN;
    case FSock::State::kListening:
      return EINVAL;
  }
  if (s->in_finished || s->a_gone) return ECONNABORTED;
  if (m.phase != Impl::Phase::kConnected) return ENETDOWN;
  if (m.FreeSlots() < (s->remote ? 2u : 3u)) return ENOBUFS;
  auto ring = m.NewRing();
  if (!ring) return ENOMEM;
  if (!m.EnsureRemote(*s)) {
    s->ring = std::move(ring);
    m.FreeRing(*s);
    return ENOBUFS;
  }
  s->peer = dst;
  s->has_peer = true;
  Request r{};
  r.cmd = pvcalls::kCmdConnect;
  r.u.connect.id = s->id;
  r.u.connect.len = pvcalls::ToSockaddr(dst, r.u.connect.addr);
  r.u.connect.flags = 0;
  r.u.connect.ref = ring->indexes_ref;
  r.u.connect.evtchn = ring->port;
  const uint64_t id = s->id;
  s->ring = std::move(ring);
  if (!m.Send(r, [&m, id](int32_t ret) { m.OnConnected(id, ret); })) {
    m.FreeRing(*s);
    return ENOBUFS;
  }
  m.by_port[s->ring->port] = s;
  s->state = FSock::State::kConnecting;
  Log(LogLevel::kDebug, "event=front_connect id={} dst={}", s->id, AddrText(s->peer));
  return EINPROGRESS;
}

int FrontStack::Bind(int fd, const sockaddr* addr, socklen_t len) {
  std::unique_lock lock(impl_->mu);
  Impl& m = *impl_;
  FSock* s = m.Find(fd);
  if (s == nullptr) return EBADF;
  pvcalls::InetAddr sin;
  if (const int err = ParseAddr(addr, len, s->domain, &sin); err != 0) return err;
  if (s->state != FSock::State::kIdle || s->bound) return EINVAL;
  if (m.phase != Impl::Phase::kConnected) return ENETDOWN;
  if (m.FreeSlots() < 3 || !m.EnsureRemote(*s)) return ENOBUFS;
  Request r{};
  r.cmd = pvcalls::kCmdBind;
  r.u.bind.id = s->id;
  r.u.bind.len = pvcalls::ToSockaddr(sin, r.u.bind.addr);
  const uint64_t id = s->id;
  const int32_t ret = m.CallSync(lock, r);
  auto it = m.by_id.find(id);
  if (it == m.by_id.end()) return EBADF;
  if (ret != 0) return pvcalls::FromWireErrno(ret);
  it->second->bound = true;
  it->second->local = sin;
  return 0;
}

int FrontStack::Listen(int fd, int backlog) {
  std::unique_lock lock(impl_->mu);
  Impl& m = *impl_;
  FSock* s = m.Find(fd);
  if (s == nullptr) return EBADF;
  if (s->state == FSock::State::kListening) return 0;
  if (s->state != FSock::State::kIdle) return EINVAL;
  if (!s->bound) {
    // listen() autobinds; PVCalls needs an explicit bind.
    pvcalls::InetAddr any;
    any.family = static_cast<uint16_t>(s->domain);
    sockaddr_storage ss{};
    const socklen_t any_len = pvcalls::ToSockaddr(any, &ss);
    lock.unlock();
    if (const int err = Bind(fd, reinterpret_cast<const sockaddr*>(&ss), any_len); err != 0) {
      return err;
    }
    lock.lock();
    s = m.Find(fd);
    if (s == nullptr) return EBADF;
  }
  Request r{};
  r.cmd = pvcalls::kCmdListen;
  r.u.listen.id = s->id;
  r.u.listen.backlog = static_cast<uint32_t>(std::max(backlog, 1));
  const uint64_t id = s->id;
  const int32_t ret = m.CallSync(lock, r);
  auto it = m.by_id.find(id);
  if (it == m.by_id.end()) return EBADF;
  if (ret != 0) return pvcalls::FromWireErrno(ret);
  FSock& l = *it->second;
  l.state = FSock::State::kListening;
  l.backlog = static_cast<uint32_t>(std::max(backlog, 1));
  m.DrainStuffing(l);
  Log(LogLevel::kInfo, "event=front_listen id={} addr={} backlog={}", l.id, AddrText(l.local),
      l.backlog);
  m.PostAccept(l);
  return 0;
}

int FrontStack::Accept(int fd) {
  std::lock_guard lock(impl_->mu);
  Impl& m = *impl_;
  FSock* s = m.Find(fd);
  if (s == nullptr) return -EBADF;
  if (s->state != FSock::State::kListening) return -EINVAL;
  if (s->queue.empty()) return -EAGAIN;
  UniqueFd a = std::move(s->queue.front());
  s->queue.pop_front();
  if (s->queue.empty() && s->token) {
    char t;
    if (read(fd, &t, 1) == 1) s->token = false;
  }
  m.PostAccept(*s);
  return a.release();
}

namespace {
int CopyName(const pvcalls::InetAddr& a, sockaddr* addr, socklen_t* len) {
  if (addr == nullptr || len == nullptr) return EFAULT;
  sockaddr_storage ss{};
  const socklen_t full = pvcalls::ToSockaddr(a, &ss);
  std::memcpy(addr, &ss, std::min(*len, full));
  *len = full;
  return 0;
}
}  // namespace

// Under the extension dom0 knows the real names (an ephemeral port, who connected);
// without it, or before dom0 has a host socket, what this side recorded.
int FrontStack::Impl::AskName(std::unique_lock<std::mutex>& lock, FSock& s, bool peer,
                              pvcalls::InetAddr* out) {
  if (!ext || !s.remote || phase != Phase::kConnected) return ENOSYS;
  Request r{};
  r.cmd = peer ? pvcalls::kCmdExtGetPeerName : pvcalls::kCmdExtGetSockName;
  r.u.ext_name.id = s.id;
  ExtResponse rsp{};
  const int32_t ret = CallSync(lock, r, &rsp);
  if (ret != 0) return pvcalls::FromWireErrno(ret);
  const auto a = pvcalls::FromSockaddr(rsp.data, rsp.len, true);
  if (!a) return EIO;
  *out = *a;
  return 0;
}

// getsockname (peer false) and getpeername: dom0's answer under the extension, kept once it
// cannot change (connected; listening, for the local name); else what this side recorded.
int FrontStack::Impl::Name(std::unique_lock<std::mutex>& lock, int fd, bool peer, sockaddr* addr,
                           socklen_t* len) {
  FSock* s = Find(fd);
  if (s == nullptr) return EBADF;
  if (peer && (!s->has_peer || s->state != FSock::State::kConnected)) return ENOTCONN;
  if (peer ? s->peer_exact : s->local_exact) return CopyName(peer ? s->peer : s->local, addr, len);
  const uint64_t id = s->id;
  pvcalls::InetAddr name;
  const int err = AskName(lock, *s, peer, &name);
  // The call waited without the lock: look the socket up again.
  auto it = by_id.find(id);
  if (it == by_id.end()) return EBADF;
  FSock& f = *it->second;
  if (err == 0) {
    const bool fixed =
        f.state == FSock::State::kConnected || (!peer && f.state == FSock::State::kListening);
    (peer ? f.peer : f.local) = name;
    (peer ? f.peer_exact : f.local_exact) = fixed;
    return CopyName(name, addr, len);
  }
  if (peer) return err == ENOTCONN ? ENOTCONN : CopyName(f.peer, addr, len);
  pvcalls::InetAddr local = f.local;
  local.family = static_cast<uint16_t>(f.domain);  // unbound, or connected: v1 does not say
  return CopyName(local, addr, len);
}

int FrontStack::GetSockName(int fd, sockaddr* addr, socklen_t* len) {
  std::unique_lock lock(impl_->mu);
  return impl_->Name(lock, fd, false, addr, len);
}

int FrontStack::GetPeerName(int fd, sockaddr* addr, socklen_t* len) {
  std::unique_lock lock(impl_->mu);
  return impl_->Name(lock, fd, true, addr, len);
}

int FrontStack::Shutdown(int fd, int how) {
  std::lock_guard lock(impl_->mu);
  Impl& m = *impl_;
  FSock* s = m.Find(fd);
  if (s == nullptr) return EBADF;
  // PVCalls v1 has no shutdown: the half-close reaches dom0's peer at release.
  if (!m.ext || s->state != FSock::State::kConnected) return 0;
  if (how == SHUT_RD || how == SHUT_RDWR) {
    // Whatever dom0 still sends is dropped here (b's writes fail), and dom0's host
    // socket is shut for reading too.
    ::shutdown(fd, SHUT_RD);
    Request r{};
    r.cmd = pvcalls::kCmdExtShutdown;
    r.u.ext_shutdown.id = s->id;
    r.u.ext_shutdown.how = SHUT_RD;
    m.SendExt(r, [](int32_t, const ExtResponse&) {});
  }
  if ((how == SHUT_WR || how == SHUT_RDWR) && !s->shut_wr_wanted) {
    // `b` reads EOF after the last byte (its epoll edge wakes the front thread), which
    // then sends SHUTDOWN(SHUT_WR).
    s->shut_wr_wanted = true;
    ::shutdown(fd, SHUT_WR);
  }
  return 0;
}

int FrontStack::SetSockOpt(int fd, int level, int name, const void* value, socklen_t len) {
  std::unique_lock lock(impl_->mu);
  Impl& m = *impl_;
  FSock* s = m.Find(fd);
  if (s == nullptr) return EBADF;
  // Recorded in any case: read back where dom0 cannot be asked.
  s->options[{level, name}] = std::string(static_cast<const char*>(value), len);
  if (!m.ext || len == 0 || len > pvcalls::kExtMaxOptLen ||
      !pvcalls::ExtOptionAllowed(static_cast<uint32_t>(level), static_cast<uint32_t>(name), true)) {
    return 0;  // PVCalls v1 (and options the extension does not carry): not applied
  }
  if (m.phase != Impl::Phase::kConnected || m.FreeSlots() < 2 || !m.EnsureRemote(*s)) {
    return ENOBUFS;
  }
  Request r{};
  r.cmd = pvcalls::kCmdExtSetSockOpt;
  r.u.ext_sockopt.id = s->id;
  r.u.ext_sockopt.level = static_cast<uint32_t>(level);
  r.u.ext_sockopt.name = static_cast<uint32_t>(name);
  r.u.ext_sockopt.len = len;
  std::memcpy(r.u.ext_sockopt.value, value, len);
  const int32_t ret = m.CallSync(lock, r);
  return ret == 0 ? 0 : pvcalls::FromWireErrno(ret);
}

int FrontStack::GetSockOpt(int fd, int level, int name, void* value, socklen_t* len) {
  std::unique_lock lock(impl_->mu);
  Impl& m = *impl_;
  FSock* s = m.Find(fd);
  if (s == nullptr) return EBADF;
  if (value == nullptr || len == nullptr) return EFAULT;
  auto put_int = [&](int v) {
    const socklen_t n = std::min<socklen_t>(*len, sizeof(v));
    std::memcpy(value, &v, n);
    *len = n;
    return 0;
  };
  if (level == SOL_SOCKET) {
    switch (name) {
      case SO_ERROR:
        return put_int(std::exchange(s->so_error, 0));
      case SO_TYPE:
        return put_int(SOCK_STREAM);
      case SO_DOMAIN:
        return put_int(s->domain);
      case SO_PROTOCOL:
        return put_int(IPPROTO_TCP);
      case SO_ACCEPTCONN:
        return put_int(s->state == FSock::State::kListening ? 1 : 0);
      default:
        break;
    }
  }
  if (m.ext && s->remote && m.phase == Impl::Phase::kConnected && *len > 0 &&
      pvcalls::ExtOptionAllowed(static_cast<uint32_t>(level), static_cast<uint32_t>(name), false)) {
    Request r{};
    r.cmd = pvcalls::kCmdExtGetSockOpt;
    r.u.ext_sockopt.id = s->id;
    r.u.ext_sockopt.level = static_cast<uint32_t>(level);
    r.u.ext_sockopt.name = static_cast<uint32_t>(name);
    r.u.ext_sockopt.len = std::min<uint32_t>(*len, pvcalls::kExtMaxOptLen);
    ExtResponse rsp{};
    const int32_t ret = m.CallSync(lock, r, &rsp);
    if (ret != 0) return pvcalls::FromWireErrno(ret);
    const socklen_t n = std::min<socklen_t>(*len, rsp.len);
    std::memcpy(value, rsp.data, n);
    *len = n;
    return 0;
  }
  auto it = s->options.find({level, name});
  if (it != s->options.end()) {
    const socklen_t n = std::min<socklen_t>(*len, static_cast<socklen_t>(it->second.size()));
    std::memcpy(value, it->second.data(), n);
    *len = n;
    return 0;
  }
  if (level == SOL_SOCKET && name == SO_RCVLOWAT) return put_int(1);
  std::memset(value, 0, *len);
  return 0;
}

int FrontStack::EofError(int fd) {
  std::lock_guard lock(impl_->mu);
  FSock* s = impl_->Find(fd);
  return s != nullptr ? s->eof_error : 0;
}

}  // namespace xsock::backend::xen
