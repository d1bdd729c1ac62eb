// Client-side scenarios: the app connects to the peer (or to nothing) and observes connect
// outcomes, end of stream, resets, shutdown, recv flags, queue ioctls, timeouts, signals,
// socket options and names.
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <net/if.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "tests/conformance/scenario.h"

namespace xsock::conform {
namespace {

constexpr short kInOutRdhup = POLLIN | POLLOUT | POLLRDHUP;

std::string ConnectRet(int fd, int family, int offset) {
  socklen_t len = 0;
  const sockaddr_storage ss = Loopback(family, offset, &len);
  return Ret(connect(fd, reinterpret_cast<const sockaddr*>(&ss), len));
}

std::string RecvStr(int fd, size_t n, int flags = 0) {
  char buf[4096];
  const ssize_t r = recv(fd, buf, std::min(n, sizeof buf), flags);
  if (r <= 0) return Ret(r);
  return fmt::format("{} {}", r, Show(buf, static_cast<size_t>(r)));
}

std::string SendStr(int fd, std::string_view s, int flags = MSG_NOSIGNAL) {
  return Ret(send(fd, s.data(), s.size(), flags));
}

// Counts signals and, when asked, creates a sync file from the handler (open() is
// async-signal-safe), so the peer can act only after the signal was delivered.
volatile sig_atomic_t g_signals = 0;
char g_signal_post_path[512];

void CountingHandler(int) {
  g_signals = g_signals + 1;
  if (g_signal_post_path[0] != '\0') {
    const int fd = open(g_signal_post_path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd >= 0) close(fd);
  }
}

void InstallHandler(int sig, bool restart, const char* post = nullptr) {
  g_signals = 0;
  g_signal_post_path[0] = '\0';
  if (post != nullptr) {
    const std::string path = SyncPath(post);
    std::snprintf(g_signal_post_path, sizeof g_signal_post_path, "%s", path.c_str());
  }
  struct sigaction sa {};
  sa.sa_handler = CountingHandler;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = restart ? SA_RESTART : 0;
  sigaction(sig, &sa, nullptr);
}

void ArmTimer(int ms) {
  itimerval it{};
  it.it_value.tv_sec = ms / 1000;
  it.it_value.tv_usec = (ms % 1000) * 1000;
  setitimer(ITIMER_REAL, &it, nullptr);
}

// A peer that accepts one connection and keeps it open until the app posts "app.done".
void AcceptAndHold() {
  const int l = Listen();
  const int c = AcceptOne(l);
  Await("app.done");
  close(c);
  close(l);
}

}  // namespace

// ---------------------------------------------------------------------------------------
SCENARIO(connect_refused_blocking, 24000,
         "blocking connect to a closed port, then the failed socket's calls");
void App_connect_refused_blocking() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  Sayf("connect: {}", ConnectRet(fd, AF_INET, 0));
  Sayf("SO_ERROR: {}", SoError(fd));
  Sayf("poll now: {}", PollBits(PollOnce(fd, kInOutRdhup, 0)));
  Sayf("getpeername: {}", DescribePeerName(fd));
  Sayf("recv: {}", RecvStr(fd, 10));
  Sayf("send: {}", SendStr(fd, "x"));
  Sayf("connect again: {}", ConnectRet(fd, AF_INET, 0));
  Sayf("SO_ERROR: {}", SoError(fd));
  Sayf("close: {}", Ret(close(fd)));
}
void Peer_connect_refused_blocking() {}

// ---------------------------------------------------------------------------------------
SCENARIO(connect_refused_nonblocking, 24010,
         "nonblocking connect to a closed port: EINPROGRESS, poll masks, SO_ERROR once");
void App_connect_refused_nonblocking() {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  Sayf("connect: {}", ConnectRet(fd, AF_INET, 0));
  Sayf("poll(OUT) first wake: {}", PollBits(PollOnce(fd, POLLOUT, kWaitMs)));
  Sayf("poll(IN|OUT|RDHUP) settled: {}",
       PollBits(PollUntil(fd, kInOutRdhup, POLLIN | POLLOUT | POLLERR | POLLHUP)));
  Sayf("SO_ERROR: {}", SoError(fd));
  Sayf("SO_ERROR again: {}", SoError(fd));
  Sayf("poll now: {}", PollBits(PollOnce(fd, kInOutRdhup, 0)));
  Sayf("recv: {}", RecvStr(fd, 10));
  Sayf("send: {}", SendStr(fd, "x"));
  Sayf("connect again: {}", ConnectRet(fd, AF_INET, 0));
  PollUntil(fd, POLLOUT, POLLOUT);
  Sayf("SO_ERROR after second attempt: {}", SoError(fd));
}
void Peer_connect_refused_nonblocking() {}

// ---------------------------------------------------------------------------------------
SCENARIO(connect_nonblocking_ok, 24020,
         "nonblocking connect that succeeds: EINPROGRESS, POLLOUT, SO_ERROR 0, EISCONN, data");
void App_connect_nonblocking_ok() {
  Await("listen0");
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
  Sayf("connect: {}", ConnectRet(fd, AF_INET, 0));
  Sayf("poll(OUT) first wake: {}", PollBits(PollOnce(fd, POLLOUT, kWaitMs)));
  Sayf("SO_ERROR: {}", SoError(fd));
  Sayf("connect again: {}", ConnectRet(fd, AF_INET, 0));
  Sayf("getpeername: {}", DescribePeerName(fd));
  Sayf("getsockname: {}", DescribeSockName(fd));
  Sayf("poll now: {}", PollBits(PollOnce(fd, kInOutRdhup, 0)));
  Sayf("recv: {}", RecvStr(fd, 100));
  Post("app.connected");
  Sayf("poll until IN: {}", PollBits(PollUntil(fd, kInOutRdhup, POLLIN)));
  Sayf("recv: {}", RecvStr(fd, 100));
  Sayf("recv: {}", RecvStr(fd, 100));
  Post("app.read");
  Sayf("poll until RDHUP: {}", PollBits(PollUntil(fd, kInOutRdhup, POLLRDHUP)));
  Sayf("recv: {}", RecvStr(fd, 100));
}
void Peer_connect_nonblocking_ok() {
  const int l = Listen();
  const int c = AcceptOne(l);
  Await("app.connected");
  SendAll(c, "hello");
  Await("app.read");
  close(c);
}

