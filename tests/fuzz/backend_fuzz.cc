// Fuzz target for xsockd's request handling and ring consumer: a real backend::Server runs
// in this process (its event loop in a thread, on a temporary socket path), and every input
// is a script of what a hostile client can do to it:
//
//   * open control connections, say hello, send raw messages (arbitrary bytes, or bytes
//     with a valid-looking header of a chosen type and length) with descriptors beside them;
//   * create sockets through a proper hello + socket exchange, map their memory and write
//     arbitrary values into any word of the shared page (ring indices, in_token, wake
//     flags, error words, state...), arbitrary bytes into the `out` ring, wake/stuffing
//     bytes into the channel; flip a page word between two values from a second thread
//     while the server reads it;
//   * connect those sockets to a loopback listener the harness owns (or to a closed
//     port), send from / close / reset the harness's end of the host connection;
//   * control requests on the sockets (shutdown, release, attach, bind, listen, options);
//   * give the server's loop time (a stats round trip, a short sleep), close things.
//
// Connects and binds only ever reach loopback (the harness rewrites their addresses), and
// name lookups never leave the process (the resolver admits none: EAI_AGAIN at once).
//
// Properties checked after every input, once everything the input opened is closed:
//   * no crash, no sanitizer report (the server runs in this process);
//   * the server still serves a fresh well-behaved client: hello, socket (two descriptors,
//     a page with the right magic and socket id), release;
//   * it freed everything the hostile client held: sockets_now returns to 0 and clients_now
//     to 1 (the checking client) within a bound.
// A violation aborts with a message, which libFuzzer records as a crash with the input.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "backend/log.h"
#include "backend/server.h"
#include "shared/protocol.h"
#include "shared/socket_page.h"
#include "shared/syscalls.h"
#include "shared/unix_io.h"

namespace {

using namespace xsock;
using Clock = std::chrono::steady_clock;

constexpr int kReplyTimeoutMs = 300;    // a hostile script's own exchanges
constexpr int kCheckTimeoutMs = 10000;  // the final check: only reached when broken
constexpr size_t kMaxControls = 3;
constexpr size_t kMaxSockets = 6;
constexpr size_t kMaxPeers = 8;
constexpr int kMaxOps = 64;

[[noreturn]] void Fail(const std::string& what) {
  std::fprintf(stderr, "backend_fuzz: %s\n", what.c_str());
  std::abort();
}

// Input reader: every value comes from the input; an exhausted input reads zeros.
class Input {
 public:
  Input(const uint8_t* data, size_t size) : data_(data), size_(size) {}
  bool empty() const { return pos_ >= size_; }
  uint8_t U8() { return pos_ < size_ ? data_[pos_++] : 0; }
  uint16_t U16() { return static_cast<uint16_t>(U8() | (U8() << 8)); }
  uint32_t U32() { return static_cast<uint32_t>(U16()) | (static_cast<uint32_t>(U16()) << 16); }
  bool Bool() { return U8() & 1; }
  std::vector<uint8_t> Bytes(size_t n) {
    n = std::min(n, size_ - std::min(pos_, size_));
    std::vector<uint8_t> out(data_ + pos_, data_ + pos_ + n);
    pos_ += n;
    return out;
  }

 private:
  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
};

int MsLeft(Clock::time_point deadline) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

bool WaitReadable(int fd, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    pollfd p = {fd, POLLIN, 0};
    const int n = poll(&p, 1, MsLeft(deadline));
    if (n > 0) return true;
    if (n == 0) return false;
    if (errno != EINTR) return false;
  }
}

void CloseFd(int& fd) {
  if (fd >= 0) close(fd);
  fd = -1;
}

// ---- The server, once per process ----

struct Harness {
  std::string dir;
  std::string path;
  backend::Server* server = nullptr;
  int listener = -1;  // the harness's loopback TCP listener (the sockets' destination)
  uint16_t listen_port = 0;
  uint16_t closed_port = 0;  // nothing listens there
};

