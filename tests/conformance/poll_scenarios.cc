// Readiness scenarios: epoll level- and edge-triggered sequences, EPOLLONESHOT,
// EPOLLEXCLUSIVE, epoll nested in epoll and in poll, select.
#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <unistd.h>

#include <cerrno>

#include "tests/conformance/scenario.h"

namespace xsock::conform {
namespace {

int EpollWith(int fd, uint32_t events) {
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = events;
  ev.data.fd = fd;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) Sayf("epoll_ctl ADD: {}", Ret(-1));
  return ep;
}

std::string Recv(int fd, size_t n, int flags = 0) {
  char buf[256];
  const ssize_t r = recv(fd, buf, std::min(n, sizeof buf), flags);
  if (r <= 0) return Ret(r);
  return fmt::format("{} {}", r, Show(buf, static_cast<size_t>(r)));
}

// A peer that accepts, then for each step k = 1, 2, ... waits for "app.sK" and performs
// ACTIONS[k-1]: a string to send, or "" to close.
void ScriptedPeer(std::initializer_list<const char*> actions) {
  const int l = Listen();
  const int c = AcceptOne(l);
  int k = 0;
  for (const char* a : actions) {
    Await(fmt::format("app.s{}", ++k));
    if (*a == '\0') {
      close(c);
      Post("peer.closed");
      return;
    }
    SendAll(c, a);
    Post(fmt::format("peer.s{}", k));
  }
  Await("app.done");
  close(c);
}

}  // namespace

constexpr uint32_t kInOutRdhupEv = EPOLLIN | EPOLLOUT | EPOLLRDHUP;

// ---------------------------------------------------------------------------------------
SCENARIO(epoll_level, 24400, "level-triggered epoll: OUT, IN|OUT while data is queued, RDHUP at EOF");
void App_epoll_level() {
  const int fd = ConnectTo();
  const int ep = EpollWith(fd, kInOutRdhupEv);
  Sayf("idle: {}", EpollOnce(ep, 0));
  Post("app.s1");
  Sayf("until IN: {}", EpollUntil(ep, EPOLLIN));
  Sayf("again: {}", EpollOnce(ep, 0));
  Await("peer.s1");
  WaitInq(fd, 10);
  Sayf("recv 5: {}", Recv(fd, 5));
  Sayf("after partial read: {}", EpollOnce(ep, 0));
  Sayf("recv 5: {}", Recv(fd, 5));
  Sayf("after reading all: {}", EpollOnce(ep, 0));
  Post("app.s2");
  Sayf("until RDHUP: {}", EpollUntil(ep, EPOLLRDHUP));
  Sayf("recv: {}", Recv(fd, 100));
  Sayf("after EOF read: {}", EpollOnce(ep, 0));
  Sayf("after EOF read again: {}", EpollOnce(ep, 0));
  Sayf("shutdown(SHUT_WR): {}", Ret(shutdown(fd, SHUT_WR)));
  Sayf("after both FINs: {}", EpollUntil(ep, EPOLLHUP));
}
void Peer_epoll_level() { ScriptedPeer({"0123456789", ""}); }

// ---------------------------------------------------------------------------------------
SCENARIO(epoll_edge_read, 24410, "edge-triggered epoll on the read side: one event per arrival");
void App_epoll_edge_read() {
  const int fd = ConnectTo();
  const int ep = EpollWith(fd, kInOutRdhupEv | EPOLLET);
  Sayf("initial: {}", EpollOnce(ep, 0));
  Sayf("no new edge: {}", EpollOnce(ep, 0));
  Post("app.s1");
  Sayf("until IN: {}", EpollUntil(ep, EPOLLIN));
  Sayf("no new edge: {}", EpollOnce(ep, 0));
  Sayf("recv 2: {}", Recv(fd, 2));
  Sayf("after partial read: {}", EpollOnce(ep, 0));
  Post("app.s2");
  Await("peer.s2");
  Sayf("more data while some is unread: {}", EpollUntil(ep, EPOLLIN, 1000));
  Sayf("FIONREAD: {}", WaitInq(fd, 8));
  Sayf("recv: {}", Recv(fd, 100));
  Sayf("recv: {}", Recv(fd, 100, MSG_DONTWAIT));
  Sayf("after draining: {}", EpollOnce(ep, 0));
  Post("app.s3");
  Sayf("new data after draining: {}", EpollUntil(ep, EPOLLIN));
  Sayf("recv: {}", Recv(fd, 100));
  Post("app.s4");
  Sayf("until RDHUP: {}", EpollUntilSettled(ep, EPOLLRDHUP));
  Sayf("no new edge: {}", EpollOnce(ep, 0));
  Sayf("recv: {}", Recv(fd, 100));
  Sayf("after EOF read: {}", EpollOnce(ep, 0));
}
void Peer_epoll_edge_read() { ScriptedPeer({"01234", "56789", "abc", ""}); }

