// xsock-stream-check: streams a deterministic pseudo-random byte stream to an echo server
// while reading the echo back, and checks that what came back is exactly what was sent:
// same length, same order-sensitive hash, and byte for byte (the first difference is
// reported by offset). Write and read sizes are random, so ring wrap-around and partial
// reads/writes are exercised. After the last byte is sent it shuts its side down and
// expects the server's FIN right after the last echoed byte (with --no-shutdown it keeps
// the connection open and stops reading after the last expected byte instead).
//
// Modes use different calls on purpose, so that one run covers several hooks:
//   epoll-et  nonblocking socket and connect, edge-triggered epoll, send()/recv()
//   poll      nonblocking socket and connect, poll(), write()/read()
//   threads   blocking socket, one sender thread (send) and one receiver thread (recv)
//
// Exit codes: 0 verified, 1 wrong data or early EOF, 2 usage, 3 socket error (the errno
// name is printed: "error: recv: ECONNRESET"), 4 --timeout or --stall-timeout expired.
// The once-a-second timer signal also exercises EINTR handling of the calls it interrupts.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cinttypes>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "tests/programs/common.h"

namespace {

using xsock::testprog::ByteStream;
using xsock::testprog::Endpoint;
using xsock::testprog::ErrnoName;
using xsock::testprog::SplitMix64;
using xsock::testprog::StreamHash;

enum class Mode { kEpollEt, kPoll, kThreads };

struct Options {
  Mode mode = Mode::kEpollEt;
  const char* mode_name = "epoll-et";
  uint64_t bytes = 64ull << 20;
  uint64_t seed = 1;
  uint64_t max_chunk = 64 * 1024;
  unsigned timeout_s = 60;
  unsigned stall_s = 0;
  uint64_t progress = 0;
  bool half_close = true;
  bool strict_readiness = false;
  Endpoint peer;
  std::string peer_text;
};

void Usage(FILE* out) {
  std::fprintf(
      out,
      "usage: xsock-stream-check [options] ADDR PORT\n"
      "\n"
      "Streams --bytes of seeded pseudo-random data to the echo server at ADDR PORT\n"
      "(IPv4 or IPv6 literal) while reading the echo back, then verifies length, hash and\n"
      "content of what came back.\n"
      "\n"
      "  --mode M         epoll-et (default): nonblocking, edge-triggered epoll\n"
      "                   poll: nonblocking, poll()\n"
      "                   threads: blocking, a sender and a receiver thread\n"
      "  --bytes N        bytes to send; suffixes K, M, G (default 64M)\n"
      "  --seed N         seed of the data and of the read/write sizes (default 1)\n"
      "  --max-chunk N    largest single write/read; sizes are random in 1..N (default 64K)\n"
      "  --timeout S      give up after S seconds, exit 4 (default 60; 0: never)\n"
      "  --stall-timeout S  give up when no byte has moved either way for S seconds,\n"
      "                   exit 4 (default 0: never)\n"
      "  --progress N     print 'progress: received X' every N bytes received\n"
      "  --no-shutdown    do not shut down the sending side after the last byte; stop\n"
      "                   reading after the last expected byte instead of at EOF\n"
      "  --strict-readiness  (poll mode) fail, exit 1, when the first read after poll()\n"
      "                   reported POLLIN finds nothing (EAGAIN), as sshd would\n"
      "\n"
      "exit: 0 verified, 1 wrong data/early EOF, 2 usage, 3 socket error, 4 timeout/stall\n");
}

// Counters the SIGALRM handler watches; written by the transfer, read asynchronously.
std::atomic<uint64_t> g_sent{0};
std::atomic<uint64_t> g_received{0};
// Limits (0: none) and the handler's own state; only the handler touches the latter.
unsigned g_timeout_s = 0;
unsigned g_stall_s = 0;
unsigned g_elapsed_s = 0;
unsigned g_idle_s = 0;
uint64_t g_last_progress = 0;

// Async-signal-safe decimal formatting for the timeout message.
size_t FormatU64(uint64_t v, char* out) {
  char tmp[24];
  size_t n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  for (size_t i = 0; i < n; ++i) out[i] = tmp[n - 1 - i];
  return n;
}

// Runs once a second: ends the program (status 4) when --timeout has passed, or when
// neither direction has moved a byte for --stall-timeout seconds.
void OnTick(int) {
  ++g_elapsed_s;
  const uint64_t progress = g_sent.load() + g_received.load();
  g_idle_s = progress == g_last_progress ? g_idle_s + 1 : 0;
  g_last_progress = progress;
  const bool timed_out = g_timeout_s != 0 && g_elapsed_s >= g_timeout_s;
  const bool stalled = g_stall_s != 0 && g_idle_s >= g_stall_s;
  if (!timed_out && !stalled) return;

  char msg[160];
  size_t n = 0;
  auto put = [&](const char* s) {
    while (*s) msg[n++] = *s++;
  };
  put(timed_out ? "error: timeout after " : "error: no progress for ");
  n += FormatU64(timed_out ? g_timeout_s : g_stall_s, msg + n);
  put(" s: sent ");
  n += FormatU64(g_sent.load(), msg + n);
  put(", received ");
  n += FormatU64(g_received.load(), msg + n);
  put("\n");
  ssize_t ignored = write(STDOUT_FILENO, msg, n);
  (void)ignored;
  _exit(4);
}

[[noreturn]] void SocketError(const char* call, int err) {
  std::printf("error: %s: %s (sent %" PRIu64 ", received %" PRIu64 ")\n", call,
              ErrnoName(err).c_str(), g_sent.load(), g_received.load());
  std::fflush(stdout);
  _exit(3);
}

[[noreturn]] void DataError(const std::string& what) {
  std::printf("error: %s (sent %" PRIu64 ", received %" PRIu64 ")\n", what.c_str(), g_sent.load(),
              g_received.load());
  std::fflush(stdout);
  _exit(1);
}

// Produces the outgoing stream in random-size pieces and hashes it.
class Sender {
 public:
  explicit Sender(const Options& o)
      : total_(o.bytes),
        max_chunk_(o.max_chunk),
        data_(o.seed),
        sizes_(o.seed ^ 0x5E4D5E4Dull),
        buf_(o.max_chunk) {}