uint16_t BoundPort(int fd) {
  sockaddr_in a = {};
  socklen_t len = sizeof(a);
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) Fail("getsockname");
  return ntohs(a.sin_port);
}

int OpenTcp(bool listen_too) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (fd < 0) Fail("socket");
  sockaddr_in a = {};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) Fail("bind");
  if (listen_too && listen(fd, 128) != 0) Fail("listen");
  return fd;
}

Harness& TheHarness() {
  static Harness* h = [] {
    auto* hh = new Harness;
    signal(SIGPIPE, SIG_IGN);
    const bool echo = std::getenv("XSOCK_FUZZ_LOG") != nullptr;
    backend::SetLogSink([echo](std::string_view line) {
      if (echo) std::fprintf(stderr, "%.*s\n", static_cast<int>(line.size()), line.data());
    });
    char tmpl[] = "/tmp/xsockd-fuzz-XXXXXX";
    if (mkdtemp(tmpl) == nullptr) Fail("mkdtemp");
    hh->dir = tmpl;
    hh->path = hh->dir + "/xsockd.sock";
    backend::ServerOptions options;
    options.socket_path = hh->path;
    options.ring_order = kMinRingOrder;  // small rings: cheap sockets, easily filled
    options.handle_signals = false;
    options.resolver.max_outstanding = 0;  // no lookup ever leaves the process
    auto server = backend::Server::Create(options);
    if (!server.ok()) Fail("Server::Create: " + server.status().ToString());
    hh->server = server->release();
    std::thread([s = hh->server] { (void)s->Run(); }).detach();
    hh->listener = OpenTcp(true);
    hh->listen_port = BoundPort(hh->listener);
    const int closed = OpenTcp(false);
    hh->closed_port = BoundPort(closed);
    close(closed);  // nothing listens on it; kept unused by not reusing the number
    return hh;
  }();
  return *h;
}

int ConnectControl() {
  const int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (fd < 0) Fail("socket(AF_UNIX)");
  sockaddr_un addr = {};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, TheHarness().path.c_str(), sizeof(addr.sun_path) - 1);
  if (connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    Fail(std::string("connect to xsockd: ") + std::strerror(errno));
  }
  return fd;
}

// Sends one request and waits for the reply to it (skipping replies to earlier raw
// messages). nullopt on timeout or a closed connection.
struct Answer {
  proto::Reply reply;
  std::vector<int> fds;  // owned by the caller
};
std::optional<Answer> Call(int fd, uint32_t seq, const proto::Request& req, int timeout_ms,
                           std::span<const int> send_fds = {}) {
  if (SendPacket(LibcSyscalls(), fd, proto::EncodeRequest(seq, req), send_fds, MSG_DONTWAIT) !=
      0) {
    return std::nullopt;
  }
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  for (int i = 0; i < 256; ++i) {
    if (!WaitReadable(fd, MsLeft(deadline))) return std::nullopt;
    std::vector<uint8_t> buf;
    std::vector<int> fds;
    const ssize_t n =
        RecvPacket(LibcSyscalls(), fd, buf, proto::kMaxMessageSize, fds, MSG_DONTWAIT);
    if (n == -EAGAIN) continue;
    if (n <= 0) return std::nullopt;
    auto decoded = proto::DecodeReply(buf);
    if (!decoded.ok()) Fail("xsockd sent a reply that does not decode: " +
                            decoded.status().ToString());
    if (decoded->seq == seq && proto::TypeOf(decoded->msg) == proto::TypeOf(req)) {
      return Answer{decoded->msg, std::move(fds)};
    }
    for (int f : fds) close(f);
  }
  return std::nullopt;
}

// ---- One input's objects ----

struct Sock {
  int channel = -1;
  int memfd = -1;
  void* base = nullptr;
  size_t size = 0;
  uint32_t order = 0;
  uint64_t id = 0;
  int control = -1;  // index of the control connection that made it
};