// ---------------------------------------------------------------------------------------
SCENARIO(epoll_edge_write, 24420, "edge-triggered EPOLLOUT comes back once the peer drains");
void App_epoll_edge_write() {
  const int fd = ConnectTo();
  fcntl(fd, F_SETFL, O_NONBLOCK);
  const int ep = EpollWith(fd, EPOLLOUT | EPOLLET);
  Sayf("initial: {}", EpollOnce(ep, 0));
  PatternSender sender;
  sender.FillUntilFull(fd);
  Sayf("send on full buffers: {}", Ret(sender.SendSome(fd, 1000)));
  Post("app.total", sender.Summary());
  Sayf("after the peer drained: {}", EpollUntil(ep, EPOLLOUT));
  Sayf("send 1000: {}", Ret(sender.SendSome(fd, 1000)));
  Post("app.total2", sender.Summary());
  shutdown(fd, SHUT_WR);
  Await("peer.done");
}
void Peer_epoll_edge_write() {
  const int l = Listen();
  const int c = AcceptOne(l);
  const std::string summary = Await("app.total");
  const uint64_t total = std::stoull(summary.substr(0, summary.find(' ')));
  // Read exactly what the app queued, so its buffers empty without an EOF.
  std::vector<char> buf(256 * 1024);
  testprog::StreamHash h;
  uint64_t got = 0;
  for (int i = 0; i < 1000000 && got < total; ++i) {
    const ssize_t r = recv(c, buf.data(), std::min<uint64_t>(buf.size(), total - got), 0);
    if (r <= 0) break;
    h.Update(reinterpret_cast<unsigned char*>(buf.data()), static_cast<size_t>(r));
    got += static_cast<uint64_t>(r);
  }
  const Drained rest = ReadToEnd(c);
  Sayf("first part equals what the app queued: {}",
       fmt::format("{} {}", got, h.Digest()) == summary ? "yes" : "no");
  Sayf("rest: {} bytes then {}", rest.bytes, rest.end);
  Await("app.total2");
  Post("peer.done");
}

// ---------------------------------------------------------------------------------------
SCENARIO(epoll_oneshot, 24430, "EPOLLONESHOT disables after one event; EPOLL_CTL_MOD rearms");
void App_epoll_oneshot() {
  const int fd = ConnectTo();
  const int ep = EpollWith(fd, EPOLLIN | EPOLLONESHOT);
  Post("app.s1");
  Sayf("until IN: {}", EpollUntil(ep, EPOLLIN));
  Post("app.s2");
  Await("peer.s2");
  Sayf("FIONREAD: {}", WaitInq(fd, 2));
  Sayf("disarmed, more data: {}", EpollOnce(ep, 200));
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLONESHOT;
  ev.data.fd = fd;
  Sayf("rearm: {}", Ret(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev)));
  Sayf("after rearm: {}", EpollOnce(ep, 0));
  Sayf("disarmed again: {}", EpollOnce(ep, 0));
  Sayf("recv: {}", Recv(fd, 100));
  Sayf("rearm: {}", Ret(epoll_ctl(ep, EPOLL_CTL_MOD, fd, &ev)));
  Sayf("after rearm with nothing queued: {}", EpollOnce(ep, 0));
  Sayf("delete: {}", Ret(epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr)));
  Sayf("delete again: {}", Ret(epoll_ctl(ep, EPOLL_CTL_DEL, fd, nullptr)));
  Post("app.done");
}
void Peer_epoll_oneshot() { ScriptedPeer({"a", "b"}); }

