// The conformance harness (see harness.h) and the program's entry point:
//   xsock-conform list
//   xsock-conform app|peer SCENARIO --sync DIR
#include "tests/conformance/harness.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <linux/sockios.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "tests/programs/common.h"

namespace xsock::conform {
namespace {

std::string g_sync_dir;
uint16_t g_port = 0;

}  // namespace

int64_t NowMs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return int64_t{ts.tv_sec} * 1000 + ts.tv_nsec / 1000000;
}

void SleepMs(int ms) {
  timespec ts{ms / 1000, (ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

// ---- output ----

void Say(std::string_view line) {
  std::string s(line);
  s += '\n';
  size_t off = 0;
  for (int tries = 0; off < s.size() && tries < 1000; ++tries) {
    const ssize_t n = write(STDOUT_FILENO, s.data() + off, s.size() - off);
    if (n > 0) off += static_cast<size_t>(n);
    if (n < 0 && errno != EINTR) return;
  }
}

std::string ErrnoName(int err) { return testprog::ErrnoName(err); }

std::string Ret(long r) {
  if (r >= 0) return std::to_string(r);
  return fmt::format("{} {}", r, ErrnoName(errno));
}

namespace {
template <typename T>
std::string Bits(T value, std::initializer_list<std::pair<T, const char*>> names) {
  std::string s;
  for (const auto& [bit, name] : names) {
    if (value & bit) {
      if (!s.empty()) s += '|';
      s += name;
      value &= ~bit;
    }
  }
  if (value != 0) s += fmt::format("{}0x{:x}", s.empty() ? "" : "|", value);
  return s.empty() ? "none" : s;
}
}  // namespace

std::string PollBits(int revents) {
  if (revents < 0) return fmt::format("poll failed: {}", ErrnoName(errno));
  return Bits<int>(revents, {{POLLIN, "IN"},
                             {POLLPRI, "PRI"},
                             {POLLOUT, "OUT"},
                             {POLLRDHUP, "RDHUP"},
                             {POLLERR, "ERR"},
                             {POLLHUP, "HUP"},
                             {POLLNVAL, "NVAL"},
                             {POLLRDNORM, "RDNORM"},
                             {POLLWRNORM, "WRNORM"}});
}

std::string EpollBits(uint32_t events) {
  return Bits<uint32_t>(events, {{EPOLLIN, "IN"},
                                 {EPOLLPRI, "PRI"},
                                 {EPOLLOUT, "OUT"},
                                 {EPOLLRDHUP, "RDHUP"},
                                 {EPOLLERR, "ERR"},
                                 {EPOLLHUP, "HUP"}});
}

std::string Show(const void* data, size_t n) {
  const auto* p = static_cast<const unsigned char*>(data);
  std::string s = "\"";
  for (size_t i = 0; i < n && i < 80; ++i) {
    const unsigned char c = p[i];
    if (c == '\n') {
      s += "\\n";
    } else if (c == '"' || c == '\\') {
      s += '\\';
      s += static_cast<char>(c);
    } else if (c >= 0x20 && c < 0x7f) {
      s += static_cast<char>(c);
    } else {
      s += fmt::format("\\x{:02x}", c);
    }
  }
  s += n > 80 ? "\"..." : "\"";
  return s;
}

std::string Hex64(uint64_t v) { return fmt::format("{:016x}", v); }

// ---- synchronisation ----

std::string SyncPath(std::string_view name) { return fmt::format("{}/{}", g_sync_dir, name); }

void Post(std::string_view name, std::string_view content) {
  const std::string tmp = SyncPath(fmt::format(".{}.{}", name, getpid()));
  const int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) {
    Sayf("SYNC ERROR creating {}: {}", name, ErrnoName(errno));
    _exit(3);
  }
  if (!content.empty() && write(fd, content.data(), content.size()) != ssize_t(content.size())) {
    Sayf("SYNC ERROR writing {}", name);
    _exit(3);
  }
  close(fd);
  if (rename(tmp.c_str(), SyncPath(name).c_str()) != 0) {
    Sayf("SYNC ERROR renaming {}: {}", name, ErrnoName(errno));
    _exit(3);
  }
}

std::string Await(std::string_view name) {
  const std::string path = SyncPath(name);
  const int64_t deadline = NowMs() + kSyncMs;
  while (true) {
    const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      char buf[256];
      const ssize_t n = read(fd, buf, sizeof buf);
      close(fd);
      return std::string(buf, n > 0 ? static_cast<size_t>(n) : 0);
    }
    if (NowMs() > deadline) break;
    SleepMs(2);
  }
  Sayf("SYNC TIMEOUT waiting for {}", name);
  _exit(3);
}

// ---- addresses ----

uint16_t Port(int offset) { return static_cast<uint16_t>(g_port + offset); }

sockaddr_storage Loopback(int family, int offset, socklen_t* len) {
  sockaddr_storage ss{};
  if (family == AF_INET6) {
    auto* a = reinterpret_cast<sockaddr_in6*>(&ss);
    a->sin6_family = AF_INET6;
    a->sin6_addr = in6addr_loopback;
    a->sin6_port = htons(Port(offset));
    *len = sizeof(sockaddr_in6);
  } else {
    auto* a = reinterpret_cast<sockaddr_in*>(&ss);
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a->sin_port = htons(Port(offset));
    *len = sizeof(sockaddr_in);
  }
  return ss;
}

uint16_t PortOf(const sockaddr_storage& addr) {
  if (addr.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in&>(addr).sin_port);
  if (addr.ss_family == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6&>(addr).sin6_port);
  }
  return 0;
}

