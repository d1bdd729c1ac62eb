// The PVCalls probe of the real-Xen test (tests/xen-real/run.sh), one static binary with
// three modes:
//   probe front BYTES [STEP_S] in the domU: TestFront over the real libraries talks PVCalls
//                            to xsockd --transport xen in dom0: download from dom0's
//                            server, echo BYTES both ways, listen through dom0 and accept
//                            dom0's client; every byte is compared with the generator.
//   probe serve BYTES        in dom0: loopback servers on 7000 (echo) and 7001 (sends
//                            BYTES of stream 1, then closes).
//   probe client PORT BYTES  in dom0: connects (retrying: the domU listens later) and
//                            sends BYTES of stream 3.
// The streams are a deterministic generator, so the receiver checks each byte against
// its own copy (stronger than a hash) and also prints an FNV-1a digest for the log.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "backend/xen/xen_api.h"
#include "tests/xen/test_front.h"

namespace {

using xsock::xen_test::Clock;
using xsock::xen_test::FrontRing;
using xsock::xen_test::TestFront;

// Each step (handshake, download, echo, accept) gives up after this; dom0 waits a little
// longer for each step's marker, so a stuck step is reported by the probe itself.
std::chrono::seconds g_step_limit{50};

// xorshift64 stream `seed`, byte i.
struct Stream {
  explicit Stream(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  void Fill(uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) p[i] = Next();
  }
  uint8_t Next() {
    if (left == 0) {
      s ^= s << 13;
      s ^= s >> 7;
      s ^= s << 17;
      word = s;
      left = 8;
    }
    const uint8_t b = static_cast<uint8_t>(word);
    word >>= 8;
    --left;
    return b;
  }
  uint64_t s;
  uint64_t word = 0;
  int left = 0;
};

struct Digest {
  uint64_t h = 0xcbf29ce484222325ull;
  void Add(const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  }
};

// Compares received bytes with the expected stream as they arrive.
struct Checker {
  explicit Checker(uint64_t seed) : want(seed) {}
  bool Take(const uint8_t* p, size_t n) {
    digest.Add(p, n);
    for (size_t i = 0; i < n; ++i) {
      if (p[i] != want.Next()) {
        if (ok) std::printf("probe: first mismatch at byte %zu\n", got + i);
        ok = false;
      }
    }
    got += n;
    return ok;
  }
  Stream want;
  Digest digest;
  size_t got = 0;
  bool ok = true;
};

bool Report(const char* step, bool ok, const Checker& c, size_t bytes, Clock::time_point t0) {
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::printf("XSOCK-PROBE %s %s bytes=%zu/%zu fnv=%016llx seconds=%.1f\n", step,
              ok ? "ok" : "FAILED", c.got, bytes, static_cast<unsigned long long>(c.digest.h), s);
  std::fflush(stdout);
  return ok;
}

// Reads `bytes` of stream `seed` from a ring (and, if `send_seed`, writes `bytes` of that
// stream at the same time: the echo).
bool Pump(TestFront& f, FrontRing& ring, size_t bytes, uint64_t want_seed, int send_seed,
          const char* step) {
  const auto t0 = Clock::now();
  Checker check(want_seed);
  Stream out(send_seed > 0 ? static_cast<uint64_t>(send_seed) : 0);
  std::vector<uint8_t> up(64 * 1024), buf(64 * 1024);
  size_t up_len = 0, up_off = 0, sent = send_seed > 0 ? 0 : bytes;
  while (check.got < bytes && Clock::now() - t0 < g_step_limit) {
    bool progress = false;
    if (up_off == up_len && sent < bytes) {
      up_len = std::min(up.size(), bytes - sent);
      out.Fill(up.data(), up_len);
      up_off = 0;
    }
    if (up_off < up_len) {
      const size_t n = f.Write(ring, up.data() + up_off, up_len - up_off);
      up_off += n;
      sent += n;
      progress |= n > 0;
    }
    const size_t n = f.Read(ring, buf.data(), std::min(buf.size(), bytes - check.got));
    if (n > 0) {
      progress = true;
      if (!check.Take(buf.data(), n)) break;
    }
    if (!progress) f.WaitEvent(std::chrono::milliseconds(100));
  }
  return Report(step, check.ok && check.got == bytes, check, bytes, t0);
}

std::string ReadDomid(const xsock::backend::xen::XenApi& api) {
  struct xs_handle* xs = api.xs_open(0);
  if (xs == nullptr) return "";
  unsigned int len = 0;
  char* v = static_cast<char*>(api.xs_read(xs, XBT_NULL, "domid", &len));
  std::string out = v != nullptr ? std::string(v, len) : "";
  std::free(v);
  api.xs_close(xs);
  return out;
}

int Front(size_t bytes) {
  const auto api = xsock::backend::xen::RealXenApi();
  const std::string domid = ReadDomid(api);
  if (domid.empty()) {
    std::printf("XSOCK-PROBE RESULT: FAIL (no domid in XenStore)\n");
    return 1;
  }
  TestFront f(api, static_cast<uint32_t>(std::stoul(domid)), 0, /*play_toolstack=*/false);
  const bool up = f.Connect();
  std::printf("XSOCK-PROBE handshake %s domid=%s backend-state=%s max-page-order=%u\n",
              up ? "ok" : "FAILED", domid.c_str(), f.BackendState().c_str(), f.max_page_order());
  std::fflush(stdout);
  if (!up) return std::printf("XSOCK-PROBE RESULT: FAIL (handshake)\n"), 1;
  const uint32_t order = std::min<uint32_t>(f.max_page_order(), 4);
  bool ok = true;
  // 1. Download from dom0's server.
  // PVCalls: a socket command creates the id, then connect or bind uses it.
  const int32_t s1 = f.Socket(1);
  const int32_t c1 = s1 == 0 ? f.ConnectTo(1, 7001, order) : s1;
  ok &= c1 == 0 && Pump(f, *f.Ring(1), bytes, 1, 0, "download");
  if (c1 != 0) std::printf("XSOCK-PROBE download connect=%d\n", c1);
  // 2. Echo both ways.
  const int32_t s2 = f.Socket(2);
  const int32_t c2 = s2 == 0 ? f.ConnectTo(2, 7000, order) : s2;
  ok &= c2 == 0 && Pump(f, *f.Ring(2), bytes, 2, 2, "echo");
  if (c2 != 0) std::printf("XSOCK-PROBE echo connect=%d\n", c2);
  // 3. Listen through dom0; dom0's client connects and sends stream 3.
  const int32_t s3 = f.Socket(3);
  const int32_t b = s3 == 0 ? f.Bind(3, 7002) : s3;
  const int32_t l = b == 0 ? f.Listen(3) : b;
  bool accepted = false;
  if (l == 0) {
    std::printf("XSOCK-PROBE LISTENING\n");
    std::fflush(stdout);
    const uint32_t req = f.SendAccept(3, 4, order);
    const auto rsp = f.Wait(req, g_step_limit);
    accepted = rsp && rsp->ret == 0;
    if (!accepted) std::printf("XSOCK-PROBE accept ret=%d\n", rsp ? rsp->ret : -9999);
  } else {
    std::printf("XSOCK-PROBE bind=%d listen=%d\n", b, l);
  }
  ok &= accepted && Pump(f, *f.Ring(4), bytes, 3, 0, "accept");
  std::printf("XSOCK-PROBE RESULT: %s\n", ok ? "PASS" : "FAIL");
  std::fflush(stdout);
  return ok ? 0 : 1;
}

int ListenOn(uint16_t port) {
  const int s = socket(AF_INET, SOCK_STREAM, 0);
  const int one = 1;
  setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 || listen(s, 4) != 0) {
    std::perror("probe serve: bind/listen");
    std::exit(1);
  }
  return s;
}