  bool done() const { return sent_ == total_; }
  // The bytes of the next write; stays the same until Consumed() takes some of them.
  std::pair<const unsigned char*, size_t> Next() {
    if (off_ == len_) {
      len_ = static_cast<size_t>(std::min<uint64_t>(sizes_.Between(1, max_chunk_), total_ - sent_));
      data_.Fill(buf_.data(), len_);
      hash_.Update(buf_.data(), len_);
      off_ = 0;
    }
    return {buf_.data() + off_, len_ - off_};
  }
  void Consumed(size_t n) {
    off_ += n;
    sent_ += n;
    g_sent.store(sent_, std::memory_order_relaxed);
  }
  const StreamHash& hash() const { return hash_; }

 private:
  uint64_t total_;
  uint64_t max_chunk_;
  ByteStream data_;
  SplitMix64 sizes_;
  std::vector<unsigned char> buf_;
  size_t off_ = 0;
  size_t len_ = 0;
  uint64_t sent_ = 0;
  StreamHash hash_;
};

// Checks incoming bytes against an independently generated copy of the stream.
class Receiver {
 public:
  explicit Receiver(const Options& o)
      : total_(o.bytes),
        max_chunk_(o.max_chunk),
        progress_(o.progress),
        wait_for_eof_(o.half_close),
        seed_(o.seed),
        expected_(o.seed),
        sizes_(o.seed ^ 0xEC40EC40ull),
        buf_(o.max_chunk),
        want_(o.max_chunk) {}

