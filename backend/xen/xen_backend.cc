#include "backend/xen/xen_backend.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/log.h"
#include "fmt/format.h"

namespace xsock::backend::xen {
namespace {

using pvcalls::Request;
using pvcalls::Response;
using pvcalls::XenbusState;

constexpr char kBackendWatchToken[] = "pvcalls-backend";
constexpr char kFrontendTokenPrefix[] = "fe:";

// epoll tokens: kind in the top byte, an id below.
enum Kind : uint64_t { kStop = 1, kSignal = 2, kStore = 3, kEvtchn = 4, kHost = 5 };
uint64_t Token(Kind k, uint64_t id) { return (static_cast<uint64_t>(k) << 56) | id; }

// Shared-memory words: the peer reads and writes them concurrently.
uint32_t LoadAcquire(const uint32_t* p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
void StoreRelease(uint32_t* p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
void StoreRelease(int32_t* p, int32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
void FullFence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }

using pvcalls::AddrText;

// A sockaddr of an address from the wire.
struct HostAddr {
  sockaddr_storage ss{};
  socklen_t len = 0;
  explicit HostAddr(const pvcalls::InetAddr& a) : len(pvcalls::ToSockaddr(a, &ss)) {}
  const sockaddr* sa() const { return reinterpret_cast<const sockaddr*>(&ss); }
};

int NewHostSocket(int domain) {
  return socket(domain, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_TCP);
}

}  // namespace

struct Frontend;

// One PVCalls socket of one frontend.
struct XenSocket {
  enum class State { kIdle, kBound, kListening, kConnecting, kConnected };
  uint64_t id = 0;      // the frontend's id
  uint64_t serial = 0;  // ours, unique, for epoll tokens
  Frontend* fe = nullptr;
  State state = State::kIdle;
  int domain = AF_INET;  // AF_INET6 only under the extension
  int fd = -1;
  bool registered = false;
  uint32_t epoll_events = 0;
  // Listener: the request waiting for a connection (at most one of each).
  std::optional<Request> pending_accept;
  std::optional<Request> pending_poll;
  // Connecting: the connect request to answer.
  std::optional<Request> pending_connect;
  pvcalls::InetAddr peer{};
  // Data ring (connecting, connected).
  pvcalls::DataIntf* intf = nullptr;
  uint8_t* data = nullptr;
  uint32_t pages = 0;
  uint32_t ring_bytes = 0;
  uint32_t port = 0;  // our end of the socket's event channel
  // Indices this side owns, kept privately: the shared copies are never read back.
  uint32_t in_prod = 0;
  uint32_t out_cons = 0;
  uint32_t last_in_cons = 0;
  bool in_done = false;   // in_error written: nothing more goes into `in`
  bool out_done = false;  // out_error written: nothing more is taken from `out`
  bool host_writable = true;
  // Extension: a SHUTDOWN(SHUT_WR/RDWR) waiting for `out` to drain, so it never overtakes
  // bytes the frontend produced before it.
  std::optional<Request> pending_shutdown;
  uint64_t bytes_in = 0;
  uint64_t bytes_out = 0;
};

struct Frontend {
  uint32_t domid = 0;
  std::string back;   // our directory for it
  std::string front;  // its directory
  std::string token;
  bool watching = false;
  bool connected = false;
  bool cut_off = false;
  bool ext = false;  // the xsock extension was negotiated
  XenbusState published = XenbusState::kUnknown;
  void* ring_page = nullptr;
  uint32_t port = 0;
  uint32_t req_cons = 0;
  uint32_t rsp_prod_pvt = 0;
  uint32_t rsp_prod_published = 0;
  bool responses_unpushed = false;
  std::map<uint64_t, std::unique_ptr<XenSocket>> sockets;
};

struct XenBackend::Impl {
  XenApi api;
  XenBackendOptions options;
  xengnttab_handle* gnt = nullptr;
  xenevtchn_handle* evt = nullptr;
  struct xs_handle* xs = nullptr;
  int epoll_fd = -1;
  int stop_fd = -1;
  int signal_fd = -1;
  std::string backend_root;
  std::map<uint32_t, std::unique_ptr<Frontend>> frontends;
  // Our event channel ports: port → (frontend domid, socket serial; 0 = command ring).
  std::unordered_map<uint32_t, std::pair<uint32_t, uint64_t>> ports;
  std::unordered_map<uint64_t, XenSocket*> by_serial;
  uint64_t next_serial = 1;
  mutable std::mutex stats_mu;
  XenBackendStats stats;
  // Counted on every data-ring event: kept out of stats_mu, merged by Stats().
  std::atomic<uint64_t> data_events{0};

  ~Impl();
  absl::Status Open();
  absl::Status Run();

  // XenStore.
  void OnStore();
  void Rescan();
  void OnFrontendState(Frontend& fe);
  std::optional<std::string> Read(const std::string& path);
  void Write(const std::string& path, const std::string& value);
  void Publish(Frontend& fe, XenbusState s);
  bool ConnectFrontend(Frontend& fe);
  void Teardown(Frontend& fe);
  void CutOff(Frontend& fe, const std::string& reason);
  void Forget(uint32_t domid);

  // Events.
  void OnEvtchn();
  void OnHost(uint64_t serial, uint32_t events);

  // Command ring.
  void ServeCommands(Frontend& fe);
  void Execute(Frontend& fe, const Request& r);
  void Respond(Frontend& fe, const Request& r, int32_t ret);
  void PushResponses(Frontend& fe);
  void CmdSocket(Frontend& fe, const Request& r);
  void CmdConnect(Frontend& fe, const Request& r, const pvcalls::Checked& c);
  void CmdRelease(Frontend& fe, const Request& r);
  void CmdBind(Frontend& fe, const Request& r, const pvcalls::Checked& c);
  void CmdListen(Frontend& fe, const Request& r, const pvcalls::Checked& c);
  void CmdAccept(Frontend& fe, const Request& r);
  void CmdPoll(Frontend& fe, const Request& r);
  // The xsock extension.
  void ExecuteExt(Frontend& fe, const Request& r);
  void RespondExt(Frontend& fe, const Request& r, int32_t ret, const void* data, uint32_t len);
  void CmdExtShutdown(Frontend& fe, const Request& r);
  int32_t ApplyShutdown(XenSocket& s, uint32_t how);
  void CmdExtSockOpt(Frontend& fe, const Request& r);
  void CmdExtName(Frontend& fe, const Request& r);

  // Sockets.
  XenSocket* Find(Frontend& fe, uint64_t id);
  XenSocket* NewSocket(Frontend& fe, uint64_t id);
  int32_t MapDataRing(Frontend& fe, XenSocket& s, uint32_t ref, uint32_t evtchn);
  void UnmapDataRing(XenSocket& s);
  void SetInterest(XenSocket& s, uint32_t events);
  void CloseHost(XenSocket& s);
  void FreeSocket(Frontend& fe, uint64_t id);
  void FinishConnect(XenSocket& s);
  void ServeListener(XenSocket& s);
  // One pass over a connected socket: host → in, out → host; notifies once if anything
  // the frontend can see changed. Returns false if the frontend was cut off.
  bool Pass(XenSocket& s);
};

// ---- set-up -------------------------------------------------------------------------------

XenBackend::Impl::~Impl() {
  std::vector<uint32_t> domids;
  for (auto& [d, fe] : frontends) domids.push_back(d);
  for (uint32_t d : domids) Forget(d);
  if (xs != nullptr) api.xs_close(xs);
  if (evt != nullptr) api.evtchn_close(evt);
  if (gnt != nullptr) api.gnttab_close(gnt);
  if (epoll_fd >= 0) close(epoll_fd);
  if (stop_fd >= 0) close(stop_fd);
  if (signal_fd >= 0) close(signal_fd);
}

absl::Status Errno(const std::string& what) {
  const int e = errno;
  return absl::UnavailableError(fmt::format("{}: {}", what, ErrnoName(e)));
}

absl::Status XenBackend::Impl::Open() {
  gnt = api.gnttab_open(nullptr, 0);
  if (gnt == nullptr) return Errno("xengnttab_open");
  evt = api.evtchn_open(nullptr, 0);
  if (evt == nullptr) return Errno("xenevtchn_open");
  // xenevtchn_pending read()s this fd: nonblocking, so draining the pending ports after
  // epoll ends with EAGAIN instead of blocking the loop until the next event.
  if (const int fl = fcntl(api.evtchn_fd(evt), F_GETFL);
      fl < 0 || fcntl(api.evtchn_fd(evt), F_SETFL, fl | O_NONBLOCK) != 0) {
    return Errno("fcntl O_NONBLOCK on xenevtchn_fd");
  }
  xs = api.xs_open(0);
  if (xs == nullptr) return Errno("xs_open");
  epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (epoll_fd < 0) return Errno("epoll_create1");
  stop_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (stop_fd < 0) return Errno("eventfd");
  auto add = [&](int fd, uint64_t token) -> absl::Status {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = token;
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) return Errno("epoll_ctl");
    return absl::OkStatus();
  };
  if (auto s = add(stop_fd, Token(kStop, 0)); !s.ok()) return s;
  if (auto s = add(api.xs_fileno(xs), Token(kStore, 0)); !s.ok()) return s;
  if (auto s = add(api.evtchn_fd(evt), Token(kEvtchn, 0)); !s.ok()) return s;
  if (options.handle_signals) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    signal_fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (signal_fd < 0) return Errno("signalfd");
    if (auto s = add(signal_fd, Token(kSignal, 0)); !s.ok()) return s;
  }
  backend_root =
      fmt::format("/local/domain/{}/backend/{}", options.backend_domid, pvcalls::kDeviceName);
  if (!api.xs_watch(xs, backend_root.c_str(), kBackendWatchToken)) {
    return Errno("xs_watch " + backend_root);
  }
  Log(LogLevel::kInfo, "event=xen_listening path={} max_ring_order={}", backend_root,
      options.max_ring_order);
  return absl::OkStatus();
}

absl::Status XenBackend::Impl::Run() {
  epoll_event events[64];
  for (;;) {
    const int n = epoll_wait(epoll_fd, events, 64, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Errno("epoll_wait");
    }
    for (int i = 0; i < n; ++i) {
      const uint64_t token = events[i].data.u64;
      const uint64_t kind = token >> 56;
      const uint64_t id = token & ((uint64_t{1} << 56) - 1);
      switch (kind) {
        case kStop:
          Log(LogLevel::kInfo, "event=xen_stopping reason=stop");
          return absl::OkStatus();
        case kSignal: {
          signalfd_siginfo si;
          if (read(signal_fd, &si, sizeof(si)) == static_cast<ssize_t>(sizeof(si))) {
            Log(LogLevel::kInfo, "event=xen_stopping reason=signal signal={}", si.ssi_signo);
            return absl::OkStatus();
          }
          break;
        }
        case kStore:
          OnStore();
          break;
        case kEvtchn:
          OnEvtchn();
          break;
        case kHost:
          OnHost(id, events[i].events);
          break;
      }
    }
  }
}

// ---- XenStore -----------------------------------------------------------------------------

std::optional<std::string> XenBackend::Impl::Read(const std::string& path) {
  unsigned int len = 0;
  void* v = api.xs_read(xs, XBT_NULL, path.c_str(), &len);
  if (v == nullptr) return std::nullopt;
  std::string s(static_cast<const char*>(v), len);
  std::free(v);
  return s;
}

void XenBackend::Impl::Write(const std::string& path, const std::string& value) {
  if (!api.xs_write(xs, XBT_NULL, path.c_str(), value.data(),
                    static_cast<unsigned>(value.size()))) {
    Log(LogLevel::kWarn, "event=xs_write_failed path={} errno={}", path, ErrnoName(errno));
  }
}

void XenBackend::Impl::Publish(Frontend& fe, XenbusState s) {
  if (fe.published == s) return;
  fe.published = s;
  Write(fe.back + "/state", std::to_string(static_cast<int>(s)));
}

void XenBackend::Impl::OnStore() {
  // Drain every queued watch event; each only says "look again".
  bool rescan = false;
  std::vector<uint32_t> changed;
  for (;;) {
    char** w = api.xs_check_watch(xs);
    if (w == nullptr) break;
    const std::string token = w[XS_WATCH_TOKEN];
    std::free(w);
    if (token == kBackendWatchToken) {
      rescan = true;
    } else if (token.rfind(kFrontendTokenPrefix, 0) == 0) {
      if (auto d = pvcalls::ParseXsUint(token.substr(3))) changed.push_back(*d);
    }
  }
  if (rescan) Rescan();
  for (uint32_t d : changed) {
    auto it = frontends.find(d);
    if (it != frontends.end()) OnFrontendState(*it->second);
  }
}

void XenBackend::Impl::Rescan() {
  unsigned int num = 0;
  char** names = api.xs_directory(xs, XBT_NULL, backend_root.c_str(), &num);
  std::map<uint32_t, bool> present;
  if (names != nullptr) {
    for (unsigned i = 0; i < num; ++i) {
      auto d = pvcalls::ParseXsUint(names[i]);
      if (!d || *d == options.backend_domid) continue;
      // Only frontends whose device directory the toolstack has completed.
      if (!Read(pvcalls::BackendPath(options.backend_domid, *d) + "/frontend")) continue;
      present[*d] = true;
    }
    std::free(names);
  }
  std::vector<uint32_t> gone;
  for (auto& [d, fe] : frontends) {
    if (!present.count(d)) gone.push_back(d);
  }
  for (uint32_t d : gone) {
    Log(LogLevel::kInfo, "event=frontend_removed domid={}", d);
    Forget(d);
  }
  for (auto& [d, unused] : present) {
    if (frontends.count(d)) continue;
    auto fe = std::make_unique<Frontend>();
    fe->domid = d;
    fe->back = pvcalls::BackendPath(options.backend_domid, d);
    const auto front = Read(fe->back + "/frontend");
    if (!front || *front != pvcalls::FrontendPath(d)) {
      Log(LogLevel::kWarn, "event=frontend_ignored domid={} reason={}", d,
          Quoted("frontend node is not " + pvcalls::FrontendPath(d)));
      continue;
    }
    fe->front = *front;
    fe->token = kFrontendTokenPrefix + std::to_string(d);
    // Publish features, then wait for the frontend's transport parameters.
    Write(fe->back + "/versions", pvcalls::kProtocolVersion);
    Write(fe->back + "/max-page-order", std::to_string(options.max_ring_order));
    Write(fe->back + "/function-calls", pvcalls::kFunctionCalls);
    if (options.extension) Write(fe->back + "/" + pvcalls::kExtFeatureNode, "1");
    Publish(*fe, XenbusState::kInitWait);
    const std::string state_path = fe->front + "/state";
    fe->watching = api.xs_watch(xs, state_path.c_str(), fe->token.c_str());
    Log(LogLevel::kInfo, "event=frontend_found domid={} frontend={}", d, fe->front);
    Frontend& ref = *fe;
    frontends[d] = std::move(fe);
    OnFrontendState(ref);
  }
}

void XenBackend::Impl::OnFrontendState(Frontend& fe) {
  if (fe.cut_off) return;
  const auto text = Read(fe.front + "/state");
  const auto state = text ? pvcalls::ParseXsUint(*text) : std::nullopt;
  const int s = state ? static_cast<int>(*state) : 0;
  switch (static_cast<XenbusState>(s)) {
    case XenbusState::kInitialised:
    case XenbusState::kConnected:
      if (!fe.connected && fe.published == XenbusState::kInitWait) ConnectFrontend(fe);
      break;
    case XenbusState::kClosing:
      if (fe.connected) Teardown(fe);
      Publish(fe, XenbusState::kClosing);
      break;
    case XenbusState::kClosed:
      if (fe.connected) Teardown(fe);
      Publish(fe, XenbusState::kClosed);
      break;
    case XenbusState::kInitialising:
      // A frontend starting again after a close.
      if (!fe.connected &&
          (fe.published == XenbusState::kClosed || fe.published == XenbusState::kClosing)) {
        Publish(fe, XenbusState::kInitWait);
      }
      break;
    default:
      break;
  }
}

bool XenBackend::Impl::ConnectFrontend(Frontend& fe) {
  const auto version = Read(fe.front + "/version");
  const auto ring_text = Read(fe.front + "/ring-ref");
  const auto port_text = Read(fe.front + "/port");
  const auto ref = ring_text ? pvcalls::ParseXsUint(*ring_text) : std::nullopt;
  const auto port = port_text ? pvcalls::ParseXsUint(*port_text) : std::nullopt;
  if (!version || *version != pvcalls::kProtocolVersion || !ref || !port) {
    Log(LogLevel::kWarn, "event=frontend_handshake_failed domid={} reason={}", fe.domid,
        Quoted("version, ring-ref or port missing or invalid"));
    Publish(fe, XenbusState::kClosing);
    return false;
  }
  // The extension only if we offered it and the frontend asked (a guest-written value).
  const auto ext_text = Read(fe.front + "/" + pvcalls::kExtFrontendNode);
  const auto ext = ext_text ? pvcalls::ParseXsUint(*ext_text) : std::nullopt;
  fe.ext = options.extension && ext == 1u;
  const int local = api.evtchn_bind_interdomain(evt, fe.domid, *port);
  if (local < 0) {
    Log(LogLevel::kWarn, "event=frontend_handshake_failed domid={} reason={}", fe.domid,
        Quoted(
            fmt::format("bind event channel {} of dom {}: {}", *port, fe.domid, ErrnoName(errno))));
    Publish(fe, XenbusState::kClosing);
    return false;
  }
  // Under the extension with an unmap notification, so that the front learns at once when
  // this process stops or dies.
  const uint32_t ring_ref = *ref;
  void* page = fe.ext ? api.gnttab_map_grant_ref_notify(
                            gnt, fe.domid, ring_ref, PROT_READ | PROT_WRITE,
                            pvcalls::kExtBackAliveOffset, static_cast<evtchn_port_t>(local))
                      : api.gnttab_map_grant_ref(gnt, fe.domid, ring_ref, PROT_READ | PROT_WRITE);
  if (page == nullptr) {
    Log(LogLevel::kWarn, "event=frontend_handshake_failed domid={} reason={}", fe.domid,
        Quoted(fmt::format("map grant ref {} from dom {}: {}", *ref, fe.domid, ErrnoName(errno))));
    api.evtchn_unbind(evt, static_cast<evtchn_port_t>(local));
    Publish(fe, XenbusState::kClosing);
    return false;
  }
  if (fe.ext) pvcalls::SetAliveByte(page, pvcalls::kExtBackAliveOffset);
  fe.ring_page = page;
  fe.port = static_cast<uint32_t>(local);
  ports[fe.port] = {fe.domid, 0};
  // The frontend initialised the ring (SHARED_RING_INIT); our private indices start at
  // the producer index it published, which must be the start.
  auto* sring = static_cast<pvcalls::SringHeader*>(page);
  fe.req_cons = 0;
  fe.rsp_prod_pvt = 0;
  fe.rsp_prod_published = 0;
  (void)sring;
  fe.connected = true;
  Publish(fe, XenbusState::kConnected);
  {
    std::lock_guard lock(stats_mu);
    ++stats.frontends_connected;
  }
  Log(LogLevel::kInfo, "event=frontend_connected domid={} ring_ref={} port={} ext={}", fe.domid,
      *ref, *port, fe.ext ? 1 : 0);
  ServeCommands(fe);
  return true;
}

void XenBackend::Impl::Teardown(Frontend& fe) {
  std::vector<uint64_t> ids;
  for (auto& [id, s] : fe.sockets) ids.push_back(id);
  for (uint64_t id : ids) FreeSocket(fe, id);
  // Unmapped before the port goes: the unmap notification signals on it.
  if (fe.ring_page != nullptr) {
    api.gnttab_unmap(gnt, fe.ring_page, 1);
    fe.ring_page = nullptr;
  }
  if (fe.port != 0) {
    api.evtchn_unbind(evt, fe.port);
    ports.erase(fe.port);
    fe.port = 0;
  }
  if (fe.connected) Log(LogLevel::kInfo, "event=frontend_disconnected domid={}", fe.domid);
  fe.connected = false;
}

void XenBackend::Impl::CutOff(Frontend& fe, const std::string& reason) {
  Log(LogLevel::kWarn, "event=frontend_cut_off domid={} reason={}", fe.domid, Quoted(reason));
  Teardown(fe);
  fe.cut_off = true;
  Publish(fe, XenbusState::kClosed);
  std::lock_guard lock(stats_mu);
  ++stats.frontends_cut_off;
}

void XenBackend::Impl::Forget(uint32_t domid) {
  auto it = frontends.find(domid);
  if (it == frontends.end()) return;
  Frontend& fe = *it->second;
  Teardown(fe);
  if (fe.watching && xs != nullptr) {
    api.xs_unwatch(xs, (fe.front + "/state").c_str(), fe.token.c_str());
  }
  frontends.erase(it);
}

// ---- events -------------------------------------------------------------------------------

void XenBackend::Impl::OnEvtchn() {
  // Each pending port only means "look at the shared pages"; events are never counted.
  for (int guard = 0; guard < 1024; ++guard) {
    const int port = api.evtchn_pending(evt);
    if (port < 0) break;
    api.evtchn_unmask(evt, static_cast<evtchn_port_t>(port));
    auto it = ports.find(static_cast<uint32_t>(port));
    if (it == ports.end()) continue;
    const auto [domid, serial] = it->second;
    auto fit = frontends.find(domid);
    if (fit == frontends.end() || !fit->second->connected) continue;
    if (serial == 0) {
      ServeCommands(*fit->second);
    } else if (auto s = by_serial.find(serial); s != by_serial.end()) {
      if (s->second->state == XenSocket::State::kConnected) Pass(*s->second);
    }
  }
}

void XenBackend::Impl::OnHost(uint64_t serial, uint32_t events) {
  auto it = by_serial.find(serial);
  if (it == by_serial.end()) return;
  XenSocket& s = *it->second;
  switch (s.state) {
    case XenSocket::State::kConnecting:
      FinishConnect(s);
      break;
    case XenSocket::State::kListening:
      ServeListener(s);
      break;
    case XenSocket::State::kConnected:
      if (events & EPOLLOUT) s.host_writable = true;
      Pass(s);
      break;
    default:
      break;
  }
}

// ---- the command ring ---------------------------------------------------------------------

void XenBackend::Impl::ServeCommands(Frontend& fe) {
  if (fe.ext && !pvcalls::AliveByte(fe.ring_page, pvcalls::kExtFrontAliveOffset)) {
    // The frontend shared the page with an unmap notification: it unmapped it or its
    // process died. Its sockets go now; a new frontend starts from Initialising.
    Log(LogLevel::kInfo, "event=frontend_gone domid={} reason={}", fe.domid,
        Quoted("the frontend unmapped its command ring (its process stopped or died)"));
    Teardown(fe);
    Publish(fe, XenbusState::kClosing);
    return;
  }
  auto* sring = static_cast<pvcalls::SringHeader*>(fe.ring_page);
  auto* slots = static_cast<uint8_t*>(fe.ring_page) + sizeof(pvcalls::SringHeader);
  const uint32_t domid = fe.domid;
  for (;;) {
    const uint32_t req_prod = LoadAcquire(&sring->req_prod);
    if (!pvcalls::CheckCommandRing(req_prod, fe.req_cons, fe.rsp_prod_pvt)) {
      CutOff(fe, fmt::format("command ring req_prod {} impossible (req_cons {}, rsp_prod {})",
                             req_prod, fe.req_cons, fe.rsp_prod_pvt));
      return;
    }
    while (fe.req_cons != req_prod) {
      const Request r = pvcalls::CopyRequest(
          slots + (fe.req_cons & (pvcalls::kCommandRingSize - 1)) * pvcalls::kSlotSize);
      ++fe.req_cons;
      Execute(fe, r);
      // Execute may have cut the frontend off (and torn the ring down).
      auto it = frontends.find(domid);
      if (it == frontends.end() || !it->second->connected) return;
    }
    // RING_FINAL_CHECK_FOR_REQUESTS: ask for an event at the next request, re-check.
    StoreRelease(&sring->req_event, fe.req_cons + 1);
    FullFence();
    if (LoadAcquire(&sring->req_prod) == fe.req_cons) break;
  }
  PushResponses(fe);
}

void XenBackend::Impl::Respond(Frontend& fe, const Request& r, int32_t ret) {
  const Response rsp = pvcalls::MakeResponse(r, ret);
  auto* slots = static_cast<uint8_t*>(fe.ring_page) + sizeof(pvcalls::SringHeader);
  std::memcpy(slots + (fe.rsp_prod_pvt & (pvcalls::kCommandRingSize - 1)) * pvcalls::kSlotSize,
              &rsp, sizeof(rsp));
  ++fe.rsp_prod_pvt;
  fe.responses_unpushed = true;
}

void XenBackend::Impl::PushResponses(Frontend& fe) {
  if (!fe.responses_unpushed || fe.ring_page == nullptr) return;
  fe.responses_unpushed = false;
  auto* sring = static_cast<pvcalls::SringHeader*>(fe.ring_page);
  // RING_PUSH_RESPONSES_AND_CHECK_NOTIFY.
  const uint32_t old = fe.rsp_prod_published;
  const uint32_t now = fe.rsp_prod_pvt;
  StoreRelease(&sring->rsp_prod, now);
  fe.rsp_prod_published = now;
  FullFence();
  const uint32_t event = LoadAcquire(&sring->rsp_event);
  if (static_cast<uint32_t>(now - event) < static_cast<uint32_t>(now - old)) {
    api.evtchn_notify(evt, fe.port);
  }
}

void XenBackend::Impl::Execute(Frontend& fe, const Request& r) {
  {
    std::lock_guard lock(stats_mu);
    ++stats.requests;
  }
  const pvcalls::Checked c = pvcalls::CheckRequest(r, fe.ext);
  if (c.verdict == pvcalls::Verdict::kGarbage) {
    CutOff(fe, fmt::format("garbage command {}: {}", r.cmd, c.reason));
    return;
  }
  if (c.verdict == pvcalls::Verdict::kReject) {
    Log(LogLevel::kDebug, "event=request_rejected domid={} cmd={} ret={} reason={}", fe.domid,
        r.cmd, c.error, Quoted(c.reason));
    if (pvcalls::IsExtCommand(r.cmd) && fe.ext) {
      RespondExt(fe, r, c.error, nullptr, 0);
    } else {
      Respond(fe, r, c.error);
    }
    return;
  }
  if (fe.ext && pvcalls::IsExtCommand(r.cmd)) return ExecuteExt(fe, r);
  switch (r.cmd) {
    case pvcalls::kCmdSocket:
      return CmdSocket(fe, r);
    case pvcalls::kCmdConnect:
      return CmdConnect(fe, r, c);
    case pvcalls::kCmdRelease:
      return CmdRelease(fe, r);
    case pvcalls::kCmdBind:
      return CmdBind(fe, r, c);
    case pvcalls::kCmdListen:
      return CmdListen(fe, r, c);
    case pvcalls::kCmdAccept:
      return CmdAccept(fe, r);
    case pvcalls::kCmdPoll:
      return CmdPoll(fe, r);
  }
}

XenSocket* XenBackend::Impl::Find(Frontend& fe, uint64_t id) {
  auto it = fe.sockets.find(id);
  return it == fe.sockets.end() ? nullptr : it->second.get();
}

XenSocket* XenBackend::Impl::NewSocket(Frontend& fe, uint64_t id) {
  auto s = std::make_unique<XenSocket>();
  s->id = id;
  s->serial = next_serial++;
  s->fe = &fe;
  XenSocket* raw = s.get();
  by_serial[raw->serial] = raw;
  fe.sockets[id] = std::move(s);
  return raw;
}

void XenBackend::Impl::CmdSocket(Frontend& fe, const Request& r) {
  const uint64_t id = r.u.socket.id;
  if (Find(fe, id) != nullptr) return Respond(fe, r, -EEXIST);
  if (fe.sockets.size() >= options.max_sockets_per_frontend) return Respond(fe, r, -EMFILE);
  XenSocket* s = NewSocket(fe, id);
  s->domain = static_cast<int>(r.u.socket.domain);
  // As in Linux's pvcalls-back, the host socket is made by connect or bind; under the
  // extension at once, so that options set before connect or bind apply to them.
  if (fe.ext) {
    s->fd = NewHostSocket(s->domain);
    if (s->fd < 0) {
      const int err = errno;
      FreeSocket(fe, id);
      return Respond(fe, r, pvcalls::ToWireErrno(err));
    }
  }
  Log(LogLevel::kDebug, "event=socket_create domid={} id={} domain={}", fe.domid, id,
      s->domain == AF_INET6 ? "inet6" : "inet");
  Respond(fe, r, 0);
}

int32_t XenBackend::Impl::MapDataRing(Frontend& fe, XenSocket& s, uint32_t ref, uint32_t evtchn) {
  void* page = api.gnttab_map_grant_ref(gnt, fe.domid, ref, PROT_READ | PROT_WRITE);
  if (page == nullptr) {
    Log(LogLevel::kWarn, "event=map_failed domid={} id={} what={}", fe.domid, s.id,
        Quoted(fmt::format("indexes page grant ref {}: {}", ref, ErrnoName(errno))));
    return -EFAULT;
  }
  auto* intf = static_cast<pvcalls::DataIntf*>(page);
  // Copy once, then validate the copy.
  const uint32_t order = LoadAcquire(&intf->ring_order);
  if (order < 1 || order > options.max_ring_order) {
    api.gnttab_unmap(gnt, page, 1);
    Log(LogLevel::kWarn, "event=map_failed domid={} id={} what={}", fe.domid, s.id,
        Quoted(fmt::format("ring_order {} outside 1..{}", order, options.max_ring_order)));
    return -EINVAL;
  }
  const uint32_t pages = uint32_t{1} << order;
  std::vector<uint32_t> refs(pages);
  std::memcpy(refs.data(), static_cast<uint8_t*>(page) + pvcalls::kDataIntfRefOffset,
              pages * sizeof(uint32_t));
  asm volatile("" ::: "memory");
  std::vector<uint32_t> domids(pages, fe.domid);
  void* data =
      api.gnttab_map_grant_refs(gnt, pages, domids.data(), refs.data(), PROT_READ | PROT_WRITE);
  if (data == nullptr) {
    Log(LogLevel::kWarn, "event=map_failed domid={} id={} what={}", fe.domid, s.id,
        Quoted(fmt::format("{} data ring grants: {}", pages, ErrnoName(errno))));
    api.gnttab_unmap(gnt, page, 1);
    return -EFAULT;
  }
  const int port = api.evtchn_bind_interdomain(evt, fe.domid, evtchn);
  if (port < 0) {
    Log(LogLevel::kWarn, "event=map_failed domid={} id={} what={}", fe.domid, s.id,
        Quoted(fmt::format("event channel {}: {}", evtchn, ErrnoName(errno))));
    api.gnttab_unmap(gnt, data, pages);
    api.gnttab_unmap(gnt, page, 1);
    return -EINVAL;
  }
  s.intf = intf;
  s.data = static_cast<uint8_t*>(data);
  s.pages = pages;
  s.ring_bytes = pvcalls::DataRingBytes(order);
  s.port = static_cast<uint32_t>(port);
  ports[s.port] = {fe.domid, s.serial};
  s.in_prod = s.out_cons = s.last_in_cons = 0;
  s.in_done = s.out_done = false;
  StoreRelease(&intf->in_prod, 0);
  StoreRelease(&intf->out_cons, 0);
  StoreRelease(&intf->in_error, 0);
  StoreRelease(&intf->out_error, 0);
  return 0;
}

void XenBackend::Impl::UnmapDataRing(XenSocket& s) {
  if (s.port != 0) {
    api.evtchn_unbind(evt, s.port);
    ports.erase(s.port);
    s.port = 0;
  }
  if (s.data != nullptr) api.gnttab_unmap(gnt, s.data, s.pages);
  if (s.intf != nullptr) api.gnttab_unmap(gnt, s.intf, 1);
  s.data = nullptr;
  s.intf = nullptr;
}

void XenBackend::Impl::SetInterest(XenSocket& s, uint32_t events) {
  epoll_event ev{};
  ev.events = events;
  ev.data.u64 = Token(kHost, s.serial);
  if (!s.registered) {
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, s.fd, &ev) == 0) s.registered = true;
  } else if (s.epoll_events != events) {
    epoll_ctl(epoll_fd, EPOLL_CTL_MOD, s.fd, &ev);
  }
  s.epoll_events = events;
}

