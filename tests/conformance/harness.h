// The conformance harness: what every scenario uses to act and to report.
//
// A scenario is a pair of functions, `app` and `peer`, run by two processes of
// xsock-conform. The runner (run.sh) runs each scenario twice: once on kernel sockets, once
// with the app under libxsock.so in an empty network namespace. The peer always uses kernel
// sockets. Both print observations, one per line, and the runner diffs the two runs, so a
// scenario must print only outcomes that do not depend on timing: return values, errno
// names, poll/epoll masks at well-defined points, byte counts, contents and hashes.
//
// The two processes synchronise through files in a directory both can see (`Post`,
// `Await`): the app may live in another network namespace, never in another mount
// namespace. Every wait is bounded; a wait that runs out prints a line (which makes the
// runs differ) or ends the process with status 3.
#pragma once

#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <fmt/format.h>

#include "tests/programs/common.h"

namespace xsock::conform {

// Longest wait for anything that should happen "at once" on loopback (an arriving segment,
// a readiness change). Only failures ever wait this long.
inline constexpr int kWaitMs = 3000;
// Longest wait for the other process to reach a point (it may have to start first).
inline constexpr int kSyncMs = 8000;

// CLOCK_MONOTONIC in milliseconds; a sleep that resumes after signals.
int64_t NowMs();
void SleepMs(int ms);

// ---- output ----

// Writes one line to stdout with a single write(), unbuffered: safe across fork().
void Say(std::string_view line);
template <typename... Args>
void Sayf(fmt::format_string<Args...> format, Args&&... args) {
  Say(fmt::format(format, std::forward<Args>(args)...));
}

// "3" for a success value, "-1 ECONNRESET" for -1 (reads errno: call right after).
std::string Ret(long r);
std::string ErrnoName(int err);
// "IN|OUT|RDHUP" (fixed order) or "none".
std::string PollBits(int revents);
std::string EpollBits(uint32_t events);
// Printable rendering of bytes: "hello\n" -> "hello\\n", at most 80 characters shown.
std::string Show(const void* data, size_t n);
std::string Hex64(uint64_t v);

// ---- synchronisation between app and peer ----

// Makes NAME exist in the sync directory (atomically, with CONTENT).
void Post(std::string_view name, std::string_view content = "");
// Waits until NAME exists, returns its content; after kSyncMs prints
// "SYNC TIMEOUT waiting for NAME" and exits 3.
std::string Await(std::string_view name);
// Full path of NAME in the sync directory (for signal handlers that post with open()).
std::string SyncPath(std::string_view name);

// ---- the scenario's addresses ----

// Base port of the running scenario; a scenario may use base .. base+9.
uint16_t Port(int offset = 0);
// Loopback address of FAMILY (127.0.0.1 or ::1) at Port(offset).
sockaddr_storage Loopback(int family, int offset, socklen_t* len);
// "AF_INET 127.0.0.1 port=fixed" / "port=ephemeral" / "port=0" / "port=fixed+2".
std::string DescribeAddr(const sockaddr_storage& addr, socklen_t len);
uint16_t PortOf(const sockaddr_storage& addr);
std::string DescribeSockName(int fd);
std::string DescribePeerName(int fd);

// ---- actions with checks ----

// Peer: a listening socket on loopback Port(offset) (SO_REUSEADDR), then Post("listen<offset>").
int Listen(int family = AF_INET, int offset = 0);
// Peer: accepts one connection within kSyncMs (else prints and exits 3); the accepted socket
// gets SO_RCVTIMEO/SO_SNDTIMEO kSyncMs so no later call blocks forever.
int AcceptOne(int listen_fd);
// App or peer: Await("listen<offset>") then a blocking connect; prints the result only if
// it fails (then exits 3: the scenario cannot go on).
int ConnectTo(int family = AF_INET, int offset = 0);
// Peer: a blocking connect to the app's listener at Port(offset), bounded by timeouts.
int ConnectPeer(int family = AF_INET, int offset = 0);

// Sends all of DATA (blocking socket); returns bytes sent, prints on error.
size_t SendAll(int fd, const void* data, size_t n);
size_t SendAll(int fd, std::string_view s);
// Receives exactly N bytes (or up to EOF/error); returns what it got.
std::string RecvExactly(int fd, size_t n);

// Everything until EOF or an error: count, order-sensitive hash, how it ended
// ("EOF" or an errno name).
struct Drained {
  uint64_t bytes = 0;
  uint64_t hash = 0;
  std::string head;  // the first bytes, for short messages
  std::string end;
};
Drained ReadToEnd(int fd);
std::string DescribeDrained(const Drained& d);

// The deterministic test stream of seed SEED (tests/programs/common.h), N bytes.
std::vector<unsigned char> StreamBytes(uint64_t seed, size_t n);
uint64_t HashOf(const void* data, size_t n);

// A sender of a periodic test stream (a fixed 64 KiB pattern, repeated) that remembers what
// it got rid of, so the receiver can check count and hash whatever the chunking was.
class PatternSender {
 public:
  PatternSender();
  // One send()/write of up to N bytes from where the stream is; returns send's result.
  ssize_t SendSome(int fd, size_t n, int flags = MSG_NOSIGNAL);
  // Nonblocking sends until EAGAIN, repeated until two rounds 100 ms apart find no room
  // (in-flight acknowledgements can free room once more after the first EAGAIN).
  void FillUntilFull(int fd);
  uint64_t total() const { return total_; }
  uint64_t hash() const;
  // "TOTAL HASH", for Post(); the receiver compares with Verdict().
  std::string Summary() const;
  // "yes" if D received exactly what SUMMARY describes, followed by how it ended.
  static std::string Verdict(const Drained& d, const std::string& summary);

