#include "tests/xen/xen_double.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <utility>
#include <vector>

namespace xsock::xen_double {
namespace {

constexpr size_t kPage = 4096;
constexpr uint32_t kNoDomain = 0xFFFFFFFFu;

thread_local uint32_t t_domid = kNoDomain;

std::mutex g_mu;

// An eventfd that is readable iff `Raise` was called more recently than `Clear`.
struct Flag {
  // blocking: the fd starts without O_NONBLOCK, as /dev/xen/evtchn's (the user may set
  // it); Clear never blocks either way.
  Flag() : Flag(false) {}
  explicit Flag(bool blocking) : fd(eventfd(0, EFD_CLOEXEC | (blocking ? 0 : EFD_NONBLOCK))) {}
  int fd;
  ~Flag() { close(fd); }
  void Raise() const {
    const uint64_t one = 1;
    [[maybe_unused]] ssize_t n = write(fd, &one, sizeof(one));
  }
  void Clear() const {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 0) != 1) return;
    uint64_t v;
    [[maybe_unused]] ssize_t n = read(fd, &v, sizeof(v));
  }
};

// ---- grants -----------------------------------------------------------------------------

struct Memfd {
  int fd;
  explicit Memfd(int f) : fd(f) {}
  ~Memfd() { close(fd); }
};

struct Grant {
  std::shared_ptr<Memfd> mem;
  size_t page;
  uint32_t grantee;
  bool writable;
};

struct GntHandle {
  uint32_t domid;
};

// An unmap notification (xengnttab.h, "UNMAP NOTIFICATION"): at unmap, the byte at
// `offset` of the page is zeroed and an event is sent on the local port `port` of domain
// `domid`. Unlike Linux, which holds a reference on the port, the double needs the port
// still bound then: unmap before unbinding (as both sides of the transport do).
struct UnmapNotify {
  uint32_t offset = UINT32_MAX;
  uint32_t domid = 0;
  uint32_t port = UINT32_MAX;
};

struct Share {
  uint32_t owner;
  std::vector<uint32_t> refs;
  UnmapNotify notify;
};

struct Mapping {
  size_t pages;
  UnmapNotify notify;
};

void FireLocked(const UnmapNotify& n, void* page);

std::map<std::pair<uint32_t, uint32_t>, Grant> g_grants;  // (owner, ref)
std::map<uint32_t, uint32_t> g_next_ref;                  // per owner
std::map<void*, Share> g_shares;
std::map<void*, Mapping> g_mappings;

GntHandle* OpenGnt() {
  if (t_domid == kNoDomain) {
    errno = ENOENT;  // as outside Xen: nothing to open
    return nullptr;
  }
  return new GntHandle{t_domid};
}

void* ShareLocked(GntHandle* h, uint32_t domid, int count, uint32_t* refs, int writable) {
  if (count <= 0 || count > 1024) {
    errno = EINVAL;
    return nullptr;
  }
  const int fd = memfd_create("xen-double-grant", MFD_CLOEXEC);
  if (fd < 0) return nullptr;
  auto mem = std::make_shared<Memfd>(fd);
  const size_t bytes = static_cast<size_t>(count) * kPage;
  if (ftruncate(fd, static_cast<off_t>(bytes)) != 0) return nullptr;
  void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return nullptr;
  Share share{h->domid, {}, {}};
  uint32_t& next = g_next_ref[h->domid];
  if (next < 8) next = 8;  // Xen reserves the first grant entries
  for (int i = 0; i < count; ++i) {
    const uint32_t ref = next++;
    g_grants[{h->domid, ref}] = Grant{mem, static_cast<size_t>(i), domid, writable != 0};
    refs[i] = ref;
    share.refs.push_back(ref);
  }
  g_shares[p] = std::move(share);
  return p;
}