void XenBackend::Impl::CloseHost(XenSocket& s) {
  if (s.fd >= 0) {
    if (s.registered) epoll_ctl(epoll_fd, EPOLL_CTL_DEL, s.fd, nullptr);
    close(s.fd);
  }
  s.fd = -1;
  s.registered = false;
  s.epoll_events = 0;
}

void XenBackend::Impl::FreeSocket(Frontend& fe, uint64_t id) {
  auto it = fe.sockets.find(id);
  if (it == fe.sockets.end()) return;
  XenSocket& s = *it->second;
  CloseHost(s);
  UnmapDataRing(s);
  by_serial.erase(s.serial);
  {
    std::lock_guard lock(stats_mu);
    stats.bytes_in += s.bytes_in;
    stats.bytes_out += s.bytes_out;
  }
  fe.sockets.erase(it);
}

void XenBackend::Impl::CmdConnect(Frontend& fe, const Request& r, const pvcalls::Checked& c) {
  XenSocket* s = Find(fe, r.u.connect.id);
  if (s == nullptr) return Respond(fe, r, -EBADF);
  switch (s->state) {
    case XenSocket::State::kIdle:
    case XenSocket::State::kBound:
      break;
    case XenSocket::State::kConnecting:
      return Respond(fe, r, -EALREADY);
    case XenSocket::State::kConnected:
      return Respond(fe, r, -EISCONN);
    case XenSocket::State::kListening:
      return Respond(fe, r, -EINVAL);
  }
  if (s->fd < 0) {
    s->fd = NewHostSocket(s->domain);
    if (s->fd < 0) return Respond(fe, r, pvcalls::ToWireErrno(errno));
  }
  if (const int32_t err = MapDataRing(fe, *s, r.u.connect.ref, r.u.connect.evtchn); err != 0) {
    if (s->state == XenSocket::State::kIdle) CloseHost(*s);
    return Respond(fe, r, err);
  }
  s->peer = c.inet;
  const HostAddr dst(c.inet);
  // Asynchronous: one slow peer never stalls this frontend's other commands.
  if (connect(s->fd, dst.sa(), dst.len) == 0 || errno == EINPROGRESS) {
    s->state = XenSocket::State::kConnecting;
    s->pending_connect = r;
    SetInterest(*s, EPOLLOUT | EPOLLIN | EPOLLRDHUP | EPOLLET);
    Log(LogLevel::kDebug, "event=connect_start domid={} id={} dst={}", fe.domid, s->id,
        AddrText(c.inet));
    return;
  }
  const int err = errno;
  Log(LogLevel::kInfo, "event=connect_failed domid={} id={} dst={} errno={}", fe.domid, s->id,
      AddrText(c.inet), ErrnoName(err));
  UnmapDataRing(*s);
  CloseHost(*s);
  s->state = XenSocket::State::kIdle;
  Respond(fe, r, pvcalls::ToWireErrno(err));
}