bool SendAll(int fd, const uint8_t* p, size_t n) {
  while (n > 0) {
    const ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
    if (k <= 0) return false;
    p += k;
    n -= static_cast<size_t>(k);
  }
  return true;
}

void SendStream(int fd, uint64_t seed, size_t bytes) {
  Stream s(seed);
  std::vector<uint8_t> buf(64 * 1024);
  for (size_t sent = 0; sent < bytes;) {
    const size_t n = std::min(buf.size(), bytes - sent);
    s.Fill(buf.data(), n);
    if (!SendAll(fd, buf.data(), n)) return;
    sent += n;
  }
}

int Serve(size_t bytes) {
  const int echo = ListenOn(7000), down = ListenOn(7001);
  std::thread([down, bytes] {
    const int c = accept(down, nullptr, nullptr);
    SendStream(c, 1, bytes);
    close(c);
  }).detach();
  const int c = accept(echo, nullptr, nullptr);
  std::vector<uint8_t> buf(64 * 1024);
  for (;;) {
    const ssize_t n = recv(c, buf.data(), buf.size(), 0);
    if (n <= 0 || !SendAll(c, buf.data(), static_cast<size_t>(n))) break;
  }
  close(c);
  return 0;
}

int Client(uint16_t port, size_t bytes) {
  for (int i = 0; i < 600; ++i) {  // 5 minutes at most
    const int s = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(s, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0) {
      SendStream(s, 3, bytes);
      close(s);
      std::printf("probe client: sent %zu bytes to %u\n", bytes, port);
      return 0;
    }
    close(s);
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  std::printf("probe client: no listener on %u\n", port);
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "front" && (argc == 3 || argc == 4)) {
    if (argc == 4) g_step_limit = std::chrono::seconds(std::stoul(argv[3]));
    return Front(std::stoull(argv[2]));
  }
  if (mode == "serve" && argc == 3) return Serve(std::stoull(argv[2]));
  if (mode == "client" && argc == 4) {
    return Client(static_cast<uint16_t>(std::stoul(argv[2])), std::stoull(argv[3]));
  }
  std::fprintf(stderr, "usage: probe front BYTES [STEP_S] | serve BYTES | client PORT BYTES\n");
  return 2;
}