// ---------------------------------------------------------------------------------------
SCENARIO(epoll_exclusive, 24440, "EPOLLEXCLUSIVE: accepted on ADD, refused on MOD and with ONESHOT");
void App_epoll_exclusive() {
  const int fd = ConnectTo();
  const int ep1 = EpollWith(fd, EPOLLIN | EPOLLEXCLUSIVE);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLEXCLUSIVE;
  ev.data.fd = fd;
  Sayf("MOD with EPOLLEXCLUSIVE: {}", Ret(epoll_ctl(ep1, EPOLL_CTL_MOD, fd, &ev)));
  const int ep2 = epoll_create1(EPOLL_CLOEXEC);
  ev.events = EPOLLIN | EPOLLEXCLUSIVE | EPOLLONESHOT;
  Sayf("ADD EXCLUSIVE|ONESHOT: {}", Ret(epoll_ctl(ep2, EPOLL_CTL_ADD, fd, &ev)));
  ev.events = EPOLLIN | EPOLLEXCLUSIVE;
  Sayf("ADD to a second epoll: {}", Ret(epoll_ctl(ep2, EPOLL_CTL_ADD, fd, &ev)));
  Sayf("idle: {}", EpollOnce(ep1, 0));
  Post("app.s1");
  Sayf("until IN: {}", EpollUntil(ep1, EPOLLIN));
  Sayf("recv: {}", Recv(fd, 100));
  Post("app.done");
}
void Peer_epoll_exclusive() { ScriptedPeer({"x"}); }

// ---------------------------------------------------------------------------------------
SCENARIO(epoll_nested, 24450, "socket in epoll in epoll, the outer one in poll and select");
void App_epoll_nested() {
  const int fd = ConnectTo();
  const int inner = EpollWith(fd, EPOLLIN);
  const int outer = EpollWith(inner, EPOLLIN);
  Sayf("poll(outer) idle: {}", PollBits(PollOnce(outer, POLLIN, 0)));
  Post("app.s1");
  Sayf("poll(outer) until IN: {}", PollBits(PollUntil(outer, POLLIN, POLLIN)));
  Sayf("epoll_wait(outer): {}", EpollOnce(outer, 0));
  Sayf("epoll_wait(inner): {}", EpollOnce(inner, 0));
  fd_set r;
  FD_ZERO(&r);
  FD_SET(outer, &r);
  timeval tv{0, 0};
  const std::string n = Ret(select(outer + 1, &r, nullptr, nullptr, &tv));
  Sayf("select(outer): {} readable={}", n, FD_ISSET(outer, &r) ? 1 : 0);
  Sayf("recv: {}", Recv(fd, 100));
  Sayf("poll(outer) after reading: {}", PollBits(PollOnce(outer, POLLIN, 0)));
  Post("app.done");
}
void Peer_epoll_nested() { ScriptedPeer({"x"}); }

// ---------------------------------------------------------------------------------------
namespace {
std::string SelectOnce(int fd, int timeout_ms) {
  fd_set r, w, e;
  FD_ZERO(&r);
  FD_ZERO(&w);
  FD_ZERO(&e);
  FD_SET(fd, &r);
  FD_SET(fd, &w);
  FD_SET(fd, &e);
  timeval tv{timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  const int n = select(fd + 1, &r, &w, &e, &tv);
  if (n < 0) return Ret(n);
  return fmt::format("{}{}{}{}", n, FD_ISSET(fd, &r) ? " r" : "", FD_ISSET(fd, &w) ? " w" : "",
                     FD_ISSET(fd, &e) ? " e" : "");
}

// Waits (at most kWaitMs) until FD is readable and writable, then reports all three sets.
// Waiting for the settled state matters: xsock raises the two with two kernel events
// (after a refused connect, the token before the drain), the kernel with one.
std::string SelectUntilReadWrite(int fd) {
  const int64_t deadline = NowMs() + kWaitMs;
  std::string s;
  while (true) {
    const int64_t left = std::max<int64_t>(0, deadline - NowMs());
    fd_set r;
    FD_ZERO(&r);
    FD_SET(fd, &r);
    timeval tv{static_cast<time_t>(left / 1000), static_cast<suseconds_t>(left % 1000 * 1000)};
    select(fd + 1, &r, nullptr, nullptr, &tv);
    s = SelectOnce(fd, 0);
    if (s.find(" r w") != std::string::npos || left == 0) return s;
    SleepMs(1);
  }
}
}  // namespace

SCENARIO(select_masks, 24460, "select read/write/except sets: idle, data, EOF, refused connect");
void App_select_masks() {
  const int fd = ConnectTo();
  Sayf("idle: {}", SelectOnce(fd, 0));
  Post("app.s1");
  Sayf("until readable and writable: {}", SelectUntilReadWrite(fd));
  Sayf("recv: {}", Recv(fd, 100));
  Sayf("after reading: {}", SelectOnce(fd, 0));
  Post("app.s2");
  Sayf("until readable and writable (EOF): {}", SelectUntilReadWrite(fd));
  Sayf("recv: {}", Recv(fd, 100));
  const int bad = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  socklen_t len = 0;
  const sockaddr_storage ss = Loopback(AF_INET, 5, &len);  // nothing listens there
  Sayf("nonblocking connect to a closed port: {}",
       Ret(connect(bad, reinterpret_cast<const sockaddr*>(&ss), len)));
  Sayf("refused, until readable and writable: {}", SelectUntilReadWrite(bad));
  Sayf("SO_ERROR: {}", SoError(bad));
}
void Peer_select_masks() { ScriptedPeer({"hello", ""}); }

}  // namespace xsock::conform

