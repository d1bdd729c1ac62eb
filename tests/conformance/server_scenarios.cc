// Server-side scenarios: the app binds, listens and accepts; the peer connects to it.
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "tests/conformance/scenario.h"

namespace xsock::conform {
namespace {

std::string BindRet(int fd, int family, int offset) {
  socklen_t len = 0;
  sockaddr_storage ss = Loopback(family, offset, &len);
  if (offset < 0) {  // port 0
    if (family == AF_INET) {
      reinterpret_cast<sockaddr_in&>(ss).sin_port = 0;
    } else {
      reinterpret_cast<sockaddr_in6&>(ss).sin6_port = 0;
    }
  }
  return Ret(bind(fd, reinterpret_cast<const sockaddr*>(&ss), len));
}

// socket + SO_REUSEADDR + bind(Port(offset)) + listen(backlog), reporting each step that fails.
int AppListener(int offset = 0, int flags = 0, int backlog = 8) {
  const int fd = socket(AF_INET, SOCK_STREAM | flags, 0);
  const std::string so = SetInt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
  const std::string b = BindRet(fd, AF_INET, offset);
  const std::string l = Ret(listen(fd, backlog));
  Sayf("listener: SO_REUSEADDR {} bind {} listen {}", so, b, l);
  return fd;
}

std::string Recv(int fd, size_t n, int flags = 0) {
  char buf[256];
  const ssize_t r = recv(fd, buf, std::min(n, sizeof buf), flags);
  if (r <= 0) return Ret(r);
  return fmt::format("{} {}", r, Show(buf, static_cast<size_t>(r)));
}

std::string AcceptDescribe(int l, int flags, int* out) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  const int c = accept4(l, reinterpret_cast<sockaddr*>(&ss), &len, flags);
  if (out != nullptr) *out = c;
  if (c < 0) return Ret(c);
  return fmt::format("ok from {}", DescribeAddr(ss, len));
}

volatile sig_atomic_t g_alarms = 0;
char g_alarm_post[512];
void OnAlarm(int) {
  g_alarms = g_alarms + 1;
  if (g_alarm_post[0] != '\0') {
    const int fd = open(g_alarm_post, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) close(fd);
  }
}
void AlarmIn(int ms, bool restart, const char* post) {
  g_alarm_post[0] = '\0';
  if (post != nullptr) std::snprintf(g_alarm_post, sizeof g_alarm_post, "%s", SyncPath(post).c_str());
  struct sigaction sa {};
  sa.sa_handler = OnAlarm;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = restart ? SA_RESTART : 0;
  sigaction(SIGALRM, &sa, nullptr);
  itimerval it{};
  it.it_value.tv_usec = ms * 1000;
  setitimer(ITIMER_REAL, &it, nullptr);
}

}  // namespace

// ---------------------------------------------------------------------------------------
SCENARIO(bind_ephemeral, 24500, "bind to port 0, getsockname, listen, accept on the chosen port");
void App_bind_ephemeral() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  Sayf("bind 127.0.0.1:0: {}", BindRet(fd, AF_INET, -1));
  Sayf("getsockname: {}", DescribeSockName(fd));
  Sayf("getpeername: {}", DescribePeerName(fd));
  Sayf("SO_ACCEPTCONN before listen: {}", GetIntStr(fd, SOL_SOCKET, SO_ACCEPTCONN));
  Sayf("bind again: {}", BindRet(fd, AF_INET, 0));
  Sayf("listen: {}", Ret(listen(fd, 4)));
  Sayf("listen again: {}", Ret(listen(fd, 4)));
  Sayf("getsockname: {}", DescribeSockName(fd));
  Sayf("SO_ACCEPTCONN: {}", GetIntStr(fd, SOL_SOCKET, SO_ACCEPTCONN));
  Sayf("SO_TYPE={} SO_DOMAIN={} SO_PROTOCOL={} SO_ERROR={}", GetIntStr(fd, SOL_SOCKET, SO_TYPE),
       GetIntStr(fd, SOL_SOCKET, SO_DOMAIN), GetIntStr(fd, SOL_SOCKET, SO_PROTOCOL), SoError(fd));
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  Post("app.listening", std::to_string(PortOf(ss)));
  int c = -1;
  Sayf("accept: {}", AcceptDescribe(fd, 0, &c));
  Sayf("recv: {}", Recv(c, 100));
  Sayf("recv on the listener: {}", Recv(fd, 100, MSG_DONTWAIT));
  Sayf("send on the listener: {}", Ret(send(fd, "x", 1, MSG_NOSIGNAL)));
  socklen_t to_len = 0;
  const sockaddr_storage to = Loopback(AF_INET, 0, &to_len);
  Sayf("connect on the listener: {}",
       Ret(connect(fd, reinterpret_cast<const sockaddr*>(&to), to_len)));
  Sayf("shutdown on the listener: {}", Ret(shutdown(fd, SHUT_RDWR)));
  close(c);
  close(fd);
}
void Peer_bind_ephemeral() {
  const int port = std::stoi(Await("app.listening"));
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(static_cast<uint16_t>(port));
  Sayf("connect to the app's port: {}", Ret(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a)));
  SendAll(fd, "hi");
  close(fd);
}