// ---------------------------------------------------------------------------------------
SCENARIO(read_after_fin, 24030, "peer sends then closes: data, then 0 for ever; masks");
void App_read_after_fin() {
  const int fd = ConnectTo();
  Await("peer.closed");
  Sayf("poll until RDHUP: {}", PollBits(PollUntil(fd, kInOutRdhup, POLLIN | POLLRDHUP)));
  Sayf("FIONREAD: {}", WaitInq(fd, 11));
  Sayf("recv: {}", RecvStr(fd, 100));
  Sayf("recv: {}", RecvStr(fd, 100));
  Sayf("recv: {}", RecvStr(fd, 100));
  Sayf("read: {}", RecvStr(fd, 100, MSG_DONTWAIT));
  Sayf("poll now: {}", PollBits(PollOnce(fd, kInOutRdhup, 0)));
  Sayf("SO_ERROR: {}", SoError(fd));
  Sayf("shutdown(SHUT_WR): {}", Ret(shutdown(fd, SHUT_WR)));
  Sayf("poll after our FIN: {}", PollBits(PollUntil(fd, kInOutRdhup, POLLHUP)));
  Sayf("recv: {}", RecvStr(fd, 100));
}
void Peer_read_after_fin() {
  const int l = Listen();
  const int c = AcceptOne(l);
  SendAll(c, "hello world");
  close(c);
  Post("peer.closed");
}

// ---------------------------------------------------------------------------------------
SCENARIO(peer_reset_read, 24040, "peer sends then resets (SO_LINGER 0): data, ECONNRESET once");
void App_peer_reset_read() {
  const int fd = ConnectTo();
  Post("app.connected");
  Await("peer.closed");
  Sayf("poll until HUP: {}", PollBits(PollUntil(fd, kInOutRdhup, POLLHUP)));
  Sayf("recv: {}", RecvStr(fd, 100));
  Sayf("recv: {}", RecvStr(fd, 100));
  Sayf("recv: {}", RecvStr(fd, 100));
  Sayf("poll now: {}", PollBits(PollOnce(fd, kInOutRdhup, 0)));
  Sayf("send: {}", SendStr(fd, "x"));
  Sayf("SO_ERROR: {}", SoError(fd));
}
// The peer resets only once the app's connect has returned (connect_then_reset covers the
// reset that races with connect).
void ResetAfter(std::string_view data) {
  const int l = Listen();
  const int c = AcceptOne(l);
  Await("app.connected");
  SendAll(c, data);
  const linger lg{1, 0};
  setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(c);
  Post("peer.closed");
}
void Peer_peer_reset_read() { ResetAfter("abc"); }

// ---------------------------------------------------------------------------------------
SCENARIO(peer_reset_write, 24050, "peer resets; the app writes first: ECONNRESET, then EPIPE");
void App_peer_reset_write() {
  const int fd = ConnectTo();
  Post("app.connected");
  Await("peer.closed");
  Sayf("poll until HUP: {}", PollBits(PollUntil(fd, kInOutRdhup, POLLHUP)));
  Sayf("send: {}", SendStr(fd, "x"));
  Sayf("send: {}", SendStr(fd, "x"));
  Sayf("recv: {}", RecvStr(fd, 100));
  Sayf("recv: {}", RecvStr(fd, 100));
  Sayf("SO_ERROR: {}", SoError(fd));
}
void Peer_peer_reset_write() { ResetAfter("abc"); }

// ---------------------------------------------------------------------------------------
SCENARIO(peer_reset_so_error, 24060, "peer resets; the app asks SO_ERROR first");
void App_peer_reset_so_error() {
  const int fd = ConnectTo();
  Post("app.connected");
  Await("peer.closed");
  Sayf("poll until HUP: {}", PollBits(PollUntil(fd, kInOutRdhup, POLLHUP)));
  Sayf("SO_ERROR: {}", SoError(fd));
  Sayf("SO_ERROR: {}", SoError(fd));
  Sayf("poll now: {}", PollBits(PollOnce(fd, kInOutRdhup, 0)));
  Sayf("recv: {}", RecvStr(fd, 100));
  Sayf("recv: {}", RecvStr(fd, 100));
}
void Peer_peer_reset_so_error() { ResetAfter(""); }

// ---------------------------------------------------------------------------------------
SCENARIO(connect_then_reset, 24250,
         "peer accepts and resets at once: the blocking connect still succeeds, recv gets the RST");
void App_connect_then_reset() {
  const int fd = ConnectTo();
  Say("connect: 0");
  Await("peer.closed");
  Sayf("poll until HUP: {}", PollBits(PollUntil(fd, kInOutRdhup, POLLHUP)));
  Sayf("recv: {}", RecvStr(fd, 100));
  Sayf("recv: {}", RecvStr(fd, 100));
}
void Peer_connect_then_reset() {
  const int l = Listen();
  const int c = AcceptOne(l);
  const linger lg{1, 0};
  setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  close(c);
  Post("peer.closed");
}