  // Where and how much to read next: a random size, not capped at the bytes still due,
  // so a peer that sends more than it was sent is caught rather than left unread.
  std::pair<unsigned char*, size_t> Next() {
    return {buf_.data(), static_cast<size_t>(sizes_.Between(1, max_chunk_))};
  }
  void Got(size_t n) {
    if (received_ + n > total_) {
      DataError("received " + std::to_string(received_ + n) + " bytes, more than the " +
                std::to_string(total_) + " sent");
    }
    expected_.Fill(want_.data(), n);
    if (std::memcmp(want_.data(), buf_.data(), n) != 0) {
      size_t i = 0;
      while (want_[i] == buf_[i]) ++i;
      DataError("content differs at offset " + std::to_string(received_ + i) +
                Locate(received_ + i, buf_.data() + i, n - i));
    }
    hash_.Update(buf_.data(), n);
    const uint64_t before = received_;
    received_ += n;
    g_received.store(received_, std::memory_order_relaxed);
    if (progress_ != 0 && before / progress_ != received_ / progress_) {
      std::printf("progress: received %" PRIu64 "\n", received_);
      std::fflush(stdout);
    }
    if (!wait_for_eof_ && received_ == total_) eof_ = true;
  }
  // Diagnosis of a difference: where in the stream the received bytes belong (a repeat of
  // earlier bytes, bytes from later, or nothing the sender produced), searched within
  // 8 MiB either side.
  std::string Locate(uint64_t at, const unsigned char* got, size_t len) const {
    const size_t probe = std::min<size_t>(len, 64);
    if (probe < 8) return " (too few bytes received there to locate them)";
    const uint64_t window = 8u << 20;
    const uint64_t from = at > window ? at - window : 0;
    std::vector<unsigned char> stream(static_cast<size_t>(at + window - from) + probe);
    ByteStream regen(seed_);
    std::vector<unsigned char> skip(1 << 16);
    for (uint64_t left = from; left > 0;) {
      const size_t step = static_cast<size_t>(std::min<uint64_t>(left, skip.size()));
      regen.Fill(skip.data(), step);
      left -= step;
    }
    regen.Fill(stream.data(), stream.size());
    std::string found;
    for (size_t pos = 0; pos + probe <= stream.size(); ++pos) {
      if (std::memcmp(stream.data() + pos, got, probe) == 0) {
        const int64_t delta = static_cast<int64_t>(from + pos) - static_cast<int64_t>(at);
        found += (found.empty() ? "" : ", ") + std::to_string(from + pos) + " (" +
                 (delta > 0 ? "+" : "") + std::to_string(delta) + ")";
        if (found.size() > 200) break;
      }
    }
    // What the difference looks like: bytes received and expected, and how long the run of
    // differing bytes is (until 64 bytes match again) within what this read returned.
    std::vector<unsigned char> want(len);
    ByteStream again(seed_);
    for (uint64_t left = at; left > 0;) {
      const size_t step = static_cast<size_t>(std::min<uint64_t>(left, skip.size()));
      again.Fill(skip.data(), step);
      left -= step;
    }
    again.Fill(want.data(), want.size());
    size_t run = 0;
    for (size_t same = 0; run < len && same < 64; ++run)
      same = got[run] == want[run] ? same + 1 : 0;
    size_t zeros = 0;
    for (size_t k = 0; k < run; ++k) zeros += got[k] == 0;
    std::string hex = " got";
    for (size_t k = 0; k < std::min<size_t>(len, 16); ++k) hex += fmt_hex(got[k]);
    hex += " want";
    for (size_t k = 0; k < std::min<size_t>(len, 16); ++k) hex += fmt_hex(want[k]);
    hex += " got_text=\"";
    for (size_t k = 0; k < std::min<size_t>(len, 160); ++k) {
      const unsigned char c = got[k];
      hex += c >= 0x20 && c < 0x7f && c != '\\' && c != '"' ? std::string(1, static_cast<char>(c))
                                                            : "\\x" + fmt_hex(c).substr(1);
    }
    hex += "\"";
    hex += " differing_run=" + std::to_string(run) + " zeros_in_run=" + std::to_string(zeros) +
           " read_len=" + std::to_string(len);
    if (found.empty()) {
      return hex + " (the " + std::to_string(probe) +
             " bytes received there are nowhere within 8 MiB of it in the stream sent)";
    }
    return hex + " (the " + std::to_string(probe) + " bytes received there were sent at offset " +
           found + ")";
  }
  static std::string fmt_hex(unsigned char c) {
    static const char d[] = "0123456789abcdef";
    return std::string(1, ' ') + d[c >> 4] + d[c & 15];
  }

