// xsock-hostile-client: a client of xsockd that misbehaves on purpose, one way per --mode,
// for tests/integration/hostile_clients.sh (issue 5, "hostile and crashing clients"). It
// does not use libxsock.so: it speaks the control protocol itself (shared/protocol.h
// encoders, raw sendmsg/recvmsg) and writes the shared page directly.
//
// Modes (each bounded in time; exit 0 when the misbehaviour was carried out, 1 when it
// could not be, e.g. xsockd refused the set-up, 2 for a bad command line):
//   garbage           random packets on fresh control connections (before and after hello)
//   bad-indices       sockets connected to the echo server, then out_prod far beyond
//                     out_cons, and in_cons beyond in_prod; each socket must be reset
//   flipping-indices  a thread flips out_prod / in_cons between sane and impossible
//                     values while data flows, for --duration-ms
//   oversized         length fields larger than the packet, a packet above the maximum,
//                     ring_order far too large, an option length beyond its value
//   stop-reading      sockets to the echo server fed until everything is full, never read
//                     back; held for --duration-ms, then the process exits without closing
//   die-mid-call      forked children that send half a request, or a request, and _exit
//                     before the reply (also with a connected socket open)
//   many-sockets      opens --count sockets (default 2000; every 10th connected to the echo
//                     server) and exits without closing any
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "shared/protocol.h"
#include "shared/socket_page.h"
#include "shared/syscalls.h"
#include "shared/unix_io.h"

namespace {

using namespace xsock;
using Clock = std::chrono::steady_clock;

constexpr int kReplyTimeoutMs = 5000;

struct Options {
  std::string socket_path = "/run/xsock/xsockd.sock";
  std::string mode;
  uint16_t echo_port = 0;
  int duration_ms = 2000;
  int count = 2000;
  uint64_t seed = 1;
};
Options opt;
std::mt19937_64 rng;

__attribute__((format(printf, 1, 2))) void Say(const char* fmt, ...) {
  std::fprintf(stderr, "xsock-hostile-client[%d] %s: ", getpid(), opt.mode.c_str());
  va_list ap;
  va_start(ap, fmt);
  std::vfprintf(stderr, fmt, ap);
  va_end(ap);
  std::fputc('\n', stderr);
}

[[noreturn]] void Die(const char* what) {
  Say("%s: %s", what, std::strerror(errno));
  std::exit(1);
}

int MsLeft(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

bool WaitFor(int fd, short events, int timeout_ms, short* revents = nullptr) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    pollfd p = {fd, events, 0};
    const int n = poll(&p, 1, MsLeft(deadline));
    if (n > 0) {
      if (revents != nullptr) *revents = p.revents;
      return true;
    }
    if (n == 0 || errno != EINTR) return false;
  }
}

int Connect() {
  const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) Die("socket(AF_UNIX)");
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, opt.socket_path.c_str(), sizeof(addr.sun_path) - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) Die("connect xsockd");
  return fd;
}

struct Answer {
  proto::Reply reply;
  std::vector<int> fds;
};

// One request, its reply (nullopt: the connection closed or no reply in time).
std::optional<Answer> Call(int fd, const proto::Request& req, std::span<const int> fds = {}) {
  static uint32_t seq = 1;
  const uint32_t my = seq++;
  if (SendPacket(LibcSyscalls(), fd, proto::EncodeRequest(my, req), fds) != 0) return std::nullopt;
  if (!WaitFor(fd, POLLIN, kReplyTimeoutMs)) return std::nullopt;
  std::vector<uint8_t> buf;
  std::vector<int> got;
  if (RecvPacket(LibcSyscalls(), fd, buf, proto::kMaxMessageSize, got) <= 0) return std::nullopt;
  auto decoded = proto::DecodeReply(buf);
  if (!decoded.ok() || decoded->seq != my) {
    for (int f : got) close(f);
    return std::nullopt;
  }
  return Answer{decoded->msg, std::move(got)};
}

// Whether xsockd closes the connection (reads EOF or ECONNRESET) within timeout_ms.
bool Dropped(int fd, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (int i = 0; i < 1000; ++i) {
    if (!WaitFor(fd, POLLIN, MsLeft(deadline))) return false;
    char buf[proto::kMaxMessageSize];
    const ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno == ECONNRESET)) return true;
  }
  return false;
}