struct Control {
  int fd = -1;
  bool hello = false;
};

class Flipper {
 public:
  void Start(std::atomic<uint32_t>* word, uint32_t a, uint32_t b) {
    Stop();
    stop_ = false;
    thread_ = std::thread([this, word, a, b] {
      // Bounded: stops when asked, or after this many flips.
      for (int i = 0; i < 2000000 && !stop_.load(std::memory_order_relaxed); ++i) {
        word->store((i & 1) ? a : b, std::memory_order_release);
      }
    });
  }
  void Stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  ~Flipper() { Stop(); }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

class Script {
 public:
  explicit Script(Input& in) : in_(in) {}
  ~Script() { CloseAll(); }
  void Run();

 private:
  Control* PickControl() {
    if (controls_.empty()) return nullptr;
    return &controls_[in_.U8() % controls_.size()];
  }
  Sock* PickSock() {
    if (socks_.empty()) return nullptr;
    return &socks_[in_.U8() % socks_.size()];
  }
  int EnsureHello();  // a control connection that said hello, or -1
  void OpenControl();
  void Hello(Control& c);
  void SendRaw(bool shaped);
  void CreateSocket();
  void ConnectSocket();
  void PokePage();
  void WriteOut();
  void ChannelBytes();
  void ReadChannel();
  void StartFlip();
  void PeerAction();
  void SocketRequest();
  void Sync();
  void CloseSocket(size_t i);
  void CloseControl(size_t i);
  void AcceptPeers();
  void DrainReplies(int fd);
  void CloseAll();
  proto::SockAddr Destination();