std::string DescribeAddr(const sockaddr_storage& addr, socklen_t len) {
  char text[INET6_ADDRSTRLEN] = "?";
  std::string family;
  if (addr.ss_family == AF_INET) {
    family = "AF_INET";
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in&>(addr).sin_addr, text, sizeof text);
  } else if (addr.ss_family == AF_INET6) {
    family = "AF_INET6";
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6&>(addr).sin6_addr, text,
              sizeof text);
  } else {
    return fmt::format("family={} len={}", addr.ss_family, len);
  }
  // Ports chosen by the kernel differ from run to run: only their kind is comparable.
  const uint16_t port = PortOf(addr);
  std::string kind;
  if (port == 0) {
    kind = "0";
  } else if (port >= g_port && port < g_port + 10) {
    kind = port == g_port ? "fixed" : fmt::format("fixed+{}", port - g_port);
  } else {
    kind = "ephemeral";
  }
  return fmt::format("{} {} port={} len={}", family, text, kind, len);
}

std::string DescribeSockName(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return Ret(-1);
  return DescribeAddr(ss, len);
}

std::string DescribePeerName(int fd) {
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  if (getpeername(fd, reinterpret_cast<sockaddr*>(&ss), &len) != 0) return Ret(-1);
  return DescribeAddr(ss, len);
}

// ---- actions ----

namespace {
void SetTimeouts(int fd) {
  const timeval tv{kSyncMs / 1000, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}
}  // namespace

int Listen(int family, int offset) {
  const int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  socklen_t len = 0;
  const sockaddr_storage ss = Loopback(family, offset, &len);
  if (fd < 0 || bind(fd, reinterpret_cast<const sockaddr*>(&ss), len) != 0 || listen(fd, 16) != 0) {
    Sayf("LISTEN on port {} failed: {}", Port(offset), ErrnoName(errno));
    _exit(3);
  }
  Post(fmt::format("listen{}", offset));
  return fd;
}

int AcceptOne(int listen_fd) {
  if (PollOnce(listen_fd, POLLIN, kSyncMs) <= 0) {
    Say("ACCEPT TIMEOUT");
    _exit(3);
  }
  const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
  if (fd < 0) {
    Sayf("ACCEPT failed: {}", ErrnoName(errno));
    _exit(3);
  }
  SetTimeouts(fd);
  return fd;
}

int ConnectTo(int family, int offset) {
  Await(fmt::format("listen{}", offset));
  const int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  socklen_t len = 0;
  const sockaddr_storage ss = Loopback(family, offset, &len);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&ss), len) != 0) {
    Sayf("CONNECT to port {} failed: {}", Port(offset), ErrnoName(errno));
    _exit(3);
  }
  return fd;
}

int ConnectPeer(int family, int offset) {
  const int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  SetTimeouts(fd);
  socklen_t len = 0;
  const sockaddr_storage ss = Loopback(family, offset, &len);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&ss), len) != 0) {
    Sayf("peer connect to port {} failed: {}", Port(offset), ErrnoName(errno));
    _exit(3);
  }
  return fd;
}

size_t SendAll(int fd, const void* data, size_t n) {
  const auto* p = static_cast<const char*>(data);
  size_t off = 0;
  for (int i = 0; off < n && i < 100000; ++i) {
    const ssize_t r = send(fd, p + off, n - off, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      Sayf("send failed after {} bytes: {}", off, ErrnoName(errno));
      break;
    }
    off += static_cast<size_t>(r);
  }
  return off;
}

size_t SendAll(int fd, std::string_view s) { return SendAll(fd, s.data(), s.size()); }

std::string RecvExactly(int fd, size_t n) {
  std::string out(n, '\0');
  size_t off = 0;
  for (int i = 0; off < n && i < 100000; ++i) {
    const ssize_t r = recv(fd, out.data() + off, n - off, 0);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) {
      if (r < 0) Sayf("recv failed after {} bytes: {}", off, ErrnoName(errno));
      break;
    }
    off += static_cast<size_t>(r);
  }
  out.resize(off);
  return out;
}