// ---------------------------------------------------------------------------------------
SCENARIO(listen_accept, 24510, "listen on a fixed port, accept, names on both ends, exchange");
void App_listen_accept() {
  const int l = AppListener();
  Sayf("listener name: {}", DescribeSockName(l));
  Post("app.listening");
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  const int c = accept(l, reinterpret_cast<sockaddr*>(&ss), &len);
  Sayf("accept: {} from {}", c >= 0 ? "ok" : Ret(c), DescribeAddr(ss, len));
  Sayf("peer port equals the peer's getsockname: {}",
       std::to_string(PortOf(ss)) == Await("peer.port") ? "yes" : "no");
  Sayf("accepted getsockname: {}", DescribeSockName(c));
  Sayf("accepted getpeername: {}", DescribePeerName(c));
  Sayf("accepted flags: {}", FdFlags(c));
  Sayf("accepted SO_ACCEPTCONN={} SO_TYPE={} SO_ERROR={}", GetIntStr(c, SOL_SOCKET, SO_ACCEPTCONN),
       GetIntStr(c, SOL_SOCKET, SO_TYPE), SoError(c));
  Sayf("recv: {}", Recv(c, 100));
  Sayf("send: {}", Ret(send(c, "world", 5, MSG_NOSIGNAL)));
  Sayf("close accepted: {}", Ret(close(c)));
  Await("peer.done");
  Sayf("close listener: {}", Ret(close(l)));
}
void Peer_listen_accept() {
  Await("app.listening");
  const int fd = ConnectPeer();
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  Post("peer.port", std::to_string(PortOf(ss)));
  Sayf("peer's getpeername: {}", DescribePeerName(fd));
  SendAll(fd, "hello");
  Sayf("then: {}", DescribeDrained(ReadToEnd(fd)));
  close(fd);
  Post("peer.done");
}

// ---------------------------------------------------------------------------------------
SCENARIO(listen_accept_ipv6, 24590, "listen and accept on ::1");
void App_listen_accept_ipv6() {
  const int l = socket(AF_INET6, SOCK_STREAM, 0);
  Sayf("SO_REUSEADDR: {}", SetInt(l, SOL_SOCKET, SO_REUSEADDR, 1));
  Sayf("bind [::1]:fixed: {}", BindRet(l, AF_INET6, 0));
  Sayf("listen: {}", Ret(listen(l, 4)));
  Sayf("listener name: {}", DescribeSockName(l));
  Post("app.listening");
  int c = -1;
  Sayf("accept: {}", AcceptDescribe(l, 0, &c));
  Sayf("accepted getsockname: {}", DescribeSockName(c));
  Sayf("recv: {}", Recv(c, 100));
  Sayf("send: {}", Ret(send(c, "v6", 2, MSG_NOSIGNAL)));
  close(c);
  Await("peer.done");
}
void Peer_listen_accept_ipv6() {
  Await("app.listening");
  const int fd = ConnectPeer(AF_INET6);
  Sayf("peer's getpeername: {}", DescribePeerName(fd));
  SendAll(fd, "hello");
  Sayf("then: {}", DescribeDrained(ReadToEnd(fd)));
  Post("peer.done");
}