  Input& in_;
  std::vector<Control> controls_;
  std::vector<Sock> socks_;
  std::vector<int> peers_;  // harness ends of host connections
  std::vector<int> extra_fds_;  // listener channels and other descriptors xsockd handed out
  Flipper flipper_;
  uint32_t seq_ = 1;
};

void Script::OpenControl() {
  if (controls_.size() >= kMaxControls) return;
  controls_.push_back({ConnectControl(), false});
}

void Script::Hello(Control& c) {
  if (c.fd < 0) return;
  proto::HelloRequest h;
  h.caps = in_.U8() & proto::kAllCaps;
  auto a = Call(c.fd, seq_++, h, kReplyTimeoutMs);
  if (a) {
    for (int f : a->fds) close(f);
    c.hello = std::get<proto::HelloReply>(a->reply).err == 0;
  }
}

int Script::EnsureHello() {
  Control* c = PickControl();
  if (c == nullptr || c->fd < 0) {
    OpenControl();
    c = &controls_.back();
  }
  if (!c->hello) Hello(*c);
  return c->hello ? static_cast<int>(c - controls_.data()) : -1;
}

proto::SockAddr Script::Destination() {
  proto::SockAddr a;
  a.family = AF_INET;
  const in_addr_t lo = htonl(INADDR_LOOPBACK);
  std::memcpy(a.addr.data(), &lo, 4);
  a.port = in_.Bool() ? TheHarness().listen_port : TheHarness().closed_port;
  return a;
}

// A raw message, with 0..4 descriptors. `shaped`: a valid header (magic, version, a
// request type, the true length) over arbitrary body bytes, so that the body decoders and
// the handlers behind them are reached; connect and bind addresses are made loopback.
void Script::SendRaw(bool shaped) {
  Control* c = PickControl();
  if (c == nullptr || c->fd < 0) return;
  const size_t len = shaped ? 16 + in_.U8() : in_.U16() % 5000;
  std::vector<uint8_t> msg = in_.Bytes(len);
  if (shaped) {
    msg.resize(len);
    const uint32_t magic = proto::kMagic;
    std::memcpy(&msg[0], &magic, 4);
    const uint16_t version = proto::kVersion;
    std::memcpy(&msg[4], &version, 2);
    const uint16_t type = static_cast<uint16_t>(1 + msg[6] % 16);
    std::memcpy(&msg[6], &type, 2);
    const uint32_t length = static_cast<uint32_t>(len);
    std::memcpy(&msg[8], &length, 4);
    if ((type == 3 || type == 12) && len >= 52) {  // connect, bind: the SockAddr at 24
      const proto::SockAddr a = Destination();
      const uint16_t family = AF_INET;
      std::memcpy(&msg[24], &family, 2);
      const uint16_t port = type == 12 ? 0 : a.port;
      std::memcpy(&msg[26], &port, 2);
      std::memcpy(&msg[32], a.addr.data(), 4);
    }
    if (type >= 3 && type <= 13 && type != 10 && type != 11 && len >= 24 && !socks_.empty() &&
        in_.Bool()) {
      // A socket id that exists (maybe another connection's).
      const uint64_t id = socks_[msg[16] % socks_.size()].id;
      std::memcpy(&msg[16], &id, 8);
    }
  }
  std::vector<int> fds;
  std::vector<int> temp;
  const int nfds = in_.U8() % 6;  // 5: more than a message may carry
  for (int i = 0; i < nfds; ++i) {
    const uint8_t kind = in_.U8() % 5;
    Sock* s = PickSock();
    if (kind == 0 && s != nullptr && s->channel >= 0) {
      fds.push_back(s->channel);
    } else if (kind == 1 && s != nullptr && s->memfd >= 0) {
      fds.push_back(s->memfd);
    } else if (kind == 2) {
      int sv[2];
      if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
        temp.push_back(sv[0]);
        temp.push_back(sv[1]);
        fds.push_back(sv[0]);
      }
    } else if (kind == 3) {
      const int e = eventfd(0, EFD_CLOEXEC);
      if (e >= 0) {
        temp.push_back(e);
        fds.push_back(e);
      }
    } else {
      const int n = open("/dev/null", O_RDONLY | O_CLOEXEC);
      if (n >= 0) {
        temp.push_back(n);
        fds.push_back(n);
      }
    }
  }
  if (msg.empty()) msg.push_back(0);  // a zero-length packet is a close: keep it a message
  (void)SendPacket(LibcSyscalls(), c->fd, msg, fds, MSG_DONTWAIT);
  for (int f : temp) close(f);
  if (in_.Bool()) DrainReplies(c->fd);
}

void Script::DrainReplies(int fd) {
  for (int i = 0; i < 64; ++i) {
    std::vector<uint8_t> buf;
    std::vector<int> fds;
    const ssize_t n =
        RecvPacket(LibcSyscalls(), fd, buf, proto::kMaxMessageSize, fds, MSG_DONTWAIT);
    if (n <= 0) return;
    auto decoded = proto::DecodeReply(buf);
    if (!decoded.ok()) Fail("undecodable reply: " + decoded.status().ToString());
    for (int f : fds) {
      // Keep what xsockd handed out (e.g. a listener channel) until the input ends, so
      // that its lifetime is the script's, then close.
      if (extra_fds_.size() < 16) {
        extra_fds_.push_back(f);
      } else {
        close(f);
      }
    }
  }
}

void Script::CreateSocket() {
  if (socks_.size() >= kMaxSockets) return;
  const int ci = EnsureHello();
  if (ci < 0) return;
  proto::SocketRequest req;
  req.domain = in_.Bool() ? AF_INET6 : AF_INET;
  req.type = SOCK_STREAM;
  const uint8_t o = in_.U8() % 4;
  req.ring_order = o == 0 ? 0 : kMinRingOrder + (o - 1);
  auto a = Call(controls_[ci].fd, seq_++, req, kReplyTimeoutMs);
  if (!a) return;
  const auto& r = std::get<proto::SocketReply>(a->reply);
  if (r.err != 0 || a->fds.size() != 2) {
    for (int f : a->fds) close(f);
    return;
  }
  Sock s;
  s.channel = a->fds[0];
  s.memfd = a->fds[1];
  s.order = r.ring_order;
  s.id = r.socket_id;
  s.control = ci;
  s.size = SocketMemfdSize(s.order);
  s.base = mmap(nullptr, s.size, PROT_READ | PROT_WRITE, MAP_SHARED, s.memfd, 0);
  if (s.base == MAP_FAILED) Fail("mmap of a socket's memfd");
  const int one = 1;
  (void)setsockopt(s.channel, SOL_SOCKET, SO_SNDBUF, &one, sizeof(one));
  socks_.push_back(s);
}