Drained ReadToEnd(int fd) {
  Drained d;
  testprog::StreamHash hash;
  std::vector<unsigned char> buf(256 * 1024);
  for (int i = 0; i < 1000000; ++i) {
    const ssize_t r = recv(fd, buf.data(), buf.size(), 0);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) {
      d.end = "EOF";
      break;
    }
    if (r < 0) {
      d.end = ErrnoName(errno);
      break;
    }
    if (d.head.size() < 64) {
      d.head.append(reinterpret_cast<const char*>(buf.data()),
                    std::min<size_t>(static_cast<size_t>(r), 64 - d.head.size()));
    }
    hash.Update(buf.data(), static_cast<size_t>(r));
  }
  d.bytes = hash.bytes();
  d.hash = hash.Digest();
  return d;
}

std::string DescribeDrained(const Drained& d) {
  return fmt::format("{} bytes {} hash {} then {}", d.bytes, Show(d.head.data(), d.head.size()),
                     Hex64(d.hash), d.end);
}

std::vector<unsigned char> StreamBytes(uint64_t seed, size_t n) {
  std::vector<unsigned char> v(n);
  testprog::ByteStream(seed).Fill(v.data(), n);
  return v;
}

uint64_t HashOf(const void* data, size_t n) {
  testprog::StreamHash h;
  h.Update(static_cast<const unsigned char*>(data), n);
  return h.Digest();
}

PatternSender::PatternSender() : pattern_(StreamBytes(99, 64 * 1024)) {}

ssize_t PatternSender::SendSome(int fd, size_t n, int flags) {
  const size_t off = total_ % pattern_.size();
  n = std::min(n, pattern_.size() - off);
  const ssize_t r = send(fd, pattern_.data() + off, n, flags);
  if (r > 0) {
    hash_.Update(pattern_.data() + off, static_cast<size_t>(r));
    total_ += static_cast<uint64_t>(r);
  }
  return r;
}

void PatternSender::FillUntilFull(int fd) {
  int full_rounds = 0;
  for (int round = 0; round < 100 && full_rounds < 2; ++round) {
    uint64_t sent_this_round = 0;
    for (int i = 0; i < 100000; ++i) {
      const ssize_t r = SendSome(fd, 64 * 1024, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (r <= 0) break;
      sent_this_round += static_cast<uint64_t>(r);
    }
    // Full twice in a row, 100 ms apart: acknowledgements that were in flight are in.
    full_rounds = sent_this_round == 0 ? full_rounds + 1 : 0;
    if (full_rounds < 2) SleepMs(100);
  }
}

uint64_t PatternSender::hash() const { return hash_.Digest(); }

std::string PatternSender::Summary() const { return fmt::format("{} {}", total_, hash()); }

std::string PatternSender::Verdict(const Drained& d, const std::string& summary) {
  const bool same = fmt::format("{} {}", d.bytes, d.hash) == summary;
  return fmt::format("received exactly what the app's sends reported: {}; then {}",
                     same ? "yes" : "no", d.end);
}

int PollOnce(int fd, short events, int timeout_ms) {
  pollfd p{fd, events, 0};
  const int64_t deadline = NowMs() + timeout_ms;
  while (true) {
    const int n = poll(&p, 1, timeout_ms);
    if (n >= 0) return n == 0 ? 0 : p.revents;
    if (errno != EINTR) return -1;
    timeout_ms = static_cast<int>(std::max<int64_t>(0, deadline - NowMs()));
  }
}

int PollUntil(int fd, short events, short want, int timeout_ms) {
  const int64_t deadline = NowMs() + timeout_ms;
  int revents = 0;
  while (true) {
    const int left = static_cast<int>(std::max<int64_t>(0, deadline - NowMs()));
    revents = PollOnce(fd, events, left);
    if (revents < 0 || (revents & want) == want || left == 0) return revents;
    // Readiness other than the wanted one returns at once: do not spin on it.
    if (revents != 0) SleepMs(1);
  }
}

int WaitInq(int fd, int n) {
  const int64_t deadline = NowMs() + kWaitMs;
  int v = -1;
  while (true) {
    if (ioctl(fd, FIONREAD, &v) != 0) return -1;
    if (v >= n || NowMs() > deadline) return v;
    SleepMs(1);
  }
}

int WaitOutqEmpty(int fd) {
  const int64_t deadline = NowMs() + kWaitMs;
  int v = -1;
  while (true) {
    if (ioctl(fd, SIOCOUTQ, &v) != 0) return -1;
    if (v == 0 || NowMs() > deadline) return v;
    SleepMs(1);
  }
}

namespace {
std::string DescribeEvents(const epoll_event* ev, int n) {
  if (n < 0) return Ret(n);
  if (n == 0) return "none";
  if (n == 1) return EpollBits(ev[0].events);
  std::string s = fmt::format("n={}", n);
  for (int i = 0; i < n; ++i) s += " " + EpollBits(ev[i].events);
  return s;
}
}  // namespace

std::string EpollOnce(int epfd, int timeout_ms) {
  epoll_event ev[8];
  int n;
  do {
    n = epoll_wait(epfd, ev, 8, timeout_ms);
  } while (n < 0 && errno == EINTR);
  return DescribeEvents(ev, n);
}

std::string EpollUntil(int epfd, uint32_t want, int timeout_ms) {
  const int64_t deadline = NowMs() + timeout_ms;
  std::string last = "none";
  while (true) {
    const int left = static_cast<int>(std::max<int64_t>(0, deadline - NowMs()));
    epoll_event ev[8];
    const int n = epoll_wait(epfd, ev, 8, left);
    if (n < 0 && errno == EINTR) continue;
    if (n != 0) last = DescribeEvents(ev, n);
    if (n < 0) return last;
    for (int i = 0; i < n; ++i) {
      if ((ev[i].events & want) == want) return last;
    }
    if (left == 0) return n == 0 ? fmt::format("none (wanted {})", EpollBits(want)) : last;
    if (n > 0) SleepMs(1);
  }
}

std::string EpollUntilSettled(int epfd, uint32_t want, int timeout_ms) {
  std::string first = EpollUntil(epfd, want, timeout_ms);
  SleepMs(50);
  EpollOnce(epfd, 0);
  return first;
}

int GetInt(int fd, int level, int name) {
  int v = -1;
  socklen_t len = sizeof v;
  if (getsockopt(fd, level, name, &v, &len) != 0) return -1;
  return v;
}

std::string GetIntStr(int fd, int level, int name) {
  int v = -1;
  socklen_t len = sizeof v;
  if (getsockopt(fd, level, name, &v, &len) != 0) return Ret(-1);
  return len == sizeof v ? std::to_string(v) : fmt::format("{} (len {})", v, len);
}

std::string SetInt(int fd, int level, int name, int value) {
  return Ret(setsockopt(fd, level, name, &value, sizeof value));
}

std::string SoError(int fd) {
  int v = -1;
  socklen_t len = sizeof v;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &v, &len) != 0) return Ret(-1);
  return v == 0 ? "0" : ErrnoName(v);
}