void XenBackend::Impl::FinishConnect(XenSocket& s) {
  Frontend& fe = *s.fe;
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(s.fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
  if (err == 0) {
    // Still in progress if not yet connected (a spurious wake-up).
    sockaddr_storage peer{};
    socklen_t plen = sizeof(peer);
    if (getpeername(s.fd, reinterpret_cast<sockaddr*>(&peer), &plen) != 0) {
      if (errno == ENOTCONN) return;
      err = errno;
    }
  }
  const Request r = *s.pending_connect;
  s.pending_connect.reset();
  if (err != 0) {
    Log(LogLevel::kInfo, "event=connect_failed domid={} id={} dst={} errno={}", fe.domid, s.id,
        AddrText(s.peer), ErrnoName(err));
    UnmapDataRing(s);
    CloseHost(s);
    s.state = XenSocket::State::kIdle;
    Respond(fe, r, pvcalls::ToWireErrno(err));
    PushResponses(fe);
    return;
  }
  s.state = XenSocket::State::kConnected;
  Log(LogLevel::kInfo, "event=connect_ok domid={} id={} dst={}", fe.domid, s.id, AddrText(s.peer));
  Respond(fe, r, 0);
  PushResponses(fe);
  Pass(s);
}

void XenBackend::Impl::CmdRelease(Frontend& fe, const Request& r) {
  XenSocket* s = Find(fe, r.u.release.id);
  // Unknown ids are released already (Linux's pvcalls-back answers 0 too).
  if (s == nullptr) return Respond(fe, r, 0);
  if (s->state == XenSocket::State::kConnected) {
    // Last chance for bytes the frontend wrote before releasing.
    Pass(*s);
    auto it = frontends.find(fe.domid);
    if (it == frontends.end() || !it->second->connected) return;
  }
  // A pending accept or poll is dropped unanswered: the frontend gave it up (Linux's
  // frontend frees the state an answer would refer to, and a late answer would hold one
  // of its request slots forever). Under the extension they are answered -ECONNABORTED
  // first, so that the frontend gets its command-ring slots back.
  if (fe.ext) {
    for (auto* pending : {&s->pending_accept, &s->pending_poll}) {
      if (*pending) Respond(fe, **pending, -ECONNABORTED);
      pending->reset();
    }
    if (s->pending_shutdown) RespondExt(fe, *s->pending_shutdown, -ECONNABORTED, nullptr, 0);
    s->pending_shutdown.reset();
  }
  Log(LogLevel::kDebug, "event=release domid={} id={}", fe.domid, s->id);
  FreeSocket(fe, r.u.release.id);
  Respond(fe, r, 0);
}

void XenBackend::Impl::CmdBind(Frontend& fe, const Request& r, const pvcalls::Checked& c) {
  XenSocket* s = Find(fe, r.u.bind.id);
  if (s == nullptr) return Respond(fe, r, -EBADF);
  if (s->state != XenSocket::State::kIdle) return Respond(fe, r, -EINVAL);
  if (s->fd < 0) {
    s->fd = NewHostSocket(s->domain);
    if (s->fd < 0) return Respond(fe, r, pvcalls::ToWireErrno(errno));
    // PVCalls v1 cannot carry setsockopt: do what servers ask for anyway.
    const int one = 1;
    setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  }
  const HostAddr addr(c.inet);
  if (bind(s->fd, addr.sa(), addr.len) != 0) {
    const int err = errno;
    if (!fe.ext) CloseHost(*s);  // with the extension it stays, as a kernel socket would
    Log(LogLevel::kInfo, "event=bind_failed domid={} id={} addr={} errno={}", fe.domid, s->id,
        AddrText(c.inet), ErrnoName(err));
    return Respond(fe, r, pvcalls::ToWireErrno(err));
  }
  s->state = XenSocket::State::kBound;
  Log(LogLevel::kInfo, "event=bind domid={} id={} addr={}", fe.domid, s->id, AddrText(c.inet));
  Respond(fe, r, 0);
}

void XenBackend::Impl::CmdListen(Frontend& fe, const Request& r, const pvcalls::Checked& c) {
  XenSocket* s = Find(fe, r.u.listen.id);
  if (s == nullptr) return Respond(fe, r, -EBADF);
  if (s->state != XenSocket::State::kBound && s->state != XenSocket::State::kListening) {
    return Respond(fe, r, -EINVAL);
  }
  if (listen(s->fd, static_cast<int>(c.backlog)) != 0) {
    return Respond(fe, r, pvcalls::ToWireErrno(errno));
  }
  s->state = XenSocket::State::kListening;
  SetInterest(*s, 0);
  Log(LogLevel::kInfo, "event=listen domid={} id={} backlog={}", fe.domid, s->id, c.backlog);
  Respond(fe, r, 0);
}

void XenBackend::Impl::CmdAccept(Frontend& fe, const Request& r) {
  XenSocket* s = Find(fe, r.u.accept.id);
  if (s == nullptr) return Respond(fe, r, -EBADF);
  if (s->state != XenSocket::State::kListening) return Respond(fe, r, -EINVAL);
  // One accept at a time per listener, as Linux's pvcalls-back.
  if (s->pending_accept) return Respond(fe, r, -EINTR);
  if (Find(fe, r.u.accept.id_new) != nullptr) return Respond(fe, r, -EEXIST);
  if (fe.sockets.size() >= options.max_sockets_per_frontend) return Respond(fe, r, -EMFILE);
  s->pending_accept = r;
  ServeListener(*s);
}

void XenBackend::Impl::CmdPoll(Frontend& fe, const Request& r) {
  XenSocket* s = Find(fe, r.u.poll.id);
  if (s == nullptr) return Respond(fe, r, -EBADF);
  if (s->state != XenSocket::State::kListening) return Respond(fe, r, -EINVAL);
  if (s->pending_poll || s->pending_accept) return Respond(fe, r, -EINTR);
  s->pending_poll = r;
  ServeListener(*s);
}

void XenBackend::Impl::ServeListener(XenSocket& s) {
  Frontend& fe = *s.fe;
  if (s.pending_accept) {
    const int fd = accept4(s.fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      const Request r = *s.pending_accept;
      s.pending_accept.reset();
      XenSocket* n = NewSocket(fe, r.u.accept.id_new);
      n->fd = fd;
      if (const int32_t err = MapDataRing(fe, *n, r.u.accept.ref, r.u.accept.evtchn); err != 0) {
        FreeSocket(fe, r.u.accept.id_new);
        Respond(fe, r, err);
      } else {
        n->state = XenSocket::State::kConnected;
        n->domain = s.domain;
        sockaddr_storage peer{};
        socklen_t plen = sizeof(peer);
        if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) == 0) {
          n->peer = pvcalls::FromSockaddr(&peer, plen, true).value_or(pvcalls::InetAddr{});
        }
        SetInterest(*n, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET);
        Log(LogLevel::kInfo, "event=accept domid={} listener={} id={} peer={}", fe.domid, s.id,
            n->id, AddrText(n->peer));
        Respond(fe, r, 0);
        SetInterest(s, s.pending_poll ? uint32_t{EPOLLIN} : 0u);
        PushResponses(fe);
        // The new connection may have bytes already. Pass may cut the frontend off,
        // which frees `s`: nothing after it touches `s`.
        if (!s.pending_poll) {
          Pass(*n);
          return;
        }
        if (!Pass(*n)) return;
      }
    } else if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR && errno != ECONNABORTED) {
      const Request r = *s.pending_accept;
      s.pending_accept.reset();
      Respond(fe, r, pvcalls::ToWireErrno(errno));
    }
  }
  if (s.pending_poll) {
    pollfd p{s.fd, POLLIN, 0};
    if (poll(&p, 1, 0) > 0) {
      const Request r = *s.pending_poll;
      s.pending_poll.reset();
      Respond(fe, r, 0);
    }
  }
  // Level-triggered interest only while something waits for a connection.
  SetInterest(s, (s.pending_accept || s.pending_poll) ? uint32_t{EPOLLIN} : 0u);
  PushResponses(fe);
}

