// The test double behaves as the shared notes say real Xen does (tests/xen/xen_double.h).
#include "tests/xen/xen_double.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

#include <catch2/catch.hpp>

namespace xd = xsock::xen_double;

namespace {

bool Readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  return poll(&p, 1, 0) == 1;
}

}  // namespace

TEST_CASE("double: outside any domain the libraries fail to open with ENOENT, as outside Xen") {
  const auto api = xd::Api();
  errno = 0;
  CHECK(api.gnttab_open(nullptr, 0) == nullptr);
  CHECK(errno == ENOENT);
  CHECK(api.evtchn_open(nullptr, 0) == nullptr);
  CHECK(api.xs_open(0) == nullptr);
}

TEST_CASE("double: shared grant pages are the same memory on both sides") {
  xd::Reset();
  const auto api = xd::Api();
  xengntshr_handle* gs;
  xengnttab_handle* gt;
  xengnttab_handle* other;
  {
    xd::ScopedDomain as(5);
    gs = api.gntshr_open(nullptr, 0);
  }
  {
    xd::ScopedDomain as(0);
    gt = api.gnttab_open(nullptr, 0);
  }
  {
    xd::ScopedDomain as(7);
    other = api.gnttab_open(nullptr, 0);
  }
  uint32_t refs[3];
  auto* mine = static_cast<uint8_t*>(api.gntshr_share_pages(gs, 0, 3, refs, 1));
  REQUIRE(mine != nullptr);
  uint32_t domids[3] = {5, 5, 5};
  auto* theirs = static_cast<uint8_t*>(
      api.gnttab_map_grant_refs(gt, 3, domids, refs, PROT_READ | PROT_WRITE));
  REQUIRE(theirs != nullptr);
  mine[0] = 1;
  mine[4096 * 2 + 7] = 2;
  CHECK(theirs[0] == 1);
  CHECK(theirs[4096 * 2 + 7] == 2);
  theirs[4096] = 3;
  CHECK(mine[4096] == 3);
  // A single page, mapped twice: still the same memory.
  auto* one = static_cast<uint8_t*>(api.gnttab_map_grant_ref(gt, 5, refs[2], PROT_READ));
  REQUIRE(one != nullptr);
  CHECK(one[7] == 2);
  // Not granted to domain 7; unknown refs.
  errno = 0;
  CHECK(api.gnttab_map_grant_ref(other, 5, refs[0], PROT_READ) == nullptr);
  CHECK(errno == EINVAL);
  CHECK(api.gnttab_map_grant_ref(gt, 5, 12345, PROT_READ) == nullptr);
  CHECK(xd::LiveMappings() == 2);
  CHECK(api.gnttab_unmap(gt, one, 2) == -1);  // wrong count
  CHECK(api.gnttab_unmap(gt, one, 1) == 0);
  CHECK(api.gnttab_unmap(gt, theirs, 3) == 0);
  CHECK(api.gntshr_unshare(gs, mine, 3) == 0);
  CHECK(xd::LiveMappings() == 0);
  CHECK(xd::LiveShares() == 0);
  api.gntshr_close(gs);
  api.gnttab_close(gt);
  api.gnttab_close(other);
}

TEST_CASE("double: read-only grants cannot be mapped writable") {
  xd::Reset();
  const auto api = xd::Api();
  xd::ScopedDomain as(3);
  xengntshr_handle* gs = api.gntshr_open(nullptr, 0);
  uint32_t ref;
  void* p = api.gntshr_share_pages(gs, 0, 1, &ref, 0);
  REQUIRE(p != nullptr);
  xd::ScopedDomain as0(0);
  xengnttab_handle* gt = api.gnttab_open(nullptr, 0);
  errno = 0;
  CHECK(api.gnttab_map_grant_ref(gt, 3, ref, PROT_READ | PROT_WRITE) == nullptr);
  CHECK(errno == EACCES);
  void* ro = api.gnttab_map_grant_ref(gt, 3, ref, PROT_READ);
  CHECK(ro != nullptr);
  api.gnttab_unmap(gt, ro, 1);
  api.gntshr_unshare(gs, p, 1);
  api.gnttab_close(gt);
  api.gntshr_close(gs);
}