  void GotEof() {
    if (received_ != total_) {
      DataError("EOF after " + std::to_string(received_) + " of " + std::to_string(total_) +
                " bytes");
    }
    eof_ = true;
  }
  bool eof() const { return eof_; }
  const StreamHash& hash() const { return hash_; }

 private:
  uint64_t total_;
  uint64_t max_chunk_;
  uint64_t progress_;
  bool wait_for_eof_;
  uint64_t seed_;
  ByteStream expected_;
  SplitMix64 sizes_;
  std::vector<unsigned char> buf_;
  std::vector<unsigned char> want_;
  uint64_t received_ = 0;
  bool eof_ = false;
  StreamHash hash_;
};

// Connects a nonblocking socket: EINPROGRESS, wait for POLLOUT, then SO_ERROR.
int ConnectNonblocking(const Options& o) {
  const int fd = socket(o.peer.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) SocketError("socket", errno);
  if (connect(fd, o.peer.addr(), o.peer.len) == 0) return fd;
  if (errno != EINPROGRESS) SocketError("connect", errno);
  pollfd p{fd, POLLOUT, 0};
  while (poll(&p, 1, -1) < 0) {
    if (errno != EINTR) SocketError("poll", errno);
  }
  int err = 0;
  socklen_t len = sizeof(err);
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) SocketError("getsockopt", errno);
  if (err != 0) SocketError("connect", err);
  return fd;
}

int ConnectBlocking(const Options& o) {
  const int fd = socket(o.peer.family(), SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) SocketError("socket", errno);
  while (connect(fd, o.peer.addr(), o.peer.len) != 0) {
    if (errno != EINTR) SocketError("connect", errno);
  }
  return fd;
}

// Ends the sending direction once everything is sent (unless --no-shutdown).
void FinishSending(int fd, bool half_close) {
  if (half_close && shutdown(fd, SHUT_WR) != 0) SocketError("shutdown", errno);
}

// One nonblocking step each way. Returns whether the direction would block now.
bool SendSome(int fd, Sender& s, bool use_write, bool half_close) {
  while (!s.done()) {
    auto [p, n] = s.Next();
    const ssize_t w = use_write ? write(fd, p, n) : send(fd, p, n, 0);
    if (w < 0) {
      if (errno == EAGAIN) return true;
      if (errno == EINTR) continue;
      SocketError(use_write ? "write" : "send", errno);
    }
    s.Consumed(static_cast<size_t>(w));
  }
  FinishSending(fd, half_close);
  return false;
}

// With first_would_block, reports whether the very first read found nothing (EAGAIN).
bool ReceiveSome(int fd, Receiver& r, bool use_read, bool* first_would_block = nullptr) {
  bool first = true;
  while (!r.eof()) {
    auto [p, n] = r.Next();
    const ssize_t got = use_read ? read(fd, p, n) : recv(fd, p, n, 0);
    if (first_would_block != nullptr && first) *first_would_block = got < 0 && errno == EAGAIN;
    first = false;
    if (got < 0) {
      if (errno == EAGAIN) return true;
      if (errno == EINTR) continue;
      SocketError(use_read ? "read" : "recv", errno);
    }
    if (got == 0) {
      r.GotEof();
    } else {
      r.Got(static_cast<size_t>(got));
    }
  }
  return false;
}