// ---- the xsock extension ------------------------------------------------------------------

void XenBackend::Impl::RespondExt(Frontend& fe, const Request& r, int32_t ret, const void* data,
                                  uint32_t len) {
  pvcalls::ExtResponse rsp{};
  rsp.base = pvcalls::MakeResponse(r, ret);
  rsp.len = std::min<uint32_t>(len, sizeof(rsp.data));
  if (data != nullptr) std::memcpy(rsp.data, data, rsp.len);
  auto* slots = static_cast<uint8_t*>(fe.ring_page) + sizeof(pvcalls::SringHeader);
  std::memcpy(slots + (fe.rsp_prod_pvt & (pvcalls::kCommandRingSize - 1)) * pvcalls::kSlotSize,
              &rsp, sizeof(rsp));
  ++fe.rsp_prod_pvt;
  fe.responses_unpushed = true;
}

void XenBackend::Impl::ExecuteExt(Frontend& fe, const Request& r) {
  switch (r.cmd) {
    case pvcalls::kCmdExtShutdown:
      return CmdExtShutdown(fe, r);
    case pvcalls::kCmdExtSetSockOpt:
    case pvcalls::kCmdExtGetSockOpt:
      return CmdExtSockOpt(fe, r);
    case pvcalls::kCmdExtGetSockName:
    case pvcalls::kCmdExtGetPeerName:
      return CmdExtName(fe, r);
  }
  RespondExt(fe, r, pvcalls::kWireENOTSUPP, nullptr, 0);
}