TEST_CASE("double: binding delivers one spurious event; notifies coalesce; masked until unmask") {
  xd::Reset();
  const auto api = xd::Api();
  xenevtchn_handle* guest;
  xenevtchn_handle* dom0;
  {
    xd::ScopedDomain as(4);
    guest = api.evtchn_open(nullptr, 0);
  }
  {
    xd::ScopedDomain as(0);
    dom0 = api.evtchn_open(nullptr, 0);
  }
  // As /dev/xen/evtchn: the fd starts blocking (xenevtchn_pending would then wait for an
  // event); a poll-driven user sets O_NONBLOCK, and pending fails with EAGAIN when empty.
  for (xenevtchn_handle* h : {guest, dom0}) {
    const int fl = fcntl(api.evtchn_fd(h), F_GETFL);
    CHECK((fl & O_NONBLOCK) == 0);
    REQUIRE(fcntl(api.evtchn_fd(h), F_SETFL, fl | O_NONBLOCK) == 0);
  }
  const int unbound = api.evtchn_bind_unbound_port(guest, 0);
  REQUIRE(unbound > 0);
  // Only the domain the port was offered to may bind it.
  {
    xd::ScopedDomain as(9);
    xenevtchn_handle* stranger = api.evtchn_open(nullptr, 0);
    CHECK(api.evtchn_bind_interdomain(stranger, 4, unbound) == -1);
    api.evtchn_close(stranger);
  }
  const int local = api.evtchn_bind_interdomain(dom0, 4, unbound);
  REQUIRE(local > 0);
  // The spurious event.
  CHECK(Readable(api.evtchn_fd(dom0)));
  CHECK(api.evtchn_pending(dom0) == local);
  CHECK_FALSE(Readable(api.evtchn_fd(dom0)));
  CHECK(api.evtchn_pending(dom0) == -1);
  CHECK(errno == EAGAIN);
  // Masked after delivery: notifications wait, and coalesce into one.
  api.evtchn_notify(guest, unbound);
  api.evtchn_notify(guest, unbound);
  CHECK_FALSE(Readable(api.evtchn_fd(dom0)));
  api.evtchn_unmask(dom0, local);
  CHECK(Readable(api.evtchn_fd(dom0)));
  CHECK(api.evtchn_pending(dom0) == local);
  CHECK(api.evtchn_pending(dom0) == -1);
  api.evtchn_unmask(dom0, local);
  // Unmasked: three notifications before anyone looks are one event.
  for (int i = 0; i < 3; ++i) api.evtchn_notify(guest, unbound);
  CHECK(api.evtchn_pending(dom0) == local);
  CHECK(api.evtchn_pending(dom0) == -1);
  api.evtchn_unmask(dom0, local);
  // The other direction.
  api.evtchn_notify(dom0, local);
  CHECK(api.evtchn_pending(guest) == unbound);
  CHECK(xd::LivePorts() == 2);
  api.evtchn_close(dom0);
  api.evtchn_notify(guest, unbound);  // the peer is gone: nothing happens
  CHECK(api.evtchn_pending(guest) == -1);
  api.evtchn_close(guest);
  CHECK(xd::LivePorts() == 0);
}

TEST_CASE("double: XenStore reads, writes, directories and watches") {
  xd::Reset();
  const auto api = xd::Api();
  xd::ScopedDomain as(0);
  struct xs_handle* xs = api.xs_open(0);
  REQUIRE(xs != nullptr);
  unsigned len = 0;
  CHECK(api.xs_read(xs, XBT_NULL, "/a/b", &len) == nullptr);
  CHECK(errno == ENOENT);
  REQUIRE(api.xs_watch(xs, "/a", "tok"));
  // Fires once at registration.
  CHECK(Readable(api.xs_fileno(xs)));
  char** w = api.xs_check_watch(xs);
  REQUIRE(w != nullptr);
  CHECK(std::string(w[XS_WATCH_PATH]) == "/a");
  CHECK(std::string(w[XS_WATCH_TOKEN]) == "tok");
  std::free(w);
  CHECK(api.xs_check_watch(xs) == nullptr);
  CHECK_FALSE(Readable(api.xs_fileno(xs)));
  REQUIRE(api.xs_write(xs, XBT_NULL, "/a/b/c", "hi", 2));
  xd::StoreWrite("/a/b/d", "x");
  xd::StoreWrite("/z", "not watched");
  w = api.xs_check_watch(xs);
  REQUIRE(w != nullptr);
  CHECK(std::string(w[XS_WATCH_PATH]) == "/a/b/c");
  std::free(w);
  w = api.xs_check_watch(xs);
  REQUIRE(w != nullptr);
  CHECK(std::string(w[XS_WATCH_PATH]) == "/a/b/d");
  std::free(w);
  CHECK(api.xs_check_watch(xs) == nullptr);
  auto* v = static_cast<char*>(api.xs_read(xs, XBT_NULL, "/a/b/c", &len));
  REQUIRE(v != nullptr);
  CHECK(std::string(v, len) == "hi");
  std::free(v);
  unsigned num = 0;
  char** dir = api.xs_directory(xs, XBT_NULL, "/a/b", &num);
  REQUIRE(dir != nullptr);
  REQUIRE(num == 2);
  CHECK(std::string(dir[0]) == "c");
  CHECK(std::string(dir[1]) == "d");
  std::free(dir);
  REQUIRE(api.xs_rm(xs, XBT_NULL, "/a/b"));
  CHECK_FALSE(xd::StoreRead("/a/b/c"));
  w = api.xs_check_watch(xs);
  REQUIRE(w != nullptr);
  CHECK(std::string(w[XS_WATCH_PATH]) == "/a/b");
  std::free(w);
  api.xs_close(xs);
}