// ---------------------------------------------------------------------------------------
SCENARIO(close_with_unread_data, 24260,
         "closing with received data unread resets the connection (the peer gets ECONNRESET)");
void App_close_with_unread_data() {
  const int fd = ConnectTo();
  Await("peer.sent");
  Sayf("FIONREAD: {}", WaitInq(fd, 5));
  Sayf("close: {}", Ret(close(fd)));
  Post("app.closed");
}
void Peer_close_with_unread_data() {
  const int l = Listen();
  const int c = AcceptOne(l);
  SendAll(c, "unread");
  Post("peer.sent");
  Await("app.closed");
  Sayf("poll until HUP: {}", PollBits(PollUntil(c, POLLIN | POLLRDHUP, POLLHUP)));
  Sayf("read: {}", DescribeDrained(ReadToEnd(c)));
  Sayf("send: {}", SendStr(c, "x"));
}

// ---------------------------------------------------------------------------------------
SCENARIO(write_after_peer_close, 24070,
         "peer closed: first write accepted, then EPIPE; SIGPIPE counted unless MSG_NOSIGNAL");
void App_write_after_peer_close() {
  InstallHandler(SIGPIPE, true);
  const int fd = ConnectTo();
  Await("peer.closed");
  Sayf("poll until RDHUP: {}", PollBits(PollUntil(fd, kInOutRdhup, POLLRDHUP)));
  Sayf("send 1 byte: {}", SendStr(fd, "x"));
  Sayf("poll until HUP (peer's RST): {}", PollBits(PollUntil(fd, kInOutRdhup, POLLHUP)));
  // (each result is taken before the counter is read: argument order is unspecified)
  std::string r = SendStr(fd, "x");
  Sayf("send MSG_NOSIGNAL: {} sigpipes={}", r, int{g_signals});
  r = SendStr(fd, "x", 0);
  Sayf("send: {} sigpipes={}", r, int{g_signals});
  r = Ret(write(fd, "x", 1));
  Sayf("write: {} sigpipes={}", r, int{g_signals});
  Sayf("recv: {}", RecvStr(fd, 100));
  Sayf("SO_ERROR: {}", SoError(fd));
}
void Peer_write_after_peer_close() {
  const int l = Listen();
  const int c = AcceptOne(l);
  close(c);
  Post("peer.closed");
}

// ---------------------------------------------------------------------------------------
SCENARIO(shutdown_wr, 24080, "shutdown(SHUT_WR): peer reads EOF, app still reads the reply");
void App_shutdown_wr() {
  const int fd = ConnectTo();
  Sayf("send: {}", SendStr(fd, "ping"));
  Sayf("shutdown(SHUT_WR): {}", Ret(shutdown(fd, SHUT_WR)));
  Sayf("poll now: {}", PollBits(PollOnce(fd, kInOutRdhup, 0)));
  Sayf("send after SHUT_WR: {}", SendStr(fd, "x"));
  Sayf("shutdown(SHUT_WR) again: {}", Ret(shutdown(fd, SHUT_WR)));
  Post("app.shut");
  Await("peer.done");
  Sayf("poll until RDHUP: {}", PollBits(PollUntil(fd, kInOutRdhup, POLLRDHUP)));
  Sayf("recv: {}", RecvStr(fd, 100));
  Sayf("recv: {}", RecvStr(fd, 100));
  Sayf("shutdown(SHUT_RDWR) after both FINs: {}", Ret(shutdown(fd, SHUT_RDWR)));
}
void Peer_shutdown_wr() {
  const int l = Listen();
  const int c = AcceptOne(l);
  Await("app.shut");
  Sayf("read: {}", DescribeDrained(ReadToEnd(c)));
  SendAll(c, "after-eof");
  close(c);
  Post("peer.done");
}

// ---------------------------------------------------------------------------------------
SCENARIO(shutdown_rd, 24090, "shutdown(SHUT_RD): queued data, then 0; writing still works");
void App_shutdown_rd() {
  const int fd = ConnectTo();
  Await("peer.sent");
  Sayf("FIONREAD: {}", WaitInq(fd, 3));
  Sayf("shutdown(SHUT_RD): {}", Ret(shutdown(fd, SHUT_RD)));
  Sayf("poll now: {}", PollBits(PollOnce(fd, kInOutRdhup, 0)));
  Sayf("recv: {}", RecvStr(fd, 100));
  Sayf("recv: {}", RecvStr(fd, 100));
  Sayf("send: {}", SendStr(fd, "x"));
  Sayf("close: {}", Ret(close(fd)));
}
void Peer_shutdown_rd() {
  const int l = Listen();
  const int c = AcceptOne(l);
  SendAll(c, "abc");
  Post("peer.sent");
  Sayf("read: {}", DescribeDrained(ReadToEnd(c)));
}

// ---------------------------------------------------------------------------------------
SCENARIO(shutdown_rdwr, 24100, "shutdown(SHUT_RDWR): masks, recv 0, send EPIPE, peer gets data+EOF");
void App_shutdown_rdwr() {
  const int fd = ConnectTo();
  Sayf("send: {}", SendStr(fd, "data"));
  Sayf("shutdown(SHUT_RDWR): {}", Ret(shutdown(fd, SHUT_RDWR)));
  Sayf("poll now: {}", PollBits(PollOnce(fd, kInOutRdhup, 0)));
  Sayf("recv: {}", RecvStr(fd, 100));
  Sayf("send: {}", SendStr(fd, "x"));
  Await("peer.done");
  Sayf("poll after peer closed: {}", PollBits(PollUntil(fd, kInOutRdhup, POLLHUP)));
}
void Peer_shutdown_rdwr() {
  const int l = Listen();
  const int c = AcceptOne(l);
  Sayf("read: {}", DescribeDrained(ReadToEnd(c)));
  close(c);
  Post("peer.done");
}