int32_t XenBackend::Impl::ApplyShutdown(XenSocket& s, uint32_t how) {
  if (shutdown(s.fd, static_cast<int>(how)) != 0) return pvcalls::ToWireErrno(errno);
  Log(LogLevel::kDebug, "event=shutdown domid={} id={} how={}", s.fe->domid, s.id, how);
  return 0;
}

void XenBackend::Impl::CmdExtShutdown(Frontend& fe, const Request& r) {
  const uint32_t how = r.u.ext_shutdown.how;  // checked by CheckRequest
  XenSocket* s = Find(fe, r.u.ext_shutdown.id);
  if (s == nullptr) return RespondExt(fe, r, -EBADF, nullptr, 0);
  if (s->state != XenSocket::State::kConnected) return RespondExt(fe, r, -ENOTCONN, nullptr, 0);
  if (s->pending_shutdown) return RespondExt(fe, r, -EALREADY, nullptr, 0);
  if (how == SHUT_RD) return RespondExt(fe, r, ApplyShutdown(*s, how), nullptr, 0);
  // Writing side: only after `out` drained. Pass sends what it can and applies the
  // shutdown at once if the ring is empty, or later, when the host takes the rest.
  s->pending_shutdown = r;
  Pass(*s);
}

void XenBackend::Impl::CmdExtSockOpt(Frontend& fe, const Request& r) {
  const auto& o = r.u.ext_sockopt;
  const bool set = r.cmd == pvcalls::kCmdExtSetSockOpt;  // length, allowlist: CheckRequest
  XenSocket* s = Find(fe, o.id);
  if (s == nullptr) return RespondExt(fe, r, -EBADF, nullptr, 0);
  // The host socket exists from bind or connect on (as in Linux's pvcalls-back).
  if (s->fd < 0) return RespondExt(fe, r, -ENOTCONN, nullptr, 0);
  if (set) {
    const int rc =
        setsockopt(s->fd, static_cast<int>(o.level), static_cast<int>(o.name), o.value, o.len);
    return RespondExt(fe, r, rc == 0 ? 0 : pvcalls::ToWireErrno(errno), nullptr, 0);
  }
  uint8_t value[pvcalls::kExtMaxOptLen] = {};
  socklen_t len = o.len;
  if (getsockopt(s->fd, static_cast<int>(o.level), static_cast<int>(o.name), value, &len) != 0) {
    return RespondExt(fe, r, pvcalls::ToWireErrno(errno), nullptr, 0);
  }
  RespondExt(fe, r, 0, value, std::min<uint32_t>(len, pvcalls::kExtMaxOptLen));
}