// ---------------------------------------------------------------------------------------
SCENARIO(accept_flags, 24520, "accept4 SOCK_NONBLOCK|SOCK_CLOEXEC, plain accept, short addrlen");
void App_accept_flags() {
  const int l = AppListener();
  Post("app.listening");
  Await("peer.connected");
  int c1 = -1, c2 = -1, c3 = -1;
  Sayf("accept4(NONBLOCK|CLOEXEC): {}", AcceptDescribe(l, SOCK_NONBLOCK | SOCK_CLOEXEC, &c1));
  Sayf("flags: {}", FdFlags(c1));
  Sayf("recv on it: {}", Recv(c1, 10));
  c2 = accept(l, nullptr, nullptr);
  Sayf("accept(NULL, NULL): {} flags: {}", c2 >= 0 ? "ok" : Ret(c2), FdFlags(c2));
  fcntl(l, F_SETFL, O_NONBLOCK);
  sockaddr_storage ss{};
  socklen_t len = 4;
  c3 = accept(l, reinterpret_cast<sockaddr*>(&ss), &len);
  Sayf("accept with addrlen 4 on a nonblocking listener: {} len={} flags: {}",
       c3 >= 0 ? "ok" : Ret(c3), len, FdFlags(c3));
  Sayf("accept4 with bad flags: {}", Ret(accept4(l, nullptr, nullptr, 0x40000000)));
  Sayf("accept on an empty nonblocking listener: {}", Ret(accept(l, nullptr, nullptr)));
  Post("app.done");
}
void Peer_accept_flags() {
  Await("app.listening");
  const int a = ConnectPeer();
  const int b = ConnectPeer();
  const int c = ConnectPeer();
  Post("peer.connected");
  Await("app.done");
  close(a);
  close(b);
  close(c);
}

// ---------------------------------------------------------------------------------------
SCENARIO(accept_nonblocking, 24530, "nonblocking listener: EAGAIN, poll/epoll/select readiness");
void App_accept_nonblocking() {
  const int l = AppListener(0, SOCK_NONBLOCK);
  Sayf("accept: {}", Ret(accept(l, nullptr, nullptr)));
  Sayf("poll(IN|OUT|RDHUP) idle: {}", PollBits(PollOnce(l, POLLIN | POLLOUT | POLLRDHUP, 0)));
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP;
  ev.data.fd = l;
  Sayf("epoll add: {}", Ret(epoll_ctl(ep, EPOLL_CTL_ADD, l, &ev)));
  Sayf("epoll idle: {}", EpollOnce(ep, 0));
  Post("app.listening");
  Sayf("poll until IN: {}", PollBits(PollUntil(l, POLLIN | POLLOUT | POLLRDHUP, POLLIN)));
  Sayf("epoll: {}", EpollOnce(ep, 0));
  fd_set r, w;
  FD_ZERO(&r);
  FD_ZERO(&w);
  FD_SET(l, &r);
  FD_SET(l, &w);
  timeval tv{0, 0};
  const int n = select(l + 1, &r, &w, nullptr, &tv);
  Sayf("select: {} r={} w={}", Ret(n), FD_ISSET(l, &r) ? 1 : 0, FD_ISSET(l, &w) ? 1 : 0);
  int c = -1;
  Sayf("accept: {}", AcceptDescribe(l, 0, &c));
  Sayf("accepted flags: {}", FdFlags(c));
  Sayf("accept: {}", Ret(accept(l, nullptr, nullptr)));
  Sayf("poll after accepting: {}", PollBits(PollOnce(l, POLLIN | POLLOUT | POLLRDHUP, 0)));
  Sayf("epoll after accepting: {}", EpollOnce(ep, 0));
  Post("app.done");
}
void Peer_accept_nonblocking() {
  Await("app.listening");
  const int fd = ConnectPeer();
  Await("app.done");
  close(fd);
}