void Script::ConnectSocket() {
  Sock* s = PickSock();
  if (s == nullptr || s->channel < 0) return;
  const Control& c = controls_[s->control];
  if (c.fd < 0) return;
  if (in_.Bool()) {  // stuff first, as the library does
    static const char chunk[kStuffChunk] = {};
    for (int i = 0; i < 64 && send(s->channel, chunk, sizeof(chunk), MSG_DONTWAIT) > 0; ++i) {
    }
  }
  proto::ConnectRequest req;
  req.socket_id = s->id;
  req.addr = Destination();
  auto a = Call(c.fd, seq_++, req, kReplyTimeoutMs);
  if (a) {
    for (int f : a->fds) close(f);
  }
  AcceptPeers();
}

void Script::AcceptPeers() {
  for (int i = 0; i < 8 && peers_.size() < kMaxPeers; ++i) {
    const int p = accept4(TheHarness().listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (p < 0) return;
    peers_.push_back(p);
  }
}

// Any 32-bit word of the page (the immutable header included), or one of the words the
// app may legitimately write, with an arbitrary value.
void Script::PokePage() {
  Sock* s = PickSock();
  if (s == nullptr) return;
  auto* p = static_cast<SocketPage*>(s->base);
  const uint8_t which = in_.U8();
  const uint32_t v = in_.U32();
  std::atomic<uint32_t>* word = nullptr;
  switch (which % 12) {
    case 0: word = &p->in_cons.value; break;
    case 1: word = &p->out_prod.value; break;
    case 2: word = &p->in_prod.value; break;
    case 3: word = &p->out_cons.value; break;
    case 4: word = reinterpret_cast<std::atomic<uint32_t>*>(&p->in_error.value); break;
    case 5: word = reinterpret_cast<std::atomic<uint32_t>*>(&p->out_error.value); break;
    case 6: word = &p->state; break;
    case 7: word = &p->in_token; break;
    case 8: word = &p->out_data_wanted; break;
    case 9: word = &p->in_room_wanted; break;
    case 10: word = &p->app_accepted; break;
    default: {
      const size_t off = (in_.U16() % (kPageSize / 4)) * 4;
      word = reinterpret_cast<std::atomic<uint32_t>*>(static_cast<uint8_t*>(s->base) + off);
    }
  }
  // Plain values, or ones relative to the current index (just past the ring size, behind).
  const uint32_t cur = word->load(std::memory_order_relaxed);
  const uint32_t ring = static_cast<uint32_t>(RingBytes(s->order));
  switch (in_.U8() % 4) {
    case 0: word->store(v, std::memory_order_release); break;
    case 1: word->store(cur + ring + (v & 0xff), std::memory_order_release); break;
    case 2: word->store(cur - 1 - (v & 0xff), std::memory_order_release); break;
    default: word->store(cur + (v % (ring + 1)), std::memory_order_release); break;
  }
  if (in_.Bool() && s->channel >= 0) {
    const char w = kWakeByte;
    (void)send(s->channel, &w, 1, MSG_DONTWAIT);
  }
}

// Bytes into `out` at the current producer index, then publish them (a well-formed write
// of arbitrary data), or publish without writing, and wake xsockd.
void Script::WriteOut() {
  Sock* s = PickSock();
  if (s == nullptr) return;
  auto* p = static_cast<SocketPage*>(s->base);
  const uint32_t ring = static_cast<uint32_t>(RingBytes(s->order));
  std::vector<uint8_t> bytes = in_.Bytes(in_.U8());
  const size_t repeat = 1 + in_.U8() % 16;  // inputs are short; rings are not
  auto* data = static_cast<uint8_t*>(s->base) + kPageSize + ring;
  uint32_t prod = p->out_prod.value.load(std::memory_order_relaxed);
  const uint32_t cons = p->out_cons.value.load(std::memory_order_acquire);
  for (size_t r = 0; r < repeat && !bytes.empty(); ++r) {
    for (uint8_t b : bytes) {
      if (prod - cons >= ring) break;
      data[prod & (ring - 1)] = b;
      ++prod;
    }
  }
  p->out_prod.value.store(prod, std::memory_order_release);
  if (p->out_data_wanted.exchange(0) == 1 || in_.Bool()) {
    const char w = kWakeByte;
    if (s->channel >= 0) (void)send(s->channel, &w, 1, MSG_DONTWAIT);
  }
}

void Script::ChannelBytes() {
  Sock* s = PickSock();
  if (s == nullptr || s->channel < 0) return;
  const size_t n = 1 + in_.U16() % 20000;
  static const std::vector<char> junk(20000, 'w');
  (void)send(s->channel, junk.data(), n, MSG_DONTWAIT);
}

void Script::ReadChannel() {
  Sock* s = PickSock();
  if (s == nullptr || s->channel < 0) return;
  char buf[512];
  const size_t n = 1 + in_.U8() % sizeof(buf);
  (void)recv(s->channel, buf, n, MSG_DONTWAIT);
  auto* p = static_cast<SocketPage*>(s->base);
  if (in_.Bool()) {  // consume `in` as the app would
    const uint32_t prod = p->in_prod.value.load(std::memory_order_acquire);
    p->in_cons.value.store(prod, std::memory_order_release);
    p->in_token.store(0, std::memory_order_release);
    if (p->in_room_wanted.exchange(0) == 1) {
      const char w = kWakeByte;
      (void)send(s->channel, &w, 1, MSG_DONTWAIT);
    }
  }
}

void Script::StartFlip() {
  Sock* s = PickSock();
  if (s == nullptr) return;
  auto* p = static_cast<SocketPage*>(s->base);
  std::atomic<uint32_t>* words[] = {&p->out_prod.value, &p->in_cons.value, &p->in_token,
                                    &p->out_data_wanted, &p->in_room_wanted, &p->app_accepted};
  std::atomic<uint32_t>* w = words[in_.U8() % 6];
  const uint32_t cur = w->load(std::memory_order_relaxed);
  const uint32_t a = in_.Bool() ? in_.U32() : cur;
  const uint32_t b = cur + (in_.U32() % (2 * RingBytes(s->order) + 2));
  flipper_.Start(w, a, b);
  if (s->channel >= 0) {
    const char wake = kWakeByte;
    (void)send(s->channel, &wake, 1, MSG_DONTWAIT);
  }
}

void Script::PeerAction() {
  AcceptPeers();
  if (peers_.empty()) return;
  const size_t i = in_.U8() % peers_.size();
  int& fd = peers_[i];
  if (fd < 0) return;
  switch (in_.U8() % 5) {
    case 0: {  // data towards the app (fills `in`)
      static const std::vector<uint8_t> junk(65536, 0x5a);
      (void)send(fd, junk.data(), 1 + in_.U16(), MSG_DONTWAIT | MSG_NOSIGNAL);
      break;
    }
    case 1: {  // read what the app sent
      char buf[65536];
      (void)recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
      break;
    }
    case 2: shutdown(fd, SHUT_WR); break;  // FIN
    case 3: {                              // RST
      const struct linger l = {1, 0};
      setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
      CloseFd(fd);
      break;
    }
    default: CloseFd(fd); break;
  }
}

// A well-formed request with fuzzed arguments on a socket.
void Script::SocketRequest() {
  Sock* s = PickSock();
  if (s == nullptr) return;
  Control* c = in_.Bool() ? PickControl() : &controls_[s->control];
  if (c == nullptr || c->fd < 0) return;
  std::vector<int> send_fds;
  proto::Request req;
  const uint64_t id = in_.Bool() ? s->id : in_.U8();
  switch (in_.U8() % 8) {
    case 0: req = proto::ShutdownRequest{id, static_cast<uint32_t>(in_.U8() % 3)}; break;
    case 1: req = proto::ReleaseRequest{id}; break;
    case 2: {
      proto::BindRequest b;
      b.socket_id = id;
      b.addr = Destination();
      b.addr.port = 0;
      req = b;
      break;
    }
    case 3: req = proto::ListenRequest{id, static_cast<int32_t>(in_.U32())}; break;
    case 4: {
      proto::SetSockOptRequest o;
      o.socket_id = id;
      const int32_t levels[] = {SOL_SOCKET, IPPROTO_TCP, IPPROTO_IP, IPPROTO_IPV6};
      o.level = levels[in_.U8() % 4];
      o.optname = in_.U8() % 80;
      o.value = in_.Bytes(in_.U8() % 17);
      req = o;
      break;
    }
    case 5: {
      proto::GetSockOptRequest o;
      o.socket_id = id;
      const int32_t levels[] = {SOL_SOCKET, IPPROTO_TCP, IPPROTO_IP, IPPROTO_IPV6};
      o.level = levels[in_.U8() % 4];
      o.optname = in_.U8() % 80;
      o.optlen = in_.U16() % (proto::kMaxOptLen + 1);
      req = o;
      break;
    }
    case 6:
      if (s->channel < 0) return;
      req = proto::AttachRequest{};
      send_fds.push_back(s->channel);
      break;
    default:
      req = in_.Bool() ? proto::Request(proto::GetSockNameRequest{id})
                       : proto::Request(proto::GetPeerNameRequest{id});
  }
  auto a = Call(c->fd, seq_++, req, kReplyTimeoutMs, send_fds);
  if (a) {
    for (int f : a->fds) {
      if (extra_fds_.size() < 16) {
        extra_fds_.push_back(f);
      } else {
        close(f);
      }
    }
  }
}

// Lets the loop run: a round trip on a connection (xsockd handled everything sent on it
// before), then maybe a short sleep for the timers (held sockets, lingering).
void Script::Sync() {
  Control* c = PickControl();
  if (c != nullptr && c->fd >= 0 && c->hello) {
    auto a = Call(c->fd, seq_++, proto::StatsRequest{}, kReplyTimeoutMs);
    if (a) {
      for (int f : a->fds) close(f);
    }
  }
  const uint8_t us = in_.U8();
  if (us & 1) usleep(us * 4);
}

// The app's channel end only: the mapping and the memfd stay until the input ends (a
// flipper may still write the page, and a held memfd must not keep the socket alive).
void Script::CloseSocket(size_t i) { CloseFd(socks_[i].channel); }

void Script::CloseControl(size_t i) {
  CloseFd(controls_[i].fd);
  controls_[i].hello = false;
}

void Script::Run() {
  for (int op = 0; op < kMaxOps && !in_.empty(); ++op) {
    switch (in_.U8() % 16) {
      case 0: OpenControl(); break;
      case 1:
        if (Control* c = PickControl()) Hello(*c);
        break;
      case 2: SendRaw(false); break;
      case 3: SendRaw(true); break;
      case 4: CreateSocket(); break;
      case 5: ConnectSocket(); break;
      case 6: PokePage(); break;
      case 7: WriteOut(); break;
      case 8: ChannelBytes(); break;
      case 9: ReadChannel(); break;
      case 10: StartFlip(); break;
      case 11: PeerAction(); break;
      case 12: SocketRequest(); break;
      case 13: Sync(); break;
      case 14:
        if (!socks_.empty()) CloseSocket(in_.U8() % socks_.size());
        break;
      default:
        if (!controls_.empty()) CloseControl(in_.U8() % controls_.size());
        break;
    }
  }
}

void Script::CloseAll() {
  flipper_.Stop();
  AcceptPeers();
  for (Sock& s : socks_) {
    CloseFd(s.channel);
    CloseFd(s.memfd);
    if (s.base != nullptr) munmap(s.base, s.size);
  }
  socks_.clear();
  for (Control& c : controls_) CloseFd(c.fd);
  controls_.clear();
  for (int& f : extra_fds_) CloseFd(f);
  extra_fds_.clear();
  // Connections xsockd made that the script never took from the listener: reset too.
  for (int i = 0; i < 64; ++i) {
    const int p = accept4(TheHarness().listener, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (p < 0) break;
    peers_.push_back(p);
  }
  for (int& p : peers_) {
    if (p < 0) continue;
    const struct linger l = {1, 0};
    setsockopt(p, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    CloseFd(p);
  }
  peers_.clear();
}

// ---- The property ----

void CheckServerHealthy() {
  const int fd = ConnectControl();
  uint32_t seq = 1;
  proto::HelloRequest h;
  h.caps = proto::kAllCaps;
  auto hello = Call(fd, seq++, h, kCheckTimeoutMs);
  if (!hello || std::get<proto::HelloReply>(hello->reply).err != 0) {
    Fail("a fresh client's hello got no good reply");
  }
  proto::SocketRequest sr;
  sr.domain = AF_INET;
  sr.type = SOCK_STREAM;
  auto sock = Call(fd, seq++, sr, kCheckTimeoutMs);
  if (!sock) Fail("a fresh client's socket request got no reply");
  const auto& r = std::get<proto::SocketReply>(sock->reply);
  if (r.err != 0 || sock->fds.size() != 2) {
    Fail("a fresh client's socket request failed: err " + std::to_string(r.err));
  }
  void* base = mmap(nullptr, SocketMemfdSize(r.ring_order), PROT_READ, MAP_SHARED, sock->fds[1], 0);
  if (base == MAP_FAILED) Fail("mmap of a fresh socket");
  const auto* page = static_cast<const SocketPage*>(base);
  if (page->magic != kSocketPageMagic || page->socket_id != r.socket_id) {
    Fail("a fresh socket's page has the wrong magic or id");
  }
  munmap(base, SocketMemfdSize(r.ring_order));
  auto rel = Call(fd, seq++, proto::ReleaseRequest{r.socket_id}, kCheckTimeoutMs);
  if (!rel || std::get<proto::ReleaseReply>(rel->reply).err != 0) {
    Fail("a fresh client's release failed");
  }
  for (int f : sock->fds) close(f);
  // Everything any client held is gone once their descriptors are: nothing but this
  // client remains (bounded wait: freeing follows hang-up events).
  const auto deadline = Clock::now() + std::chrono::milliseconds(kCheckTimeoutMs);
  proto::StatsReply st;
  for (;;) {
    auto a = Call(fd, seq++, proto::StatsRequest{}, kCheckTimeoutMs);
    if (!a) Fail("a fresh client's stats request got no reply");
    st = std::get<proto::StatsReply>(a->reply);
    if (st.sockets_now == 0 && st.clients_now == 1) break;
    if (Clock::now() > deadline) {
      Fail("xsockd still holds sockets_now=" + std::to_string(st.sockets_now) +
           " clients_now=" + std::to_string(st.clients_now) + " after the clients left");
    }
    usleep(200);
  }
  close(fd);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  (void)TheHarness();
  {
    Input in(data, size);
    Script script(in);
    script.Run();
  }  // everything the script opened is closed here
  CheckServerHealthy();
  return 0;
}