void RunEpollEt(const Options& o, Sender& s, Receiver& r) {
  const int fd = ConnectNonblocking(o);
  const int ep = epoll_create1(EPOLL_CLOEXEC);
  if (ep < 0) SocketError("epoll_create1", errno);
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.fd = fd;
  if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) SocketError("epoll_ctl", errno);
  // Edge-triggered: a direction may be retried only after it hit EAGAIN and a new edge
  // arrived; waiting while a direction could still progress would hang.
  bool can_write = true;
  bool can_read = true;
  while (!r.eof()) {
    if (can_write && !s.done()) can_write = !SendSome(fd, s, false, o.half_close);
    if (can_read) can_read = !ReceiveSome(fd, r, false);
    if (r.eof()) break;
    if ((can_write && !s.done()) || can_read) continue;
    epoll_event got[4];
    const int n = epoll_wait(ep, got, 4, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      SocketError("epoll_wait", errno);
    }
    for (int i = 0; i < n; ++i) {
      // Errors and hang-ups surface from the next recv/send with their errno.
      if (got[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP)) can_read = true;
      if (got[i].events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) can_write = true;
    }
  }
  close(ep);
  close(fd);
}

void RunPoll(const Options& o, Sender& s, Receiver& r) {
  const int fd = ConnectNonblocking(o);
  while (!r.eof()) {
    pollfd p{fd, static_cast<short>(POLLIN | (s.done() ? 0 : POLLOUT)), 0};
    const int n = poll(&p, 1, -1);
    if (n < 0) {
      if (errno == EINTR) continue;
      SocketError("poll", errno);
    }
    if ((p.revents & (POLLOUT | POLLERR | POLLHUP)) && !s.done())
      SendSome(fd, s, true, o.half_close);
    if (p.revents & (POLLIN | POLLERR | POLLHUP)) {
      bool would_block = false;
      ReceiveSome(fd, r, true, &would_block);
      // A TCP socket with one reader never polls readable with nothing to read; programs
      // such as sshd's packet layer treat that EAGAIN as fatal.
      if (would_block && o.strict_readiness) {
        std::fprintf(stderr, "error: read: EAGAIN right after poll() reported POLLIN\n");
        std::exit(1);
      }
    }
  }
  close(fd);
}

void RunThreads(const Options& o, Sender& s, Receiver& r) {
  const int fd = ConnectBlocking(o);
  std::thread sender([&] {
    while (!s.done()) {
      auto [p, n] = s.Next();
      const ssize_t w = send(fd, p, n, 0);
      if (w < 0) {
        if (errno == EINTR) continue;
        SocketError("send", errno);
      }
      s.Consumed(static_cast<size_t>(w));
    }
    FinishSending(fd, o.half_close);
  });
  std::thread receiver([&] {
    while (!r.eof()) {
      auto [p, n] = r.Next();
      const ssize_t got = recv(fd, p, n, 0);
      if (got < 0) {
        if (errno == EINTR) continue;
        SocketError("recv", errno);
      }
      if (got == 0) {
        r.GotEof();
      } else {
        r.Got(static_cast<size_t>(got));
      }
    }
  });
  sender.join();
  receiver.join();
  close(fd);
}