// ---------------------------------------------------------------------------------------
SCENARIO(accept_eintr, 24540, "signal during a blocking accept: EINTR, and with SA_RESTART it goes on");
void App_accept_eintr() {
  const int l = AppListener();
  AlarmIn(200, false, nullptr);
  std::string r = Ret(accept(l, nullptr, nullptr));
  Sayf("accept, no SA_RESTART: {} alarms={}", r, int{g_alarms});
  AlarmIn(200, true, "app.alarm");
  int c = -1;
  r = AcceptDescribe(l, 0, &c);
  Sayf("accept, SA_RESTART: {} alarms={}", r, int{g_alarms});
  Sayf("recv: {}", Recv(c, 100));
  timeval tv{0, 200000};
  Sayf("SO_RCVTIMEO 200ms on the listener: {}",
       Ret(setsockopt(l, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)));
  Sayf("accept with SO_RCVTIMEO: {}", Ret(accept(l, nullptr, nullptr)));
}
void Peer_accept_eintr() {
  Await("app.alarm");
  usleep(50000);  // let the app go back to sleep in accept; only outcomes are printed
  const int fd = ConnectPeer();
  SendAll(fd, "late");
  close(fd);
}

// ---------------------------------------------------------------------------------------
SCENARIO(bind_conflicts, 24550, "EADDRINUSE, SO_REUSEADDR after TIME_WAIT, rebinding");
void App_bind_conflicts() {
  const int l = AppListener();
  Post("app.listening");
  const int c = accept(l, nullptr, nullptr);
  Sayf("accept: {}", c >= 0 ? "ok" : Ret(c));
  Sayf("recv: {}", Recv(c, 100));
  const int second = socket(AF_INET, SOCK_STREAM, 0);
  SetInt(second, SOL_SOCKET, SO_REUSEADDR, 1);
  Sayf("bind a second socket to the listening port, SO_REUSEADDR: {}", BindRet(second, AF_INET, 0));
  close(second);
  // The app closes first, so its side of the connection goes to TIME_WAIT.
  Sayf("close accepted: {}", Ret(close(c)));
  Await("peer.closed");
  Sayf("close listener: {}", Ret(close(l)));
  const int plain = socket(AF_INET, SOCK_STREAM, 0);
  Sayf("bind without SO_REUSEADDR during TIME_WAIT: {}", BindRet(plain, AF_INET, 0));
  close(plain);
  const int reuse = socket(AF_INET, SOCK_STREAM, 0);
  const std::string set = SetInt(reuse, SOL_SOCKET, SO_REUSEADDR, 1);
  Sayf("bind with SO_REUSEADDR during TIME_WAIT: {} {}", set, BindRet(reuse, AF_INET, 0));
  Sayf("listen: {}", Ret(listen(reuse, 4)));
  close(reuse);
  const int a = socket(AF_INET, SOCK_STREAM, 0);
  const int b = socket(AF_INET, SOCK_STREAM, 0);
  Sayf("bind fixed+1: {}", BindRet(a, AF_INET, 1));
  Sayf("bind fixed+1 again from another socket: {}", BindRet(b, AF_INET, 1));
  close(a);
  Sayf("bind fixed+1 after the first closed: {}", BindRet(b, AF_INET, 1));
  close(b);
}
void Peer_bind_conflicts() {
  Await("app.listening");
  const int fd = ConnectPeer();
  SendAll(fd, "x");
  Sayf("read: {}", DescribeDrained(ReadToEnd(fd)));
  close(fd);
  Post("peer.closed");
}