// ---------------------------------------------------------------------------------------
SCENARIO(msg_peek, 24110, "MSG_PEEK leaves data queued; FIONREAD unchanged");
void App_msg_peek() {
  const int fd = ConnectTo();
  Await("peer.sent");
  Sayf("FIONREAD: {}", WaitInq(fd, 10));
  Sayf("recv(4, PEEK): {}", RecvStr(fd, 4, MSG_PEEK));
  Sayf("recv(100, PEEK): {}", RecvStr(fd, 100, MSG_PEEK));
  Sayf("FIONREAD: {}", WaitInq(fd, 0));
  Sayf("recv(4): {}", RecvStr(fd, 4));
  Sayf("recv(100, PEEK|DONTWAIT): {}", RecvStr(fd, 100, MSG_PEEK | MSG_DONTWAIT));
  Sayf("recv(100): {}", RecvStr(fd, 100));
  Sayf("recv(100, PEEK|DONTWAIT) empty: {}", RecvStr(fd, 100, MSG_PEEK | MSG_DONTWAIT));
  Post("app.done");
  Sayf("poll until RDHUP: {}", PollBits(PollUntil(fd, kInOutRdhup, POLLRDHUP)));
  Sayf("recv(100, PEEK) at EOF: {}", RecvStr(fd, 100, MSG_PEEK));
}
void Peer_msg_peek() {
  const int l = Listen();
  const int c = AcceptOne(l);
  SendAll(c, "0123456789");
  Post("peer.sent");
  Await("app.done");
  close(c);
}

// ---------------------------------------------------------------------------------------
SCENARIO(msg_waitall, 24120, "MSG_WAITALL gathers several peer writes; EOF cuts it short");
void App_msg_waitall() {
  const int fd = ConnectTo();
  std::vector<unsigned char> buf(8000);
  ssize_t r = recv(fd, buf.data(), 5000, MSG_WAITALL);
  Sayf("recv(5000, WAITALL): {} hash {}", Ret(r), Hex64(HashOf(buf.data(), r > 0 ? r : 0)));
  Post("app.got");
  r = recv(fd, buf.data(), 5000, MSG_WAITALL);
  Sayf("recv(5000, WAITALL) over EOF: {} hash {}", Ret(r),
       Hex64(HashOf(buf.data(), r > 0 ? r : 0)));
  Sayf("recv: {}", RecvStr(fd, 100, MSG_WAITALL));
}
void Peer_msg_waitall() {
  const int l = Listen();
  const int c = AcceptOne(l);
  const std::vector<unsigned char> data = StreamBytes(7, 5100);
  for (int i = 0; i < 5; ++i) {
    SendAll(c, data.data() + 1000 * i, 1000);
    usleep(20000);  // separate segments; the output does not depend on it
  }
  Await("app.got");
  SendAll(c, data.data() + 5000, 100);
  close(c);
  Sayf("sent hashes: {} {}", Hex64(HashOf(data.data(), 5000)),
       Hex64(HashOf(data.data() + 5000, 100)));
}

// ---------------------------------------------------------------------------------------
SCENARIO(nonblocking_reads, 24130, "MSG_DONTWAIT and O_NONBLOCK on an empty socket: EAGAIN");
void App_nonblocking_reads() {
  const int fd = ConnectTo();
  Sayf("recv(DONTWAIT): {}", RecvStr(fd, 100, MSG_DONTWAIT));
  Sayf("recv(0 bytes, DONTWAIT): {}", RecvStr(fd, 0, MSG_DONTWAIT));
  Sayf("fcntl(O_NONBLOCK): {}", Ret(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)));
  Sayf("flags: {}", FdFlags(fd));
  char b[10];
  Sayf("read: {}", Ret(read(fd, b, sizeof b)));
  Sayf("recv: {}", RecvStr(fd, 100));
  int off = 0;
  Sayf("ioctl(FIONBIO, 0): {}", Ret(ioctl(fd, FIONBIO, &off)));
  Sayf("flags: {}", FdFlags(fd));
  Post("app.empty");
  Sayf("poll until IN: {}", PollBits(PollUntil(fd, kInOutRdhup, POLLIN)));
  Sayf("recv(DONTWAIT): {}", RecvStr(fd, 100, MSG_DONTWAIT));
  Post("app.done");
}
void Peer_nonblocking_reads() {
  const int l = Listen();
  const int c = AcceptOne(l);
  Await("app.empty");
  SendAll(c, "x");
  Await("app.done");
  close(c);
}

// ---------------------------------------------------------------------------------------
SCENARIO(msg_trunc, 24140, "MSG_TRUNC on TCP discards the bytes instead of copying them");
void App_msg_trunc() {
  const int fd = ConnectTo();
  Await("peer.sent");
  WaitInq(fd, 10);
  char buf[16];
  std::memset(buf, '.', sizeof buf);
  const ssize_t r = recv(fd, buf, 4, MSG_TRUNC);
  Sayf("recv(4, TRUNC): {} buffer {}", Ret(r), Show(buf, 4));
  Sayf("recv(NULL, 2, TRUNC): {}", Ret(recv(fd, nullptr, 2, MSG_TRUNC)));
  Sayf("recv(100): {}", RecvStr(fd, 100));
  Post("app.done");
}
void Peer_msg_trunc() {
  const int l = Listen();
  const int c = AcceptOne(l);
  SendAll(c, "0123456789");
  Post("peer.sent");
  Await("app.done");
  close(c);
}