void* MapLocked(GntHandle* h, uint32_t count, const uint32_t* domids, const uint32_t* refs,
                int prot) {
  if (count == 0 || count > 1024) {
    errno = EINVAL;
    return nullptr;
  }
  std::vector<const Grant*> grants;
  for (uint32_t i = 0; i < count; ++i) {
    auto it = g_grants.find({domids[i], refs[i]});
    if (it == g_grants.end() || it->second.grantee != h->domid) {
      errno = EINVAL;
      return nullptr;
    }
    if ((prot & PROT_WRITE) && !it->second.writable) {
      errno = EACCES;
      return nullptr;
    }
    grants.push_back(&it->second);
  }
  const size_t bytes = count * kPage;
  void* base = mmap(nullptr, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (base == MAP_FAILED) return nullptr;
  for (uint32_t i = 0; i < count; ++i) {
    void* want = static_cast<char*>(base) + i * kPage;
    void* got = mmap(want, kPage, prot, MAP_SHARED | MAP_FIXED, grants[i]->mem->fd,
                     static_cast<off_t>(grants[i]->page * kPage));
    if (got == MAP_FAILED) {
      const int e = errno;
      munmap(base, bytes);
      errno = e;
      return nullptr;
    }
  }
  g_mappings[base] = Mapping{count, {}};
  return base;
}

xengnttab_handle* GnttabOpen(struct xentoollog_logger*, unsigned) {
  return reinterpret_cast<xengnttab_handle*>(OpenGnt());
}
int GnttabClose(xengnttab_handle* h) {
  delete reinterpret_cast<GntHandle*>(h);
  return 0;
}
void* GnttabMapGrantRef(xengnttab_handle* h, uint32_t domid, uint32_t ref, int prot) {
  std::lock_guard lock(g_mu);
  return MapLocked(reinterpret_cast<GntHandle*>(h), 1, &domid, &ref, prot);
}
void* GnttabMapGrantRefs(xengnttab_handle* h, uint32_t count, uint32_t* domids, uint32_t* refs,
                         int prot) {
  std::lock_guard lock(g_mu);
  return MapLocked(reinterpret_cast<GntHandle*>(h), count, domids, refs, prot);
}
void* GnttabMapGrantRefNotify(xengnttab_handle* h, uint32_t domid, uint32_t ref, int prot,
                              uint32_t notify_offset, evtchn_port_t notify_port) {
  std::lock_guard lock(g_mu);
  auto* gh = reinterpret_cast<GntHandle*>(h);
  if (notify_offset != UINT32_MAX && (notify_offset >= kPage || !(prot & PROT_WRITE))) {
    errno = EINVAL;
    return nullptr;
  }
  void* p = MapLocked(gh, 1, &domid, &ref, prot);
  if (p != nullptr) g_mappings[p].notify = {notify_offset, gh->domid, notify_port};
  return p;
}
int GnttabUnmap(xengnttab_handle*, void* start, uint32_t count) {
  std::lock_guard lock(g_mu);
  auto it = g_mappings.find(start);
  if (it == g_mappings.end() || it->second.pages != count) {
    errno = EINVAL;
    return -1;
  }
  FireLocked(it->second.notify, start);
  munmap(start, count * kPage);
  g_mappings.erase(it);
  return 0;
}
xengntshr_handle* GntshrOpen(struct xentoollog_logger*, unsigned) {
  return reinterpret_cast<xengntshr_handle*>(OpenGnt());
}
int GntshrClose(xengntshr_handle* h) {
  delete reinterpret_cast<GntHandle*>(h);
  return 0;
}
void* GntshrSharePages(xengntshr_handle* h, uint32_t domid, int count, uint32_t* refs,
                       int writable) {
  std::lock_guard lock(g_mu);
  return ShareLocked(reinterpret_cast<GntHandle*>(h), domid, count, refs, writable);
}
void* GntshrSharePageNotify(xengntshr_handle* h, uint32_t domid, uint32_t* ref, int writable,
                            uint32_t notify_offset, evtchn_port_t notify_port) {
  std::lock_guard lock(g_mu);
  auto* gh = reinterpret_cast<GntHandle*>(h);
  if (notify_offset != UINT32_MAX && notify_offset >= kPage) {
    errno = EINVAL;
    return nullptr;
  }
  void* p = ShareLocked(gh, domid, 1, ref, writable);
  if (p != nullptr) g_shares[p].notify = {notify_offset, gh->domid, notify_port};
  return p;
}
int GntshrUnshare(xengntshr_handle*, void* start, uint32_t count) {
  std::lock_guard lock(g_mu);
  auto it = g_shares.find(start);
  if (it == g_shares.end() || it->second.refs.size() != count) {
    errno = EINVAL;
    return -1;
  }
  FireLocked(it->second.notify, start);
  for (uint32_t ref : it->second.refs) g_grants.erase({it->second.owner, ref});
  munmap(start, count * kPage);
  g_shares.erase(it);
  return 0;
}

// ---- event channels ---------------------------------------------------------------------

struct EvtHandle;

struct Port {
  EvtHandle* owner = nullptr;
  uint32_t remote_domid = 0;
  uint32_t remote_port = 0;  // 0 while unbound (or after the peer unbound)
  bool interdomain = false;
  bool pending = false;  // raised while masked
  bool masked = false;
  bool queued = false;
};

struct EvtHandle {
  uint32_t domid;
  Flag flag;  // blocking, as /dev/xen/evtchn
  std::deque<uint32_t> queue;
};

std::map<std::pair<uint32_t, uint32_t>, Port> g_ports;  // (domid, port)
std::map<uint32_t, uint32_t> g_next_port;

void Enqueue(uint32_t domid, uint32_t port, Port& p) {
  if (p.queued) return;  // coalesces
  p.queued = true;
  p.owner->queue.push_back(port);
  p.owner->flag.Raise();
  (void)domid;
}

void RaiseLocked(uint32_t domid, uint32_t port) {
  auto it = g_ports.find({domid, port});
  if (it == g_ports.end() || it->second.owner == nullptr) return;
  Port& p = it->second;
  if (p.masked) {
    p.pending = true;
    return;
  }
  Enqueue(domid, port, p);
}

uint32_t NewPortLocked(EvtHandle* h) {
  uint32_t& next = g_next_port[h->domid];
  if (next == 0) next = 1;
  const uint32_t port = next++;
  g_ports[{h->domid, port}] = Port{};
  g_ports[{h->domid, port}].owner = h;
  return port;
}

void UnbindLocked(EvtHandle* h, uint32_t port) {
  auto it = g_ports.find({h->domid, port});
  if (it == g_ports.end()) return;
  if (it->second.interdomain) {
    auto peer = g_ports.find({it->second.remote_domid, it->second.remote_port});
    if (peer != g_ports.end()) peer->second.remote_port = 0;
  }
  g_ports.erase(it);
  for (auto q = h->queue.begin(); q != h->queue.end();) {
    q = *q == port ? h->queue.erase(q) : q + 1;
  }
  if (h->queue.empty()) h->flag.Clear();
}

Port* OwnPort(EvtHandle* h, uint32_t port) {
  auto it = g_ports.find({h->domid, port});
  if (it == g_ports.end() || it->second.owner != h) return nullptr;
  return &it->second;
}

void FireLocked(const UnmapNotify& n, void* page) {
  if (n.offset != UINT32_MAX) static_cast<uint8_t*>(page)[n.offset] = 0;
  if (n.port == UINT32_MAX) return;
  auto it = g_ports.find({n.domid, n.port});
  if (it != g_ports.end() && it->second.interdomain && it->second.remote_port != 0) {
    RaiseLocked(it->second.remote_domid, it->second.remote_port);
  }
}

xenevtchn_handle* EvtOpen(struct xentoollog_logger*, unsigned) {
  if (t_domid == kNoDomain) {
    errno = ENOENT;
    return nullptr;
  }
  auto* h = new EvtHandle{t_domid, Flag(/*blocking=*/true), {}};
  return reinterpret_cast<xenevtchn_handle*>(h);
}
int EvtClose(xenevtchn_handle* xh) {
  auto* h = reinterpret_cast<EvtHandle*>(xh);
  {
    std::lock_guard lock(g_mu);
    std::vector<uint32_t> mine;
    for (auto& [key, p] : g_ports) {
      if (p.owner == h) mine.push_back(key.second);
    }
    for (uint32_t port : mine) UnbindLocked(h, port);
  }
  delete h;
  return 0;
}
int EvtFd(xenevtchn_handle* xh) { return reinterpret_cast<EvtHandle*>(xh)->flag.fd; }
int EvtNotify(xenevtchn_handle* xh, evtchn_port_t port) {
  auto* h = reinterpret_cast<EvtHandle*>(xh);
  std::lock_guard lock(g_mu);
  Port* p = OwnPort(h, port);
  if (p == nullptr) {
    errno = EINVAL;
    return -1;
  }
  if (p->interdomain && p->remote_port != 0) RaiseLocked(p->remote_domid, p->remote_port);
  return 0;
}
xenevtchn_port_or_error_t EvtBindUnbound(xenevtchn_handle* xh, uint32_t domid) {
  auto* h = reinterpret_cast<EvtHandle*>(xh);
  std::lock_guard lock(g_mu);
  const uint32_t port = NewPortLocked(h);
  g_ports[{h->domid, port}].remote_domid = domid;
  return static_cast<int>(port);
}
xenevtchn_port_or_error_t EvtBindInterdomain(xenevtchn_handle* xh, uint32_t domid,
                                             evtchn_port_t remote_port) {
  auto* h = reinterpret_cast<EvtHandle*>(xh);
  std::lock_guard lock(g_mu);
  auto it = g_ports.find({domid, remote_port});
  if (it == g_ports.end() || it->second.interdomain || it->second.remote_domid != h->domid) {
    errno = EINVAL;
    return -1;
  }
  const uint32_t port = NewPortLocked(h);
  Port& mine = g_ports[{h->domid, port}];
  mine.interdomain = true;
  mine.remote_domid = domid;
  mine.remote_port = remote_port;
  Port& theirs = g_ports[{domid, remote_port}];
  theirs.interdomain = true;
  theirs.remote_port = port;
  // Xen delivers one event on a freshly bound interdomain port.
  Enqueue(h->domid, port, mine);
  return static_cast<int>(port);
}
int EvtUnbind(xenevtchn_handle* xh, evtchn_port_t port) {
  auto* h = reinterpret_cast<EvtHandle*>(xh);
  std::lock_guard lock(g_mu);
  if (OwnPort(h, port) == nullptr) {
    errno = EINVAL;
    return -1;
  }
  UnbindLocked(h, port);
  return 0;
}
xenevtchn_port_or_error_t EvtPending(xenevtchn_handle* xh) {
  auto* h = reinterpret_cast<EvtHandle*>(xh);
  std::lock_guard lock(g_mu);
  if (h->queue.empty()) {
    // The real library read()s /dev/xen/evtchn: without O_NONBLOCK on xenevtchn_fd it
    // blocks until the next event, which may never come. Make that caller's bug loud.
    if ((fcntl(h->flag.fd, F_GETFL) & O_NONBLOCK) == 0) {
      std::fprintf(stderr,
                   "xen_double: xenevtchn_pending with nothing pending on a blocking handle "
                   "(would block on real Xen; set O_NONBLOCK on xenevtchn_fd)\n");
      std::abort();
    }
    h->flag.Clear();
    errno = EAGAIN;
    return -1;
  }
  const uint32_t port = h->queue.front();
  h->queue.pop_front();
  if (h->queue.empty()) h->flag.Clear();
  Port* p = OwnPort(h, port);
  if (p != nullptr) {
    p->queued = false;
    p->masked = true;  // until unmasked, as the evtchn driver does
  }
  return static_cast<int>(port);
}
int EvtUnmask(xenevtchn_handle* xh, evtchn_port_t port) {
  auto* h = reinterpret_cast<EvtHandle*>(xh);
  std::lock_guard lock(g_mu);
  Port* p = OwnPort(h, port);
  if (p == nullptr) {
    errno = EINVAL;
    return -1;
  }
  p->masked = false;
  if (p->pending) {
    p->pending = false;
    Enqueue(h->domid, port, *p);
  }
  return 0;
}

// ---- XenStore ---------------------------------------------------------------------------

struct XsHandle {
  uint32_t domid;
  Flag flag;
  std::set<std::pair<std::string, std::string>> watches;   // (path, token)
  std::deque<std::pair<std::string, std::string>> events;  // (path, token)
};

std::map<std::string, std::string> g_nodes;
std::set<XsHandle*> g_xs_handles;

bool IsAtOrBelow(const std::string& path, const std::string& top) {
  if (path.size() < top.size() || path.compare(0, top.size(), top) != 0) return false;
  return path.size() == top.size() || path[top.size()] == '/' || top == "/";
}

void FireLocked(const std::string& path) {
  for (XsHandle* h : g_xs_handles) {
    for (const auto& [wpath, token] : h->watches) {
      // A watch fires for changes at or below its path, and for the removal of a parent.
      if (IsAtOrBelow(path, wpath) || IsAtOrBelow(wpath, path)) {
        h->events.emplace_back(path, token);
        h->flag.Raise();
      }
    }
  }
}

void WriteLocked(const std::string& path, const std::string& value) {
  // Missing parents appear with empty values.
  for (size_t pos = path.find('/', 1); pos != std::string::npos; pos = path.find('/', pos + 1)) {
    g_nodes.try_emplace(path.substr(0, pos), "");
  }
  g_nodes[path] = value;
  FireLocked(path);
}

void RmLocked(const std::string& path) {
  bool any = false;
  for (auto it = g_nodes.lower_bound(path); it != g_nodes.end() && IsAtOrBelow(it->first, path);) {
    it = g_nodes.erase(it);
    any = true;
  }
  if (any) FireLocked(path);
}

// One malloc'd block: n pointers, then the strings they point to.
char** StringBlock(const std::vector<std::string>& items) {
  size_t bytes = items.size() * sizeof(char*);
  for (const auto& s : items) bytes += s.size() + 1;
  char** vec = static_cast<char**>(std::malloc(bytes == 0 ? 1 : bytes));
  char* text = reinterpret_cast<char*>(vec + items.size());
  for (size_t i = 0; i < items.size(); ++i) {
    std::memcpy(text, items[i].c_str(), items[i].size() + 1);
    vec[i] = text;
    text += items[i].size() + 1;
  }
  return vec;
}

XsHandle* X(struct xs_handle* h) { return reinterpret_cast<XsHandle*>(h); }

struct xs_handle* XsOpen(unsigned long) {
  if (t_domid == kNoDomain) {
    errno = ENOENT;
    return nullptr;
  }
  auto* h = new XsHandle{t_domid, {}, {}, {}};
  std::lock_guard lock(g_mu);
  g_xs_handles.insert(h);
  return reinterpret_cast<struct xs_handle*>(h);
}
void XsClose(struct xs_handle* h) {
  if (h == nullptr) return;
  {
    std::lock_guard lock(g_mu);
    g_xs_handles.erase(X(h));
  }
  delete X(h);
}
void* XsRead(struct xs_handle*, xs_transaction_t, const char* path, unsigned int* len) {
  std::lock_guard lock(g_mu);
  auto it = g_nodes.find(path);
  if (it == g_nodes.end()) {
    errno = ENOENT;
    return nullptr;
  }
  char* out = static_cast<char*>(std::malloc(it->second.size() + 1));
  std::memcpy(out, it->second.c_str(), it->second.size() + 1);
  if (len != nullptr) *len = static_cast<unsigned>(it->second.size());
  return out;
}
bool XsWrite(struct xs_handle*, xs_transaction_t, const char* path, const void* data,
             unsigned int len) {
  std::lock_guard lock(g_mu);
  WriteLocked(path, std::string(static_cast<const char*>(data), len));
  return true;
}
bool XsRm(struct xs_handle*, xs_transaction_t, const char* path) {
  std::lock_guard lock(g_mu);
  if (g_nodes.find(path) == g_nodes.end()) {
    errno = ENOENT;
    return false;
  }
  RmLocked(path);
  return true;
}
char** XsDirectory(struct xs_handle*, xs_transaction_t, const char* path, unsigned int* num) {
  std::lock_guard lock(g_mu);
  const std::string dir = path;
  if (g_nodes.find(dir) == g_nodes.end()) {
    errno = ENOENT;
    return nullptr;
  }
  std::vector<std::string> children;
  const std::string prefix = dir + "/";
  for (auto it = g_nodes.lower_bound(prefix);
       it != g_nodes.end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
    const std::string rest = it->first.substr(prefix.size());
    if (rest.find('/') == std::string::npos) children.push_back(rest);
  }
  *num = static_cast<unsigned>(children.size());
  return StringBlock(children);
}
bool XsWatch(struct xs_handle* h, const char* path, const char* token) {
  std::lock_guard lock(g_mu);
  X(h)->watches.emplace(path, token);
  // xenstored fires every new watch once.
  X(h)->events.emplace_back(path, token);
  X(h)->flag.Raise();
  return true;
}
bool XsUnwatch(struct xs_handle* h, const char* path, const char* token) {
  std::lock_guard lock(g_mu);
  return X(h)->watches.erase({path, token}) == 1;
}
int XsFileno(struct xs_handle* h) { return X(h)->flag.fd; }
char** XsCheckWatch(struct xs_handle* h) {
  std::lock_guard lock(g_mu);
  XsHandle* x = X(h);
  if (x->events.empty()) {
    x->flag.Clear();
    errno = EAGAIN;
    return nullptr;
  }
  auto [path, token] = x->events.front();
  x->events.pop_front();
  if (x->events.empty()) x->flag.Clear();
  return StringBlock({path, token});
}
char** XsReadWatch(struct xs_handle* h, unsigned int* num) {
  char** r = XsCheckWatch(h);
  if (r != nullptr && num != nullptr) *num = 2;
  return r;
}

}  // namespace