void XenBackend::Impl::CmdExtName(Frontend& fe, const Request& r) {
  XenSocket* s = Find(fe, r.u.ext_name.id);
  if (s == nullptr) return RespondExt(fe, r, -EBADF, nullptr, 0);
  if (s->fd < 0) return RespondExt(fe, r, -ENOTCONN, nullptr, 0);
  sockaddr_storage ss{};
  socklen_t len = sizeof(ss);
  auto* sa = reinterpret_cast<sockaddr*>(&ss);
  const int rc = r.cmd == pvcalls::kCmdExtGetSockName ? getsockname(s->fd, sa, &len)
                                                      : getpeername(s->fd, sa, &len);
  if (rc != 0) return RespondExt(fe, r, pvcalls::ToWireErrno(errno), nullptr, 0);
  if (len > sizeof(pvcalls::ExtResponse::data)) return RespondExt(fe, r, -EAFNOSUPPORT, nullptr, 0);
  RespondExt(fe, r, 0, &ss, len);
}

// ---- data rings ---------------------------------------------------------------------------

bool XenBackend::Impl::Pass(XenSocket& s) {
  Frontend& fe = *s.fe;
  if (s.intf == nullptr) return true;
  // What this pass did, for the event at its end (pvcalls::ArmWake/TakeWake).
  bool consumed_out = false, produced_in = false, error_set = false;
  bool armed_out = false, armed_in = false;
  // out → host.
  while (!s.out_done && s.host_writable) {
    const uint32_t out_prod = LoadAcquire(&s.intf->out_prod);
    const auto filled = pvcalls::CheckOutRing(out_prod, s.out_cons, s.ring_bytes);
    if (!filled) {
      CutOff(fe, fmt::format("socket {}: out_prod {} impossible (out_cons {}, ring {} bytes)", s.id,
                             out_prod, s.out_cons, s.ring_bytes));
      return false;
    }
    if (*filled == 0) {
      // Nothing to send: ask for an event at the frontend's next byte, then look again.
      if (pvcalls::ArmOnce(fe.ext, &armed_out, &s.intf->ext_be_out_data_wake)) continue;
      break;
    }
    const pvcalls::Regions reg = pvcalls::RingRegions(s.out_cons, *filled, s.ring_bytes);
    uint8_t* out = s.data + s.ring_bytes;
    iovec iov[2] = {{out + reg.first_offset, reg.first_len}, {out, reg.second_len}};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = reg.second_len != 0 ? 2 : 1;
    const ssize_t n = sendmsg(s.fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
    if (n > 0) {
      s.out_cons += static_cast<uint32_t>(n);
      s.bytes_out += static_cast<uint64_t>(n);
      StoreRelease(&s.intf->out_cons, s.out_cons);
      consumed_out = true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      s.host_writable = false;
      break;
    }
    const int err = n < 0 ? errno : EPIPE;
    StoreRelease(&s.intf->out_error, pvcalls::ToWireErrno(err));
    s.out_done = true;
    error_set = true;
    Log(LogLevel::kInfo, "event=send_failed domid={} id={} errno={}", fe.domid, s.id,
        ErrnoName(err));
  }
  // A deferred SHUTDOWN once everything before it reached the host socket.
  if (s.pending_shutdown) {
    const uint32_t out_prod = LoadAcquire(&s.intf->out_prod);
    if (s.out_done) {  // the host socket failed: the bytes before it are lost
      const Request r = *s.pending_shutdown;
      s.pending_shutdown.reset();
      RespondExt(fe, r, -EPIPE, nullptr, 0);
      PushResponses(fe);
    } else if (out_prod == s.out_cons) {
      const Request r = *s.pending_shutdown;
      s.pending_shutdown.reset();
      RespondExt(fe, r, ApplyShutdown(s, r.u.ext_shutdown.how), nullptr, 0);
      PushResponses(fe);
    }
  }
  // host → in.
  while (!s.in_done) {
    const uint32_t in_cons = LoadAcquire(&s.intf->in_cons);
    const auto room = pvcalls::CheckInRing(in_cons, s.last_in_cons, s.in_prod, s.ring_bytes);
    if (!room) {
      CutOff(fe, fmt::format("socket {}: in_cons {} impossible (in_prod {}, ring {} bytes)", s.id,
                             in_cons, s.in_prod, s.ring_bytes));
      return false;
    }
    s.last_in_cons = in_cons;
    if (*room == 0) {
      // The frontend's read (and its event) brings us back; under the extension only if
      // asked for, then a last look.
      if (pvcalls::ArmOnce(fe.ext, &armed_in, &s.intf->ext_be_in_room_wake)) continue;
      break;
    }
    const pvcalls::Regions reg = pvcalls::RingRegions(s.in_prod, *room, s.ring_bytes);
    iovec iov[2] = {{s.data + reg.first_offset, reg.first_len}, {s.data, reg.second_len}};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = reg.second_len != 0 ? 2 : 1;
    const ssize_t n = recvmsg(s.fd, &msg, MSG_DONTWAIT);
    if (n > 0) {
      s.in_prod += static_cast<uint32_t>(n);
      s.bytes_in += static_cast<uint64_t>(n);
      StoreRelease(&s.intf->in_prod, s.in_prod);
      produced_in = true;
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
    // EOF (the spec's -ENOTCONN) or an error, after the last byte.
    const int err = n == 0 ? ENOTCONN : errno;
    StoreRelease(&s.intf->in_error, pvcalls::ToWireErrno(err));
    s.in_done = true;
    error_set = true;
    Log(LogLevel::kInfo, "event={} domid={} id={} bytes_in={} bytes_out={}",
        n == 0 ? "eof" : "reset", fe.domid, s.id, s.bytes_in, s.bytes_out);
  }
  // Standard PVCalls: the frontend expects an event after every update (Linux's
  // pvcalls-front sleeps until one comes); one per pass, never per byte. Extension: only
  // for what the frontend armed a flag for, and for the error words.
  const bool signal = pvcalls::SignalAfterPass(fe.ext, produced_in, &s.intf->ext_fe_in_wake,
                                               consumed_out, &s.intf->ext_fe_out_room_wake);
  if (signal || error_set) {
    api.evtchn_notify(evt, s.port);
    data_events.fetch_add(1, std::memory_order_relaxed);
  }
  return true;
}

// ---- XenBackend ---------------------------------------------------------------------------

XenBackend::XenBackend(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
XenBackend::~XenBackend() = default;

absl::StatusOr<std::unique_ptr<XenBackend>> XenBackend::Create(const XenApi& api,
                                                               const XenBackendOptions& options) {
  if (options.max_ring_order < 1 || options.max_ring_order > pvcalls::kMaxRingOrder) {
    return absl::InvalidArgumentError(fmt::format("max ring order {} outside 1..{}",
                                                  options.max_ring_order, pvcalls::kMaxRingOrder));
  }
  auto impl = std::make_unique<Impl>();
  impl->api = api;
  impl->options = options;
  if (auto s = impl->Open(); !s.ok()) return s;
  return std::unique_ptr<XenBackend>(new XenBackend(std::move(impl)));
}

absl::Status XenBackend::Run() { return impl_->Run(); }

void XenBackend::Stop() {
  const uint64_t one = 1;
  [[maybe_unused]] ssize_t n = write(impl_->stop_fd, &one, sizeof(one));
}

XenBackendStats XenBackend::Stats() const {
  std::lock_guard lock(impl_->stats_mu);
  XenBackendStats s = impl_->stats;
  s.data_events = impl_->data_events.load(std::memory_order_relaxed);
  return s;
}

}  // namespace xsock::backend::xen