// ---------------------------------------------------------------------------------------
SCENARIO(queue_ioctls, 24150, "FIONREAD/SIOCINQ of queued bytes, SIOCOUTQ/SIOCOUTQNSD drain to 0");
void App_queue_ioctls() {
  const int fd = ConnectTo();
  int v = -1;
  Sayf("FIONREAD empty: {} {}", Ret(ioctl(fd, FIONREAD, &v)), v);
  Sayf("SIOCOUTQ fresh: {} {}", Ret(ioctl(fd, SIOCOUTQ, &v)), v);
  Post("app.ready");
  Await("peer.sent");
  Sayf("FIONREAD: {}", WaitInq(fd, 1234));
  Sayf("SIOCINQ: {} {}", Ret(ioctl(fd, SIOCINQ, &v)), v);
  RecvExactly(fd, 1000);
  Sayf("FIONREAD after reading 1000: {} {}", Ret(ioctl(fd, FIONREAD, &v)), v);
  RecvExactly(fd, 234);
  const std::vector<unsigned char> data = StreamBytes(3, 2000);
  Sayf("send 2000: {}", SendAll(fd, data.data(), data.size()));
  Sayf("SIOCOUTQ once the peer has it: {}", WaitOutqEmpty(fd));
  Sayf("SIOCOUTQNSD: {} {}", Ret(ioctl(fd, SIOCOUTQNSD, &v)), v);
  Sayf("SIOCATMARK: {} {}", Ret(ioctl(fd, SIOCATMARK, &v)), v);
  close(fd);
}
void Peer_queue_ioctls() {
  const int l = Listen();
  const int c = AcceptOne(l);
  Await("app.ready");
  const std::vector<unsigned char> data = StreamBytes(2, 1234);
  SendAll(c, data.data(), data.size());
  Post("peer.sent");
  Sayf("read: {}", DescribeDrained(ReadToEnd(c)));
}

// ---------------------------------------------------------------------------------------
SCENARIO(so_rcvtimeo, 24160, "SO_RCVTIMEO: reads end with EAGAIN; the value reads back");
void App_so_rcvtimeo() {
  const int fd = ConnectTo();
  // 200 ms is a whole number of jiffies at HZ 100, 250 and 1000: the kernel reads back
  // exactly what was set.
  timeval tv{0, 200000};
  Sayf("set SO_RCVTIMEO 200ms: {}", Ret(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv)));
  tv = {};
  socklen_t len = sizeof tv;
  Sayf("get SO_RCVTIMEO: {} {}.{:06} len={}",
       Ret(getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &len)), tv.tv_sec, tv.tv_usec, len);
  Sayf("recv: {}", RecvStr(fd, 100));
  char b[8];
  Sayf("read: {}", Ret(read(fd, b, sizeof b)));
  Sayf("recv(WAITALL): {}", RecvStr(fd, 100, MSG_WAITALL));
  Post("app.waited");
  Await("peer.sent");
  Sayf("recv(WAITALL 10) with 4 then timeout: {}", RecvStr(fd, 10, MSG_WAITALL));
  Post("app.done");
}
void Peer_so_rcvtimeo() {
  const int l = Listen();
  const int c = AcceptOne(l);
  Await("app.waited");
  SendAll(c, "1234");
  Post("peer.sent");
  Await("app.done");
  close(c);
}

// ---------------------------------------------------------------------------------------
SCENARIO(so_sndtimeo, 24170, "SO_SNDTIMEO: writes to a peer that reads nothing end with EAGAIN");
void App_so_sndtimeo() {
  const int fd = ConnectTo();
  const timeval tv{0, 200000};
  Sayf("set SO_SNDTIMEO 200ms: {}", Ret(setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv)));
  PatternSender sender;
  std::string end = "never failed";
  for (int i = 0; i < 4096; ++i) {
    if (sender.SendSome(fd, 64 * 1024) < 0) {
      end = ErrnoName(errno);
      break;
    }
  }
  Sayf("send loop ended with: {}", end);
  Post("app.total", sender.Summary());
  Sayf("shutdown(SHUT_WR): {}", Ret(shutdown(fd, SHUT_WR)));
  Await("peer.done");
}
void Peer_so_sndtimeo() {
  const int l = Listen();
  const int c = AcceptOne(l);
  const std::string summary = Await("app.total");
  Sayf("{}", PatternSender::Verdict(ReadToEnd(c), summary));
  Post("peer.done");
}

// ---------------------------------------------------------------------------------------
SCENARIO(eintr_recv, 24180, "signal during a blocking recv: EINTR without SA_RESTART");
void App_eintr_recv() {
  const int fd = ConnectTo();
  InstallHandler(SIGALRM, false, "app.alarm");
  ArmTimer(200);
  const std::string r = RecvStr(fd, 100);
  Sayf("recv interrupted: {} signals={}", r, int{g_signals});
  Sayf("recv later: {}", RecvStr(fd, 100));
  Post("app.done");
}
void Peer_eintr_recv() {
  const int l = Listen();
  const int c = AcceptOne(l);
  Await("app.alarm");
  usleep(50000);  // let the app reach recv again; only the outcome is printed
  SendAll(c, "late");
  Await("app.done");
  close(c);
}

// ---------------------------------------------------------------------------------------
SCENARIO(eintr_recv_restart, 24190, "signal during a blocking recv with SA_RESTART: recv goes on");
void App_eintr_recv_restart() {
  const int fd = ConnectTo();
  InstallHandler(SIGALRM, true, "app.alarm");
  ArmTimer(200);
  const std::string r = RecvStr(fd, 100);
  Sayf("recv across the signal: {} signals={}", r, int{g_signals});
  Post("app.done");
}
void Peer_eintr_recv_restart() { Peer_eintr_recv(); }