 private:
  std::vector<unsigned char> pattern_;
  uint64_t total_ = 0;
  testprog::StreamHash hash_;
};

// poll() once with TIMEOUT_MS; returns revents (0 on timeout, -1 on error).
int PollOnce(int fd, short events, int timeout_ms);
// Polls until every bit of WANT is in revents or kWaitMs ran out; returns the last revents.
int PollUntil(int fd, short events, short want, int timeout_ms = kWaitMs);
// Waits until FIONREAD reports at least N bytes (kWaitMs); returns the last value.
int WaitInq(int fd, int n);
// Same for SIOCOUTQ reaching 0.
int WaitOutqEmpty(int fd);

// epoll_wait once; "none" or "IN|OUT" of the single registered descriptor, or
// "n=2 ..." when several events come back.
std::string EpollOnce(int epfd, int timeout_ms);
// epoll_wait until an event containing WANT arrives (kWaitMs); prints that event.
std::string EpollUntil(int epfd, uint32_t want, int timeout_ms = kWaitMs);
// EpollUntil, then lets the event that raised `want` settle and swallows the edges it
// raised after the first: the kernel wakes an edge-triggered waiter twice for one FIN
// (state change, then data ready), and a waiter on the other CPU may run in between.
std::string EpollUntilSettled(int epfd, uint32_t want, int timeout_ms = kWaitMs);

int GetInt(int fd, int level, int name);
std::string GetIntStr(int fd, int level, int name);
std::string SetInt(int fd, int level, int name, int value);
std::string SoError(int fd);
// "nonblock=1 cloexec=0".
std::string FdFlags(int fd);

// ---- registry ----

struct Scenario {
  const char* name;
  uint16_t port;
  const char* what;
  void (*app)();
  void (*peer)();
};
std::vector<Scenario>& Registry();
// Sets the sync directory and the running scenario's base port (main does, once).
void Configure(std::string sync_dir, uint16_t base_port);
struct Register {
  Register(const char* name, uint16_t port, const char* what, void (*app)(), void (*peer)()) {
    Registry().push_back({name, port, what, app, peer});
  }
};

}  // namespace xsock::conform