int Hello() {
  const int fd = Connect();
  proto::HelloRequest h;
  h.caps = proto::kAllCaps;
  auto a = Call(fd, h);
  if (!a || std::get<proto::HelloReply>(a->reply).err != 0) {
    Say("hello refused");
    std::exit(1);
  }
  return fd;
}

// The app's side of one socket: channel end, mapping.
struct Sock {
  int channel = -1;
  int memfd = -1;
  SocketPage* page = nullptr;
  uint8_t* base = nullptr;
  uint32_t order = 0;
  uint64_t id = 0;
  uint32_t ring() const { return 1u << order; }
  uint8_t* in_data() const { return base + kPageSize; }
  uint8_t* out_data() const { return base + kPageSize + ring(); }
  SocketState state() const {
    return static_cast<SocketState>(page->state.load(std::memory_order_acquire));
  }
};

std::optional<Sock> NewSocket(int ctl, uint32_t ring_order = 0) {
  proto::SocketRequest req;
  req.domain = AF_INET;
  req.type = SOCK_STREAM;
  req.ring_order = ring_order;
  auto a = Call(ctl, req);
  if (!a) return std::nullopt;
  const auto& r = std::get<proto::SocketReply>(a->reply);
  if (r.err != 0 || a->fds.size() != 2) {
    for (int f : a->fds) close(f);
    errno = r.err;
    return std::nullopt;
  }
  Sock s;
  s.channel = a->fds[0];
  s.memfd = a->fds[1];
  s.order = r.ring_order;
  s.id = r.socket_id;
  void* base =
      mmap(nullptr, SocketMemfdSize(s.order), PROT_READ | PROT_WRITE, MAP_SHARED, s.memfd, 0);
  if (base == MAP_FAILED) Die("mmap");
  s.base = static_cast<uint8_t*>(base);
  s.page = static_cast<SocketPage*>(base);
  const int one = 1;
  setsockopt(s.channel, SOL_SOCKET, SO_SNDBUF, &one, sizeof(one));
  return s;
}