// ---------------------------------------------------------------------------------------
SCENARIO(fork_accept, 24560, "parent and child accept on one listener, each gets its own connection");
void App_fork_accept() {
  const int l = AppListener();
  Post("app.listening");
  auto serve = [&](const char* who) {
    alarm(6);  // bounded: a lost connection ends this accept with EINTR
    const int c = accept(l, nullptr, nullptr);
    const std::string msg = c >= 0 ? RecvExactly(c, 2) : Ret(c);
    Post(fmt::format("got.{}", who), msg);
    if (c >= 0) close(c);
  };
  struct sigaction sa {};
  sa.sa_handler = [](int) {};
  sigaction(SIGALRM, &sa, nullptr);
  const pid_t pid = fork();
  if (pid == 0) {
    serve("child");
    _exit(0);
  }
  serve("parent");
  int status = -1;
  waitpid(pid, &status, 0);
  std::vector<std::string> got = {Await("got.parent"), Await("got.child")};
  std::sort(got.begin(), got.end());
  Sayf("child exit status: {}", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  Sayf("messages received by the two processes: {} {}", got[0], got[1]);
  Post("app.done");
}
void Peer_fork_accept() {
  Await("app.listening");
  const int a = ConnectPeer();
  SendAll(a, "c1");
  const int b = ConnectPeer();
  SendAll(b, "c2");
  Sayf("a: {}", DescribeDrained(ReadToEnd(a)));
  Sayf("b: {}", DescribeDrained(ReadToEnd(b)));
  Await("app.done");
}

// ---------------------------------------------------------------------------------------
SCENARIO(accepted_close_modes, 24570, "accepted socket: SHUT_WR gives the peer EOF, linger 0 a RST");
void App_accepted_close_modes() {
  const int l = AppListener();
  Post("app.listening");
  Await("peer.connected");
  const int c1 = accept(l, nullptr, nullptr);
  const int c2 = accept(l, nullptr, nullptr);
  Sayf("accepted two: {}", c1 >= 0 && c2 >= 0 ? "yes" : "no");
  Sayf("first: shutdown(SHUT_WR) {}", Ret(shutdown(c1, SHUT_WR)));
  Sayf("first: recv {}", Recv(c1, 100));
  Sayf("first: recv {}", Recv(c1, 100));
  const linger lg{1, 0};
  Sayf("second: SO_LINGER {{1,0}} {}", Ret(setsockopt(c2, SOL_SOCKET, SO_LINGER, &lg, sizeof lg)));
  Sayf("second: close {}", Ret(close(c2)));
  Post("app.closed");
  Await("peer.done");
  close(c1);
}
void Peer_accepted_close_modes() {
  Await("app.listening");
  const int a = ConnectPeer();
  // Wait until the first is in the accept queue before the second, so they are accepted in order.
  usleep(100000);
  const int b = ConnectPeer();
  Post("peer.connected");
  Sayf("first: {}", DescribeDrained(ReadToEnd(a)));
  SendAll(a, "after");
  close(a);
  Await("app.closed");
  Sayf("second: poll until HUP {}", PollBits(PollUntil(b, POLLIN | POLLRDHUP, POLLHUP)));
  Sayf("second: {}", DescribeDrained(ReadToEnd(b)));
  Post("peer.done");
}

// ---------------------------------------------------------------------------------------
SCENARIO(defer_accept, 24580, "TCP_DEFER_ACCEPT: the listener wakes only once data arrived");
void App_defer_accept() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  SetInt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
  Sayf("bind: {}", BindRet(fd, AF_INET, 0));
  Sayf("TCP_DEFER_ACCEPT 5: {}", SetInt(fd, SOL_TCP, TCP_DEFER_ACCEPT, 5));
  Sayf("listen: {}", Ret(listen(fd, 4)));
  Sayf("TCP_DEFER_ACCEPT reads back: {}", GetIntStr(fd, SOL_TCP, TCP_DEFER_ACCEPT));
  Post("app.listening");
  Await("peer.connected");
  Sayf("poll 300 ms, connected but silent: {}", PollBits(PollOnce(fd, POLLIN, 300)));
  Post("app.checked");
  Sayf("poll until IN after data: {}", PollBits(PollUntil(fd, POLLIN, POLLIN)));
  int c = -1;
  Sayf("accept: {}", AcceptDescribe(fd, 0, &c));
  Sayf("recv: {}", Recv(c, 100));
  Post("app.done");
}
void Peer_defer_accept() {
  Await("app.listening");
  const int fd = ConnectPeer();
  Post("peer.connected");
  Await("app.checked");
  SendAll(fd, "data");
  Await("app.done");
  close(fd);
}

}  // namespace xsock::conform