// ---------------------------------------------------------------------------------------
SCENARIO(eintr_send, 24200,
         "signal during a blocking send on full buffers: EINTR, then with SA_RESTART it completes");
void App_eintr_send() {
  const int fd = ConnectTo();
  // Fill everything without blocking, then block in send: without SA_RESTART it fails with
  // EINTR (that call sent nothing), with SA_RESTART it completes once the peer reads.
  PatternSender sender;
  sender.FillUntilFull(fd);
  InstallHandler(SIGALRM, false);
  ArmTimer(200);
  std::string r = Ret(sender.SendSome(fd, 1000));
  Sayf("blocking send, no SA_RESTART: {} signals={}", r, int{g_signals});
  InstallHandler(SIGALRM, true, "app.alarm");
  ArmTimer(200);
  // Whether the signal came before the send completed depends on when the kernel finds
  // room again, so only the result is printed.
  Sayf("blocking send, SA_RESTART: {}", Ret(sender.SendSome(fd, 1000)));
  Post("app.total", sender.Summary());
  shutdown(fd, SHUT_WR);
  Await("peer.done");
}
void Peer_eintr_send() {
  const int l = Listen();
  const int c = AcceptOne(l);
  Await("app.alarm");
  const Drained d = ReadToEnd(c);
  Sayf("{}", PatternSender::Verdict(d, Await("app.total")));
  Post("peer.done");
}

// ---------------------------------------------------------------------------------------
SCENARIO(sockopt_identity, 24210,
         "SO_TYPE/DOMAIN/PROTOCOL/ACCEPTCONN/ERROR before and after connect, short optlen");
void App_sockopt_identity() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  auto dump = [&](const char* when) {
    Sayf("{}: SO_TYPE={} SO_DOMAIN={} SO_PROTOCOL={} SO_ACCEPTCONN={} SO_ERROR={}", when,
         GetIntStr(fd, SOL_SOCKET, SO_TYPE), GetIntStr(fd, SOL_SOCKET, SO_DOMAIN),
         GetIntStr(fd, SOL_SOCKET, SO_PROTOCOL), GetIntStr(fd, SOL_SOCKET, SO_ACCEPTCONN),
         SoError(fd));
  };
  dump("before connect");
  Await("listen0");
  Sayf("connect: {}", ConnectRet(fd, AF_INET, 0));
  dump("connected");
  char small[2] = {};
  socklen_t len = sizeof small;
  Sayf("SO_TYPE with optlen 2: {} len={}", Ret(getsockopt(fd, SOL_SOCKET, SO_TYPE, small, &len)),
       len);
  int v = 0;
  len = sizeof v;
  Sayf("unknown SOL_SOCKET option: {}", Ret(getsockopt(fd, SOL_SOCKET, 9999, &v, &len)));
  Sayf("unknown SOL_TCP option: {}", Ret(getsockopt(fd, SOL_TCP, 9999, &v, &len)));
  Sayf("setsockopt unknown SOL_TCP option: {}", SetInt(fd, SOL_TCP, 9999, 1));
  Sayf("setsockopt IP_TOS optlen 0: {}", Ret(setsockopt(fd, SOL_IP, IP_TOS, &v, 0)));
  Post("app.done");
}
void Peer_sockopt_identity() { AcceptAndHold(); }