namespace xsock::conform {

// ---------------------------------------------------------------------------------------
SCENARIO(epoll_before_connect, 24470,
         "registered with epoll before connect: the completion's events arrive (ET and LT)");
void App_epoll_before_connect() {
  Await("listen0");
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  const int et = EpollWith(fd, kInOutRdhupEv | EPOLLET);
  const int lt = EpollWith(fd, EPOLLOUT);
  Sayf("poll before connect: {}", PollBits(PollOnce(fd, POLLIN | POLLOUT | POLLRDHUP, 0)));
  Sayf("epoll before connect: {}", EpollOnce(et, 0));
  socklen_t len = 0;
  const sockaddr_storage ss = Loopback(AF_INET, 0, &len);
  Sayf("connect: {}", Ret(connect(fd, reinterpret_cast<const sockaddr*>(&ss), len)));
  Sayf("ET until OUT: {}", EpollUntil(et, EPOLLOUT));
  Sayf("LT: {}", EpollOnce(lt, 0));
  Sayf("SO_ERROR: {}", SoError(fd));
  Post("app.s1");
  Sayf("ET until IN: {}", EpollUntil(et, EPOLLIN));
  Sayf("recv: {}", Recv(fd, 100));
  // A second socket to a closed port, registered before its connect.
  const int bad = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  const int ep_bad = EpollWith(bad, kInOutRdhupEv);
  const sockaddr_storage closed = Loopback(AF_INET, 5, &len);
  Sayf("connect to a closed port: {}",
       Ret(connect(bad, reinterpret_cast<const sockaddr*>(&closed), len)));
  Sayf("until HUP: {}", EpollUntil(ep_bad, EPOLLHUP));
  Sayf("SO_ERROR: {}", SoError(bad));
  Post("app.done");
}
void Peer_epoll_before_connect() { ScriptedPeer({"data"}); }

// ---------------------------------------------------------------------------------------
SCENARIO(epoll_reset, 24480, "epoll masks of a reset connection, level- and edge-triggered");
void App_epoll_reset() {
  const int fd = ConnectTo();
  const int lt = EpollWith(fd, kInOutRdhupEv);
  const int et = EpollWith(fd, kInOutRdhupEv | EPOLLET);
  Sayf("ET initial: {}", EpollOnce(et, 0));
  Post("app.s1");
  Await("peer.closed");
  Sayf("LT until HUP: {}", EpollUntil(lt, EPOLLHUP));
  Sayf("ET: {}", EpollOnce(et, 0));
  Sayf("recv: {}", Recv(fd, 100));
  Sayf("LT after reading the error: {}", EpollOnce(lt, 0));
  Sayf("ET after reading the error: {}", EpollOnce(et, 0));
}
void Peer_epoll_reset() {
  const int l = Listen();
  const int c = AcceptOne(l);
  Await("app.s1");
  const linger lg{1, 0};
  setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(c);
  Post("peer.closed");
}

}  // namespace xsock::conform