ScopedDomain::ScopedDomain(uint32_t domid) : previous_(t_domid) { t_domid = domid; }
ScopedDomain::~ScopedDomain() { t_domid = previous_; }

backend::xen::XenApi Api() {
  backend::xen::XenApi api{};
  api.gnttab_open = GnttabOpen;
  api.gnttab_close = GnttabClose;
  api.gnttab_map_grant_ref = GnttabMapGrantRef;
  api.gnttab_map_grant_refs = GnttabMapGrantRefs;
  api.gnttab_unmap = GnttabUnmap;
  api.gnttab_map_grant_ref_notify = GnttabMapGrantRefNotify;
  api.gntshr_open = GntshrOpen;
  api.gntshr_close = GntshrClose;
  api.gntshr_share_pages = GntshrSharePages;
  api.gntshr_unshare = GntshrUnshare;
  api.gntshr_share_page_notify = GntshrSharePageNotify;
  api.evtchn_open = EvtOpen;
  api.evtchn_close = EvtClose;
  api.evtchn_fd = EvtFd;
  api.evtchn_notify = EvtNotify;
  api.evtchn_bind_unbound_port = EvtBindUnbound;
  api.evtchn_bind_interdomain = EvtBindInterdomain;
  api.evtchn_unbind = EvtUnbind;
  api.evtchn_pending = EvtPending;
  api.evtchn_unmask = EvtUnmask;
  api.xs_open = XsOpen;
  api.xs_close = XsClose;
  api.xs_read = XsRead;
  api.xs_write = XsWrite;
  api.xs_rm = XsRm;
  api.xs_directory = XsDirectory;
  api.xs_watch = XsWatch;
  api.xs_unwatch = XsUnwatch;
  api.xs_fileno = XsFileno;
  api.xs_check_watch = XsCheckWatch;
  api.xs_read_watch = XsReadWatch;
  return api;
}

void Reset() {
  std::lock_guard lock(g_mu);
  for (auto& [addr, m] : g_mappings) munmap(addr, m.pages * kPage);
  for (auto& [addr, s] : g_shares) munmap(addr, s.refs.size() * kPage);
  g_mappings.clear();
  g_shares.clear();
  g_grants.clear();
  g_next_ref.clear();
  g_ports.clear();
  g_next_port.clear();
  g_nodes.clear();
}

void StoreWrite(const std::string& path, const std::string& value) {
  std::lock_guard lock(g_mu);
  WriteLocked(path, value);
}

std::optional<std::string> StoreRead(const std::string& path) {
  std::lock_guard lock(g_mu);
  auto it = g_nodes.find(path);
  if (it == g_nodes.end()) return std::nullopt;
  return it->second;
}

void StoreRm(const std::string& path) {
  std::lock_guard lock(g_mu);
  RmLocked(path);
}

size_t LiveShares() {
  std::lock_guard lock(g_mu);
  return g_shares.size();
}

size_t LiveMappings() {
  std::lock_guard lock(g_mu);
  return g_mappings.size();
}

size_t LivePorts() {
  std::lock_guard lock(g_mu);
  return g_ports.size();
}

}  // namespace xsock::xen_double