// ---------------------------------------------------------------------------------------
SCENARIO(sockopt_values, 24220, "options set before and after connect read back the same");
void App_sockopt_values() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  Sayf("set before connect: NODELAY {} KEEPALIVE {} KEEPIDLE {} KEEPINTVL {} KEEPCNT {} TOS {}",
       SetInt(fd, SOL_TCP, TCP_NODELAY, 1), SetInt(fd, SOL_SOCKET, SO_KEEPALIVE, 1),
       SetInt(fd, SOL_TCP, TCP_KEEPIDLE, 77), SetInt(fd, SOL_TCP, TCP_KEEPINTVL, 11),
       SetInt(fd, SOL_TCP, TCP_KEEPCNT, 5), SetInt(fd, SOL_IP, IP_TOS, 0x10));
  linger lg{1, 7};
  Sayf("set SO_LINGER {{1,7}} before connect: {}",
       Ret(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg)));
  Await("listen0");
  Sayf("connect: {}", ConnectRet(fd, AF_INET, 0));
  auto dump = [&](const char* when) {
    Sayf("{}: NODELAY={} CORK={} KEEPALIVE={} KEEPIDLE={} KEEPINTVL={} KEEPCNT={} TOS={}", when,
         GetIntStr(fd, SOL_TCP, TCP_NODELAY), GetIntStr(fd, SOL_TCP, TCP_CORK),
         GetIntStr(fd, SOL_SOCKET, SO_KEEPALIVE), GetIntStr(fd, SOL_TCP, TCP_KEEPIDLE),
         GetIntStr(fd, SOL_TCP, TCP_KEEPINTVL), GetIntStr(fd, SOL_TCP, TCP_KEEPCNT),
         GetIntStr(fd, SOL_IP, IP_TOS));
    linger got{};
    socklen_t len = sizeof got;
    const int r = getsockopt(fd, SOL_SOCKET, SO_LINGER, &got, &len);
    Sayf("{}: SO_LINGER {} {{{},{}}}", when, Ret(r), got.l_onoff, got.l_linger);
  };
  dump("after connect");
  Sayf("set after connect: CORK {} NODELAY {} TOS {} KEEPIDLE {} KEEPALIVE {}",
       SetInt(fd, SOL_TCP, TCP_CORK, 1), SetInt(fd, SOL_TCP, TCP_NODELAY, 0),
       SetInt(fd, SOL_IP, IP_TOS, 0x08), SetInt(fd, SOL_TCP, TCP_KEEPIDLE, 99),
       SetInt(fd, SOL_SOCKET, SO_KEEPALIVE, 0));
  lg = {0, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
  dump("after changes");
  {
    // sshd reads both on every connection (VRF name, source-routing check).
    char dev[IFNAMSIZ] = "x";
    socklen_t devlen = sizeof dev;
    const std::string r = Ret(getsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, dev, &devlen));
    Sayf("SO_BINDTODEVICE: {} len {}", r, devlen);
    unsigned char opts[40];
    socklen_t optlen = sizeof opts;
    const std::string o = Ret(getsockopt(fd, IPPROTO_IP, IP_OPTIONS, opts, &optlen));
    Sayf("IP_OPTIONS: {} len {}", o, optlen);
  }
  {
    const std::string set = SetInt(fd, SOL_SOCKET, SO_RCVBUF, 65536);
    Sayf("SO_RCVBUF set 65536: {} get {}", set, GetIntStr(fd, SOL_SOCKET, SO_RCVBUF));
  }
  {
    const std::string set = SetInt(fd, SOL_SOCKET, SO_SNDBUF, 65536);
    Sayf("SO_SNDBUF set 65536: {} get {}", set, GetIntStr(fd, SOL_SOCKET, SO_SNDBUF));
  }
  {
    const std::string set = SetInt(fd, SOL_TCP, TCP_USER_TIMEOUT, 5000);
    Sayf("TCP_USER_TIMEOUT set 5000: {} get {}", set, GetIntStr(fd, SOL_TCP, TCP_USER_TIMEOUT));
  }
  {
    const std::string set = SetInt(fd, SOL_SOCKET, SO_OOBINLINE, 1);
    Sayf("SO_OOBINLINE set 1: {} get {}", set, GetIntStr(fd, SOL_SOCKET, SO_OOBINLINE));
  }
  Sayf("SO_REUSEADDR get {}", GetIntStr(fd, SOL_SOCKET, SO_REUSEADDR));
  Sayf("TCP_MAXSEG get {}", GetIntStr(fd, SOL_TCP, TCP_MAXSEG));
  char cc[32] = {};
  socklen_t len = sizeof cc;
  Sayf("TCP_CONGESTION get {} {}", Ret(getsockopt(fd, SOL_TCP, TCP_CONGESTION, cc, &len)), cc);
  Post("app.done");
}
void Peer_sockopt_values() { AcceptAndHold(); }

// ---------------------------------------------------------------------------------------
void NamesApp(int family) {
  const int fd = socket(family, SOCK_STREAM, 0);
  Sayf("unconnected getsockname: {}", DescribeSockName(fd));
  Sayf("unconnected getpeername: {}", DescribePeerName(fd));
  Await("listen0");
  Sayf("connect: {}", ConnectRet(fd, family, 0));
  Sayf("getsockname: {}", DescribeSockName(fd));
  Sayf("getpeername: {}", DescribePeerName(fd));
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len);
  Post("app.port", std::to_string(PortOf(ss)));
  sockaddr_storage small{};
  len = 4;
  Sayf("getsockname with len 4: {} len={}",
       Ret(getsockname(fd, reinterpret_cast<sockaddr*>(&small), &len)), len);
  len = 0;
  Sayf("getpeername with len 0: {} len={}",
       Ret(getpeername(fd, reinterpret_cast<sockaddr*>(&small), &len)), len);
  Await("peer.done");
  close(fd);
}
void NamesPeer(int family) {
  const int l = Listen(family);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  PollOnce(l, POLLIN, kSyncMs);
  const int c = accept(l, reinterpret_cast<sockaddr*>(&ss), &len);
  Sayf("accepted from: {}", DescribeAddr(ss, len));
  const std::string app_port = Await("app.port");
  Sayf("remote port equals the app's getsockname port: {}",
       std::to_string(PortOf(ss)) == app_port ? "yes" : "no");
  Sayf("accepted socket's name: {}", DescribeSockName(c));
  Post("peer.done");
  close(c);
}

SCENARIO(names_ipv4, 24230, "getsockname/getpeername over IPv4, before and after connect");
void App_names_ipv4() { NamesApp(AF_INET); }
void Peer_names_ipv4() { NamesPeer(AF_INET); }

SCENARIO(names_ipv6, 24240, "getsockname/getpeername over IPv6 loopback");
void App_names_ipv6() { NamesApp(AF_INET6); }
void Peer_names_ipv6() { NamesPeer(AF_INET6); }

}  // namespace xsock::conform

namespace xsock::conform {

// ---------------------------------------------------------------------------------------
SCENARIO(bind_then_connect, 24270, "bind to a chosen source port, then connect: the port is kept");
void App_bind_then_connect() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  socklen_t len = 0;
  const sockaddr_storage src = Loopback(AF_INET, 1, &len);
  Sayf("SO_REUSEADDR: {}", SetInt(fd, SOL_SOCKET, SO_REUSEADDR, 1));
  Sayf("bind 127.0.0.1:fixed+1: {}", Ret(bind(fd, reinterpret_cast<const sockaddr*>(&src), len)));
  Sayf("getsockname: {}", DescribeSockName(fd));
  Await("listen0");
  Sayf("connect: {}", ConnectRet(fd, AF_INET, 0));
  Sayf("getsockname: {}", DescribeSockName(fd));
  Sayf("send: {}", SendStr(fd, "from fixed+1"));
  Await("peer.done");
  close(fd);
}
void Peer_bind_then_connect() {
  const int l = Listen();
  PollOnce(l, POLLIN, kSyncMs);
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  const int c = accept(l, reinterpret_cast<sockaddr*>(&ss), &len);
  Sayf("accepted from: {}", DescribeAddr(ss, len));
  const std::string got = RecvExactly(c, 12);
  Sayf("received {}", Show(got.data(), got.size()));
  Post("peer.done");
}