void Wake(const Sock& s) {
  const char w = kWakeByte;
  (void)send(s.channel, &w, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

// Connects to the echo server (127.0.0.1) and waits for the page to say connected.
bool ConnectEcho(int ctl, Sock& s) {
  proto::ConnectRequest req;
  req.socket_id = s.id;
  req.addr.family = AF_INET;
  req.addr.port = opt.echo_port;
  const in_addr_t lo = htonl(INADDR_LOOPBACK);
  std::memcpy(req.addr.addr.data(), &lo, 4);
  auto a = Call(ctl, req);
  if (!a) return false;
  const int err = std::get<proto::ConnectReply>(a->reply).err;
  if (err != 0 && err != EINPROGRESS) {
    errno = err;
    return false;
  }
  const auto deadline = Clock::now() + std::chrono::milliseconds(kReplyTimeoutMs);
  while (s.state() == SocketState::kConnecting && Clock::now() < deadline) usleep(1000);
  return s.state() == SocketState::kConnected;
}

// Publishes up to n pattern bytes into `out` (well-formed); returns how many fit.
size_t WriteOut(Sock& s, size_t n) {
  const uint32_t cons = s.page->out_cons.value.load(std::memory_order_acquire);
  uint32_t prod = s.page->out_prod.value.load(std::memory_order_relaxed);
  size_t done = 0;
  while (done < n && prod - cons < s.ring()) {
    s.out_data()[prod & (s.ring() - 1)] = static_cast<uint8_t>(prod * 31);
    ++prod;
    ++done;
  }
  s.page->out_prod.value.store(prod, std::memory_order_release);
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (s.page->out_data_wanted.exchange(0) == 1) Wake(s);
  return done;
}

// Whether xsockd reset the socket (as it must for an impossible index) within timeout_ms.
bool WaitReset(const Sock& s, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (s.state() == SocketState::kClosed &&
        s.page->in_error.value.load(std::memory_order_acquire) == -ECONNRESET) {
      return true;
    }
    Wake(s);
    usleep(2000);
  }
  return false;
}

// ---- modes ----

int Garbage() {
  int dropped = 0;
  const int rounds = 40;
  for (int r = 0; r < rounds; ++r) {
    const int fd = r % 2 == 0 ? Connect() : Hello();
    std::vector<uint8_t> junk(1 + rng() % 600);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    if (r % 4 == 1 && junk.size() >= 16) {  // a real header over a garbage body
      const uint32_t magic = proto::kMagic;
      std::memcpy(junk.data(), &magic, 4);
      junk[4] = 1;
      junk[5] = 0;
    }
    (void)SendPacket(LibcSyscalls(), fd, junk, {});
    if (Dropped(fd, kReplyTimeoutMs)) ++dropped;
    close(fd);
  }
  Say("%d of %d connections with garbage were dropped by xsockd", dropped, rounds);
  return dropped == rounds ? 0 : 1;
}

int BadIndices() {
  const int ctl = Hello();
  int reset = 0;
  // Prod far beyond cons (out), cons beyond prod (in), cons behind what it was (in).
  for (int variant = 0; variant < 3; ++variant) {
    auto s = NewSocket(ctl);
    if (!s || !ConnectEcho(ctl, *s)) Die("socket to the echo server");
    WriteOut(*s, 1000);  // echoed back into `in`
    const auto deadline = Clock::now() + std::chrono::milliseconds(kReplyTimeoutMs);
    while (s->page->in_prod.value.load() - s->page->in_cons.value.load() < 1000 &&
           Clock::now() < deadline) {
      usleep(1000);
    }
    if (variant == 0) {
      s->page->out_prod.value.store(s->page->out_cons.value.load() + 10 * s->ring() + 7);
    } else if (variant == 1) {
      s->page->in_cons.value.store(s->page->in_prod.value.load() + 4096);
    } else {
      s->page->in_cons.value.store(s->page->in_prod.value.load() - s->ring() - 1);
    }
    s->page->in_room_wanted.store(0);
    Wake(*s);
    if (WaitReset(*s, kReplyTimeoutMs)) ++reset;
    close(s->channel);  // the mapping goes with the process
  }
  Say("%d of 3 sockets with impossible indices were reset", reset);
  return reset == 3 ? 0 : 1;
}

int FlippingIndices() {
  const int ctl = Hello();
  std::vector<Sock> socks;
  for (int i = 0; i < 4; ++i) {
    auto s = NewSocket(ctl);
    if (!s || !ConnectEcho(ctl, *s)) Die("socket to the echo server");
    socks.push_back(*s);
  }
  std::atomic<bool> stop{false};
  std::vector<std::thread> flippers;
  for (size_t i = 0; i < socks.size(); ++i) {
    flippers.emplace_back([&, i] {
      Sock& s = socks[i];
      std::atomic<uint32_t>& w = i % 2 == 0 ? s.page->out_prod.value : s.page->in_cons.value;
      const uint32_t sane = w.load();
      for (uint64_t n = 0; !stop.load(std::memory_order_relaxed) && n < 2000000000ull; ++n) {
        w.store(n & 1 ? sane + (1u << 30) : sane + static_cast<uint32_t>(n % s.ring()));
      }
    });
  }
  const auto end = Clock::now() + std::chrono::milliseconds(opt.duration_ms);
  uint64_t wakes = 0;
  while (Clock::now() < end) {
    for (Sock& s : socks) {
      Wake(s);
      char buf[64];
      (void)recv(s.channel, buf, sizeof(buf), MSG_DONTWAIT);  // tokens
      ++wakes;
    }
    usleep(500);
  }
  stop = true;
  for (auto& t : flippers) t.join();
  int reset = 0;
  for (Sock& s : socks) reset += WaitReset(s, kReplyTimeoutMs) ? 1 : 0;
  Say("flipped indices of %zu sockets for %d ms (%llu wakes); %d reset", socks.size(),
      opt.duration_ms, static_cast<unsigned long long>(wakes), reset);
  return 0;  // an index may happen to be sane whenever xsockd looks: resets are not required
}

void PatchLength(std::vector<uint8_t>& m, uint32_t length) { std::memcpy(&m[8], &length, 4); }

int Oversized() {
  int dropped = 0, refused = 0, total = 0;
  auto expect_drop = [&](std::vector<uint8_t> msg) {
    const int fd = Hello();
    ++total;
    (void)SendPacket(LibcSyscalls(), fd, msg, {});
    if (Dropped(fd, kReplyTimeoutMs)) ++dropped;
    close(fd);
  };
  proto::SocketRequest sr;
  sr.domain = AF_INET;
  sr.type = SOCK_STREAM;
  std::vector<uint8_t> m = proto::EncodeRequest(1, sr);
  PatchLength(m, 0xFFFFFFFFu);  // length far beyond the packet
  expect_drop(m);
  m = proto::EncodeRequest(1, sr);
  PatchLength(m, 4096);
  expect_drop(m);
  m = proto::EncodeRequest(1, sr);  // ring_order 31 and 0xFFFFFFFF (at offset 28)
  for (uint32_t order : {31u, 0xFFFFFFFFu, kMaxRingOrder + 1}) {
    std::memcpy(&m[28], &order, 4);
    expect_drop(m);
  }
  std::vector<uint8_t> huge(1 << 16, 0x41);  // a packet above kMaxMessageSize
  std::memcpy(huge.data(), m.data(), 16);
  PatchLength(huge, static_cast<uint32_t>(huge.size()));
  expect_drop(huge);
  // setsockopt whose optlen says more than the value carries.
  {
    const int fd = Hello();
    auto s = NewSocket(fd);
    if (!s) Die("socket");
    proto::SetSockOptRequest o;
    o.socket_id = s->id;
    o.level = SOL_SOCKET;
    o.optname = SO_RCVBUF;
    o.value = {1, 0, 0, 0};
    m = proto::EncodeRequest(1, o);
    const uint32_t optlen = 0x7FFFFFFF;
    std::memcpy(&m[32], &optlen, 4);
    ++total;
    (void)SendPacket(LibcSyscalls(), fd, m, {});
    if (Dropped(fd, kReplyTimeoutMs)) ++dropped;
    close(fd);
    close(s->channel);
  }
  // A well-formed request for the largest ring order: refused or granted, not a drop.
  {
    const int fd = Hello();
    auto s = NewSocket(fd, kMaxRingOrder);
    if (s) {
      close(s->channel);
    } else {
      ++refused;
    }
    close(fd);
  }
  Say("%d of %d oversized messages dropped their connection; max ring order %s", dropped, total,
      refused ? "refused" : "granted");
  return dropped == total ? 0 : 1;
}

int StopReading() {
  const int ctl = Hello();
  std::vector<Sock> socks;
  for (int i = 0; i < 4; ++i) {
    auto s = NewSocket(ctl);
    if (!s || !ConnectEcho(ctl, *s)) Die("socket to the echo server");
    socks.push_back(*s);
  }
  // Feed until nothing moves any more: our `in` full, the echo server's buffer and both
  // kernels' queues full, our `out` full.
  uint64_t written = 0;
  const auto end = Clock::now() + std::chrono::milliseconds(opt.duration_ms);
  while (Clock::now() < end) {
    size_t moved = 0;
    for (Sock& s : socks) moved += WriteOut(s, 1 << 20);
    written += moved;
    usleep(moved ? 1000 : 20000);
  }
  Say("wrote %llu bytes on %zu sockets and read none back; exiting without closing",
      static_cast<unsigned long long>(written), socks.size());
  _exit(0);
}

int DieMidCall() {
  int children = 0;
  for (int r = 0; r < 12; ++r) {
    const pid_t pid = fork();
    if (pid < 0) Die("fork");
    if (pid == 0) {
      const int fd = Hello();
      proto::SocketRequest sr;
      sr.domain = AF_INET;
      sr.type = SOCK_STREAM;
      std::vector<uint8_t> m = proto::EncodeRequest(99, sr);
      switch (r % 4) {
        case 0:  // half a request, then gone
          m.resize(m.size() / 2);
          (void)SendPacket(LibcSyscalls(), fd, m, {});
          break;
        case 1:  // a whole request, gone before the reply (with its descriptors)
          (void)SendPacket(LibcSyscalls(), fd, m, {});
          break;
        case 2: {  // a connected socket with bytes in flight, then a request and gone
          auto s = NewSocket(fd);
          if (s && ConnectEcho(fd, *s)) WriteOut(*s, 100000);
          proto::GetSockOptRequest g;
          g.socket_id = s ? s->id : 1;
          g.level = SOL_SOCKET;
          g.optname = SO_ERROR;
          g.optlen = 4;
          (void)SendPacket(LibcSyscalls(), fd, proto::EncodeRequest(7, g), {});
          break;
        }
        default: {  // an attach with its descriptor, gone before the reply
          auto s = NewSocket(fd);
          const int ch = s ? s->channel : 0;
          (void)SendPacket(LibcSyscalls(), fd, proto::EncodeRequest(8, proto::AttachRequest{}),
                           std::span<const int>(&ch, 1));
        }
      }
      _exit(0);
    }
    int status = 0;
    if (waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      ++children;
    }
  }
  Say("%d of 12 children died in the middle of a call", children);
  return children == 12 ? 0 : 1;
}

int ManySockets() {
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  const rlim_t want = static_cast<rlim_t>(opt.count) * 2 + 64;
  if (rl.rlim_cur < want) {
    rl.rlim_cur = want;
    if (rl.rlim_max < want) rl.rlim_max = want;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) Die("setrlimit(RLIMIT_NOFILE)");
  }
  const int ctl = Hello();
  int made = 0, connected = 0, failed = 0;
  for (int i = 0; i < opt.count; ++i) {
    auto s = NewSocket(ctl, kMinRingOrder);
    if (!s) {
      ++failed;
      continue;
    }
    ++made;
    if (i % 10 == 0 && ConnectEcho(ctl, *s)) {
      ++connected;
      WriteOut(*s, 0);
    }
    // The mapping and memfd go (only descriptors are limited); the channels stay open.
    munmap(s->base, SocketMemfdSize(s->order));
    close(s->memfd);
  }
  Say("%d sockets (%d connected, %d refused); exiting without closing any", made, connected,
      failed);
  _exit(made > 0 ? 0 : 1);
}

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: xsock-hostile-client --mode MODE [--socket PATH] [--echo-port N]\n"
               "                            [--duration-ms N] [--count N] [--seed N]\n"
               "MODE: garbage, bad-indices, flipping-indices, oversized, stop-reading,\n"
               "      die-mid-call, many-sockets (see the top of hostile_client.cc)\n");
}

}  // namespace

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    const bool has = i + 1 < argc;
    if (a == "--mode" && has) {
      opt.mode = argv[++i];
    } else if (a == "--socket" && has) {
      opt.socket_path = argv[++i];
    } else if (a == "--echo-port" && has) {
      opt.echo_port = static_cast<uint16_t>(std::atoi(argv[++i]));
    } else if (a == "--duration-ms" && has) {
      opt.duration_ms = std::atoi(argv[++i]);
    } else if (a == "--count" && has) {
      opt.count = std::atoi(argv[++i]);
    } else if (a == "--seed" && has) {
      opt.seed = std::strtoull(argv[++i], nullptr, 10);
    } else if (a == "--help") {
      Usage(stdout);
      return 0;
    } else {
      Usage(stderr);
      return 2;
    }
  }
  if (const char* env = std::getenv("XSOCK_SOCKET"); env && opt.socket_path.empty()) {
    opt.socket_path = env;
  }
  rng.seed(opt.seed * 0x9E3779B97F4A7C15ull + static_cast<uint64_t>(getpid()));
  signal(SIGPIPE, SIG_IGN);
  const bool needs_echo = opt.mode == "bad-indices" || opt.mode == "flipping-indices" ||
                          opt.mode == "stop-reading" || opt.mode == "many-sockets" ||
                          opt.mode == "die-mid-call";
  if (needs_echo && opt.echo_port == 0) {
    std::fprintf(stderr, "xsock-hostile-client: --mode %s needs --echo-port\n", opt.mode.c_str());
    return 2;
  }
  if (opt.mode == "garbage") return Garbage();
  if (opt.mode == "bad-indices") return BadIndices();
  if (opt.mode == "flipping-indices") return FlippingIndices();
  if (opt.mode == "oversized") return Oversized();
  if (opt.mode == "stop-reading") return StopReading();
  if (opt.mode == "die-mid-call") return DieMidCall();
  if (opt.mode == "many-sockets") return ManySockets();
  Usage(stderr);
  return 2;
}