std::string FdFlags(int fd) {
  const int saved = errno;  // it may be an argument next to a Ret() of the same Sayf
  const int fl = fcntl(fd, F_GETFL);
  const int fd_fl = fcntl(fd, F_GETFD);
  if (fl < 0 || fd_fl < 0) {
    const std::string r = Ret(-1);
    errno = saved;
    return r;
  }
  errno = saved;
  return fmt::format("nonblock={} cloexec={}", (fl & O_NONBLOCK) ? 1 : 0,
                     (fd_fl & FD_CLOEXEC) ? 1 : 0);
}

std::vector<Scenario>& Registry() {
  static std::vector<Scenario> all;
  return all;
}

void Configure(std::string sync_dir, uint16_t base_port) {
  g_sync_dir = std::move(sync_dir);
  g_port = base_port;
}

}  // namespace xsock::conform

namespace {

int Usage() {
  std::fprintf(stderr,
               "usage: xsock-conform list\n"
               "       xsock-conform app|peer SCENARIO --sync DIR\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace xsock::conform;
  std::vector<Scenario> all = Registry();
  std::sort(all.begin(), all.end(),
            [](const Scenario& a, const Scenario& b) { return a.port < b.port; });
  if (argc == 2 && std::string_view(argv[1]) == "list") {
    for (const Scenario& s : all) std::printf("%s %u %s\n", s.name, s.port, s.what);
    return 0;
  }
  if (argc != 5 || std::string_view(argv[3]) != "--sync") return Usage();
  const std::string_view role = argv[1];
  if (role != "app" && role != "peer") return Usage();
  const auto it = std::find_if(all.begin(), all.end(),
                               [&](const Scenario& s) { return s.name == std::string_view(argv[2]); });
  if (it == all.end()) {
    std::fprintf(stderr, "xsock-conform: no scenario '%s'\n", argv[2]);
    return 2;
  }
  Configure(argv[4], it->port);
  // A vanished peer must show up as EPIPE in the output, never kill the process: scenarios
  // that study SIGPIPE install their own handler.
  signal(SIGPIPE, SIG_IGN);
  (role == "app" ? it->app : it->peer)();
  return 0;
}