bool ParseArgs(int argc, char** argv, Options& o) {
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    auto size_arg = [&](uint64_t& out) {
      const auto v = xsock::testprog::ParseSize(argv[++i]);
      if (!v) std::fprintf(stderr, "xsock-stream-check: %s %s: not a size\n", arg.c_str(), argv[i]);
      if (v) out = *v;
      return v.has_value();
    };
    if (arg == "--help" || arg == "-h") {
      Usage(stdout);
      std::exit(0);
    } else if (arg == "--mode" && has_value) {
      const std::string m = argv[++i];
      if (m == "epoll-et") {
        o.mode = Mode::kEpollEt;
      } else if (m == "poll") {
        o.mode = Mode::kPoll;
      } else if (m == "threads") {
        o.mode = Mode::kThreads;
      } else {
        std::fprintf(stderr, "xsock-stream-check: --mode %s: not epoll-et, poll or threads\n",
                     m.c_str());
        return false;
      }
      o.mode_name = argv[i];
    } else if (arg == "--bytes" && has_value) {
      if (!size_arg(o.bytes)) return false;
    } else if (arg == "--seed" && has_value) {
      if (!size_arg(o.seed)) return false;
    } else if (arg == "--max-chunk" && has_value) {
      if (!size_arg(o.max_chunk)) return false;
      if (o.max_chunk == 0 || o.max_chunk > (64u << 20)) {
        std::fprintf(stderr, "xsock-stream-check: --max-chunk must be 1..64M\n");
        return false;
      }
    } else if (arg == "--timeout" && has_value) {
      uint64_t t = 0;
      if (!size_arg(t)) return false;
      o.timeout_s = static_cast<unsigned>(t);
    } else if (arg == "--stall-timeout" && has_value) {
      uint64_t t = 0;
      if (!size_arg(t)) return false;
      o.stall_s = static_cast<unsigned>(t);
    } else if (arg == "--no-shutdown") {
      o.half_close = false;
    } else if (arg == "--strict-readiness") {
      o.strict_readiness = true;
    } else if (arg == "--progress" && has_value) {
      if (!size_arg(o.progress)) return false;
    } else if (!arg.empty() && arg[0] == '-' && arg != "-") {
      std::fprintf(stderr, "xsock-stream-check: unknown or incomplete option '%s'\n", arg.c_str());
      return false;
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 2) {
    std::fprintf(stderr, "xsock-stream-check: expected ADDR PORT\n");
    return false;
  }
  const auto port = xsock::testprog::ParsePort(positional[1]);
  const auto ep = port ? xsock::testprog::ParseEndpoint(positional[0], *port) : std::nullopt;
  if (!ep) {
    std::fprintf(stderr, "xsock-stream-check: '%s %s' is not a numeric address and port\n",
                 positional[0].c_str(), positional[1].c_str());
    return false;
  }
  o.peer = *ep;
  o.peer_text = positional[0] + " port " + positional[1];
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  if (!ParseArgs(argc, argv, o)) {
    Usage(stderr);
    return 2;
  }
  // Broken connections must show up as EPIPE from send, not as death by signal.
  signal(SIGPIPE, SIG_IGN);
  g_timeout_s = o.timeout_s;
  g_stall_s = o.stall_s;
  struct sigaction tick = {};
  tick.sa_handler = OnTick;
  tick.sa_flags = SA_RESTART;
  sigaction(SIGALRM, &tick, nullptr);
  const itimerval every_second = {{1, 0}, {1, 0}};
  if (o.timeout_s != 0 || o.stall_s != 0) setitimer(ITIMER_REAL, &every_second, nullptr);

  Sender sender(o);
  Receiver receiver(o);
  const auto start = std::chrono::steady_clock::now();
  switch (o.mode) {
    case Mode::kEpollEt:
      RunEpollEt(o, sender, receiver);
      break;
    case Mode::kPoll:
      RunPoll(o, sender, receiver);
      break;
    case Mode::kThreads:
      RunThreads(o, sender, receiver);
      break;
  }
  const itimerval off = {};
  setitimer(ITIMER_REAL, &off, nullptr);
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  std::printf("mode %s to %s\n", o.mode_name, o.peer_text.c_str());
  std::printf("sent %" PRIu64 " bytes hash %016" PRIx64 "\n", sender.hash().bytes(),
              sender.hash().Digest());
  std::printf("received %" PRIu64 " bytes hash %016" PRIx64 "\n", receiver.hash().bytes(),
              receiver.hash().Digest());
  std::printf("time %.3f s, %.1f MiB/s each way\n", secs,
              secs > 0 ? static_cast<double>(o.bytes) / secs / (1 << 20) : 0.0);
  if (sender.hash().bytes() != receiver.hash().bytes() ||
      sender.hash().Digest() != receiver.hash().Digest()) {
    std::printf("error: hash mismatch\n");
    return 1;
  }
  std::printf("ok\n");
  return 0;
}