// ---------------------------------------------------------------------------------------
SCENARIO(so_rcvlowat, 24280, "SO_RCVLOWAT: not readable below the mark, recv waits for it");
void App_so_rcvlowat() {
  const int fd = ConnectTo();
  const std::string set = SetInt(fd, SOL_SOCKET, SO_RCVLOWAT, 10);
  Sayf("SO_RCVLOWAT 10: {} reads back {}", set, GetIntStr(fd, SOL_SOCKET, SO_RCVLOWAT));
  Post("app.s1");
  Await("peer.s1");
  Sayf("FIONREAD: {}", WaitInq(fd, 5));
  Sayf("poll 300 ms with 5 bytes queued: {}", PollBits(PollOnce(fd, POLLIN, 300)));
  Post("app.s2");
  // (Not a blocking recv: Linux copies the 5 queued bytes out, then waits for 10 more
  // queued ones, i.e. until EOF here.)
  Sayf("poll until IN at 10 bytes: {}", PollBits(PollUntil(fd, POLLIN, POLLIN)));
  Sayf("recv: {}", RecvStr(fd, 100));
  Post("app.done");
}
void Peer_so_rcvlowat() {
  const int l = Listen();
  const int c = AcceptOne(l);
  // Without it Nagle holds the second piece until the first is acknowledged, which a
  // receiver below its low-water mark delays for good.
  SetInt(c, SOL_TCP, TCP_NODELAY, 1);
  Await("app.s1");
  SendAll(c, "01234");
  Post("peer.s1");
  Await("app.s2");
  SendAll(c, "56789");
  Await("app.done");
  close(c);
}

// ---------------------------------------------------------------------------------------
SCENARIO(peer_half_close, 24290, "peer shuts down its writing side: the app reads EOF and keeps sending");
void App_peer_half_close() {
  const int fd = ConnectTo();
  Await("peer.shut");
  Sayf("poll until RDHUP: {}", PollBits(PollUntil(fd, kInOutRdhup, POLLRDHUP)));
  Sayf("recv: {}", RecvStr(fd, 100));
  Sayf("recv: {}", RecvStr(fd, 100));
  const std::vector<unsigned char> data = StreamBytes(71, 300000);
  Sayf("send 300000 after the peer's FIN: {}", SendAll(fd, data.data(), data.size()));
  Sayf("expected at the peer: hash {}", Hex64(HashOf(data.data(), data.size())));
  Sayf("poll now: {}", PollBits(PollOnce(fd, kInOutRdhup, 0)));
  Sayf("shutdown(SHUT_WR): {}", Ret(shutdown(fd, SHUT_WR)));
  Await("peer.done");
  Sayf("poll after the peer closed: {}", PollBits(PollUntil(fd, kInOutRdhup, POLLHUP)));
}
void Peer_peer_half_close() {
  const int l = Listen();
  const int c = AcceptOne(l);
  SendAll(c, "bye");
  shutdown(c, SHUT_WR);
  Post("peer.shut");
  const Drained d = ReadToEnd(c);
  Sayf("received {} bytes hash {} then {}", d.bytes, Hex64(d.hash), d.end);
  close(c);
  Post("peer.done");
}

// ---------------------------------------------------------------------------------------
SCENARIO(listener_data_calls, 24630, "data calls on a listening socket: ENOTCONN, EPIPE + SIGPIPE");
void App_listener_data_calls() {
  const int l = socket(AF_INET, SOCK_STREAM, 0);
  SetInt(l, SOL_SOCKET, SO_REUSEADDR, 1);
  socklen_t len = 0;
  const sockaddr_storage ss = Loopback(AF_INET, 0, &len);
  const std::string bound = Ret(bind(l, reinterpret_cast<const sockaddr*>(&ss), len));
  Sayf("bind: {}", bound);
  Sayf("listen: {}", Ret(listen(l, 4)));
  InstallHandler(SIGPIPE, true);
  char b[4] = {'x', 'y', 'z', 0};
  auto sent = [](ssize_t r) { return fmt::format("{} sigpipes={}", Ret(r), int{g_signals}); };
  Sayf("write: {}", sent(write(l, b, 3)));
  Sayf("send MSG_NOSIGNAL: {}", sent(send(l, b, 3, MSG_NOSIGNAL)));
  Sayf("send: {}", sent(send(l, b, 3, 0)));
  iovec iov = {b, 3};
  msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  Sayf("sendmsg MSG_NOSIGNAL: {}", sent(sendmsg(l, &mh, MSG_NOSIGNAL)));
  Sayf("sendto: {}", sent(sendto(l, b, 3, 0, nullptr, 0)));
  Sayf("read: {}", Ret(read(l, b, sizeof b)));
  Sayf("recv MSG_DONTWAIT: {}", Ret(recv(l, b, sizeof b, MSG_DONTWAIT)));
  Sayf("bind again: {}", Ret(bind(l, reinterpret_cast<const sockaddr*>(&ss), len)));
  Sayf("close: {}", Ret(close(l)));
  // listen() first (the kernel picks a port), then bind: EINVAL, on a kernel socket or not.
  const int k = socket(AF_INET, SOCK_STREAM, 0);
  Sayf("listen unbound: {}", Ret(listen(k, 4)));
  Sayf("bind after listen: {}", Ret(bind(k, reinterpret_cast<const sockaddr*>(&ss), len)));
  close(k);
}
void Peer_listener_data_calls() {}

}  // namespace xsock::conform