namespace xsock::conform {

// ---------------------------------------------------------------------------------------
SCENARIO(listener_close_with_pending, 24600,
         "accept before listen; closing a listener resets the connections nobody accepted");
void App_listener_close_with_pending() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  SetInt(fd, SOL_SOCKET, SO_REUSEADDR, 1);
  Sayf("bind: {}", BindRet(fd, AF_INET, 0));
  Sayf("accept before listen: {}", Ret(accept(fd, nullptr, nullptr)));
  Sayf("listen: {}", Ret(listen(fd, 8)));
  Post("app.listening");
  Await("peer.connected");
  Sayf("poll until IN: {}", PollBits(PollUntil(fd, POLLIN, POLLIN)));
  Sayf("close the listener with two connections queued: {}", Ret(close(fd)));
  Post("app.closed");
  Await("peer.done");
}
void Peer_listener_close_with_pending() {
  Await("app.listening");
  const int a = ConnectPeer();
  const int b = ConnectPeer();
  Sayf("send on the first: {}", SendAll(a, "pending"));
  Post("peer.connected");
  Await("app.closed");
  Sayf("first: poll until HUP {}", PollBits(PollUntil(a, POLLIN | POLLRDHUP, POLLHUP)));
  Sayf("first: {}", DescribeDrained(ReadToEnd(a)));
  Sayf("second: poll until HUP {}", PollBits(PollUntil(b, POLLIN | POLLRDHUP, POLLHUP)));
  Sayf("second: {}", DescribeDrained(ReadToEnd(b)));
  Post("peer.done");
}

// ---------------------------------------------------------------------------------------
SCENARIO(dup_before_listen, 24620, "a duplicate made between bind and listen is the listener too");
void App_dup_before_listen() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  Sayf("SO_REUSEADDR: {}", SetInt(fd, SOL_SOCKET, SO_REUSEADDR, 1));
  Sayf("bind: {}", BindRet(fd, AF_INET, 0));
  const int dup_fd = dup(fd);
  const int cloexec_fd = fcntl(fd, F_DUPFD_CLOEXEC, 100);
  Sayf("dup: {} F_DUPFD_CLOEXEC: {}", dup_fd >= 0 ? "ok" : Ret(dup_fd),
       cloexec_fd >= 100 ? "ok" : Ret(cloexec_fd));
  Sayf("listen: {}", Ret(listen(fd, 8)));
  Sayf("SO_ACCEPTCONN on the duplicates: {} {}", GetIntStr(dup_fd, SOL_SOCKET, SO_ACCEPTCONN),
       GetIntStr(cloexec_fd, SOL_SOCKET, SO_ACCEPTCONN));
  Sayf("flags of the duplicates: {} / {}", FdFlags(dup_fd), FdFlags(cloexec_fd));
  Sayf("duplicate's name: {}", DescribeSockName(dup_fd));
  Post("app.listening");
  int c = -1;
  Sayf("accept on the duplicate: {}", AcceptDescribe(dup_fd, 0, &c));
  Sayf("recv: {}", Recv(c, 100));
  close(c);
  Sayf("close the original: {}", Ret(close(fd)));
  Post("app.accepted1");
  Sayf("accept on the other duplicate: {}", AcceptDescribe(cloexec_fd, 0, &c));
  Sayf("recv: {}", Recv(c, 100));
  close(c);
  close(dup_fd);
  close(cloexec_fd);
}
void Peer_dup_before_listen() {
  Await("app.listening");
  int fd = ConnectPeer();
  SendAll(fd, "one");
  close(fd);
  Await("app.accepted1");
  fd = ConnectPeer();
  SendAll(fd, "two");
  close(fd);
}

}  // namespace xsock::conform
