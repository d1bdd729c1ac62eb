// What the front's extra copy costs (issue 6 item 4, docs/xen.md "Design of the front").
//
// `xsockd --front xen` cannot let the application map the PVCalls grant pages (its rings
// have the memfd layout of shared/socket_page.h), so each byte makes one more hop: app
// ring -> xsockd -> AF_UNIX socketpair -> the front's thread -> PVCalls ring. This program
// measures that hop side by side with the paths around it, in one run, on this machine:
//
//   local   app -> xsockd (kernel host stack) -> loopback TCP -> sink
//   front   app -> xsockd -> socketpair -> FrontStack -> PVCalls ring -> dom0 XenBackend
//           -> loopback TCP -> sink                      (what a domU application gets)
//   direct  a PVCalls frontend writing the ring itself -> dom0 XenBackend -> loopback
//           TCP -> sink                           (what mapping the grant pages would give)
//
// front and direct run the real FrontStack and XenBackend over the test double of the Xen
// libraries (tests/xen/xen_double.h): grant pages are shared memfd pages, event channels
// eventfds. It measures memory copies, hops and wake-ups, not Xen's hypercalls or a real
// guest's memory: read front/direct as the cost of the extra hop, not as Xen throughput.
// Each transfer is checked (byte count and FNV-1a hash at the sink).
// Catch2 runs the one case (its REQUIREs are the harness's checks); main() is ours.
#define CATCH_CONFIG_RUNNER
#include <netinet/in.h>
#include <poll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "backend/host_stack.h"
#include "backend/xen/front_stack.h"
#include "backend/xen/xen_backend.h"
#include "fmt/format.h"
#include "tests/backend/test_client.h"
#include "tests/xen/dom0_thread.h"
#include "tests/xen/test_front.h"
#include "tests/xen/xen_double.h"

namespace xsock::testing {
namespace {

namespace xd = xsock::xen_double;
using backend::xen::FrontStack;
using backend::xen::FrontStackOptions;
using backend::xen::XenBackend;
using backend::xen::XenBackendOptions;
using Clock = std::chrono::steady_clock;

struct Params {
  size_t bytes = size_t{256} << 20;
  int runs = 3;
  uint32_t pv_order = 4;  // PVCalls data ring order (2^order pages, half each way)
  std::string configs = "local,front,front-v1,direct,direct-v1";
};
Params g_params;

constexpr uint32_t kDomU = 1;
constexpr size_t kChunk = 256 * 1024;

using Dom0 = xen_test::Dom0Thread;

// The sink: reads `n` bytes from `fd`, hashes them, notes when the last one arrived.
struct Sink {
  size_t got = 0;
  uint64_t hash = 0xcbf29ce484222325ull;
  Clock::time_point done{};
  void Run(int fd, size_t n) {
    std::vector<uint8_t> buf(1 << 16);
    while (got < n) {
      pollfd p{fd, POLLIN, 0};
      if (poll(&p, 1, 30000) != 1) return;
      const ssize_t r = recv(fd, buf.data(), buf.size(), 0);
      if (r <= 0) return;
      hash = Fnv1a({buf.data(), static_cast<size_t>(r)}, hash);
      got += static_cast<size_t>(r);
    }
    done = Clock::now();
  }
};

// The data: one pattern block sent over and over (the hash covers every byte sent).
const std::vector<uint8_t>& Block() {
  static const std::vector<uint8_t> block = Pattern(kChunk, 99);
  return block;
}

uint64_t ExpectedHash(size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t sent = 0; sent < n; sent += kChunk) {
    h = Fnv1a({Block().data(), std::min(kChunk, n - sent)}, h);
  }
  return h;
}

// MB/s from `start` to the sink's last byte, once the sink got all `n` bytes, unchanged.
double CheckedRate(const Sink& sink, Clock::time_point start, size_t n) {
  REQUIRE(sink.got == n);
  REQUIRE(sink.hash == ExpectedHash(n));
  return static_cast<double>(n) / 1e6 / std::chrono::duration<double>(sink.done - start).count();
}

// app -> xsockd (whatever host stack is installed) -> TCP -> sink; MB/s.
double ThroughXsockd(TestServer& server) {
  Control ctl(server.path());
  ctl.Hello();
  auto listener = TcpListener::Open(AF_INET);
  auto app = AppSocket::Create(ctl, AF_INET, 0);
  const int err = app->Connect(ctl, listener.Addr());
  REQUIRE((err == 0 || err == EINPROGRESS));
  REQUIRE(app->WaitConnectDone() == SocketState::kConnected);
  UniqueFd peer = listener.Accept();
  REQUIRE(peer.valid());
  const size_t n = g_params.bytes;
  Sink sink;
  const auto start = Clock::now();
  {
    ScopedThread t([&] { sink.Run(peer.get(), n); }, peer.get());
    for (size_t sent = 0; sent < n; sent += kChunk) {
      REQUIRE(app->WriteAll(Block().data(), std::min(kChunk, n - sent), 30000));
    }
  }
  return CheckedRate(sink, start, n);
}

// One run: the rate, and the data-ring events both sides sent per MiB (-1: no Xen path).
struct Result {
  double mbs = 0;
  double events_per_mib = -1;
};

double PerMib(uint64_t events) {
  return static_cast<double>(events) * static_cast<double>(1u << 20) /
         static_cast<double>(g_params.bytes);
}

Result Local() {
  backend::InstallHostStack(nullptr);
  TestServer server;
  return {ThroughXsockd(server), -1};
}

// ext: the xsock extension, whose wake rule signals only an armed peer; without it,
// standard PVCalls (an event after every update).
Result FrontWith(bool ext) {
  xd::Reset();
  Dom0 dom0(g_params.pv_order);
  xen_test::WriteToolstackNodes(kDomU);
  std::unique_ptr<FrontStack> front;
  {
    xd::ScopedDomain as(kDomU);
    FrontStackOptions o;
    o.domid = kDomU;
    o.ring_order = g_params.pv_order;
    o.extension = ext;
    auto f = FrontStack::Create(xd::Api(), o);
    REQUIRE(f.ok());
    front = std::move(*f);
  }
  REQUIRE(front->WaitConnected(std::chrono::milliseconds(kTimeoutMs)));
  REQUIRE(front->Extension() == ext);
  backend::InstallHostStack(front.get());
  Result r;
  {
    TestServer server;
    const uint64_t before = dom0.backend->Stats().data_events + front->Stats().events_to_dom0;
    r.mbs = ThroughXsockd(server);
    r.events_per_mib =
        PerMib(dom0.backend->Stats().data_events + front->Stats().events_to_dom0 - before);
  }
  backend::InstallHostStack(nullptr);
  front.reset();
  return r;
}
Result Front() { return FrontWith(true); }
Result FrontV1() { return FrontWith(false); }

Result DirectWith(bool ext) {
  xd::Reset();
  Dom0 dom0(g_params.pv_order);
  xen_test::TestFront f(xd::Api(), kDomU);
  f.request_extension = ext;
  REQUIRE(f.Connect());
  auto listener = TcpListener::Open(AF_INET);
  REQUIRE(f.Socket(1) == 0);
  REQUIRE(f.ConnectTo(1, listener.Addr().port, g_params.pv_order) == 0);
  xen_test::FrontRing* ring = f.Ring(1);
  REQUIRE(ring != nullptr);
  UniqueFd peer = listener.Accept();
  REQUIRE(peer.valid());
  const size_t n = g_params.bytes;
  Sink sink;
  const uint64_t before = dom0.backend->Stats().data_events + f.data_notifies();
  const auto start = Clock::now();
  {
    ScopedThread t([&] { sink.Run(peer.get(), n); }, peer.get());
    size_t sent = 0, in_block = 0;
    const auto deadline = start + std::chrono::seconds(120);
    while (sent < n && Clock::now() < deadline) {
      const size_t want = std::min(kChunk - in_block, n - sent);
      const size_t w = f.Write(*ring, Block().data() + in_block, want);
      sent += w;
      in_block = (in_block + w) % kChunk;
      if (w == 0) f.WaitEvent(std::chrono::milliseconds(50));
    }
    REQUIRE(sent == n);
  }
  Result r;
  r.mbs = CheckedRate(sink, start, n);
  r.events_per_mib = PerMib(dom0.backend->Stats().data_events + f.data_notifies() - before);
  REQUIRE(f.Release(1) == 0);
  return r;
}
Result Direct() { return DirectWith(true); }
Result DirectV1() { return DirectWith(false); }

// CPU time of the whole process (every thread: app, xsockd, front, dom0, sink), seconds.
double CpuSeconds() {
  rusage ru{};
  getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& t) { return static_cast<double>(t.tv_sec) + t.tv_usec / 1e6; };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

TEST_CASE("front copy benchmark") {
  struct Row {
    const char* name;
    Result (*fn)();
    const char* path;
  };
  const Row rows[] = {
      {"local", Local, "app -> xsockd -> loopback TCP"},
      {"front", Front, "app -> xsockd -> socketpair -> front -> PVCalls ring -> dom0 -> TCP"},
      {"front-v1", FrontV1, "the same, standard PVCalls (no extension: an event per update)"},
      {"direct", Direct, "PVCalls ring written by the frontend -> dom0 -> TCP"},
      {"direct-v1", DirectV1, "the same, standard PVCalls"},
  };
  std::printf(
      "front copy benchmark: %zu MiB per run, %d runs, PVCalls ring order %u "
      "(%u KiB each way), local ring default; sink on loopback TCP\n",
      g_params.bytes >> 20, g_params.runs, g_params.pv_order,
      pvcalls::DataRingBytes(g_params.pv_order) / 1024);
  std::printf("%-9s %8s %8s %8s %10s %11s  %s\n", "config", "MB/s", "min", "max", "CPU s/GiB",
              "events/MiB", "path (medians; CPU: all threads; events: both sides' data-ring)");
  double front = 0, direct = 0;
  for (const Row& row : rows) {
    const std::string name = row.name;
    if (("," + g_params.configs + ",").find("," + name + ",") == std::string::npos) continue;
    std::vector<double> v, cpu, events;
    for (int i = 0; i < g_params.runs; ++i) {
      const double before = CpuSeconds();
      const Result r = row.fn();
      v.push_back(r.mbs);
      events.push_back(r.events_per_mib);
      cpu.push_back((CpuSeconds() - before) * static_cast<double>(1u << 30) /
                    static_cast<double>(g_params.bytes));
    }
    const double med = Median(v);
    const double ev = Median(events);
    const std::string ev_text = ev < 0 ? "-" : fmt::format("{:.1f}", ev);
    std::printf("%-9s %8.1f %8.1f %8.1f %10.2f %11s  %s\n", row.name, med,
                *std::min_element(v.begin(), v.end()), *std::max_element(v.begin(), v.end()),
                Median(cpu), ev_text.c_str(), row.path);
    std::fflush(stdout);
    if (std::string(row.name) == "front") front = med;
    if (std::string(row.name) == "direct") direct = med;
  }
  if (front > 0 && direct > 0) {
    std::printf("front/direct: %.2f (the extra hop's share: %.0f%% of direct's rate lost)\n",
                front / direct, 100.0 * (1.0 - front / direct));
  }
}

}  // namespace
}  // namespace xsock::testing

int main(int argc, char** argv) {
  using xsock::testing::g_params;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> const char* {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "xsock-bench-xen-front: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--mib") {
      g_params.bytes = static_cast<size_t>(std::strtoul(next(), nullptr, 10)) << 20;
    } else if (a == "--runs") {
      g_params.runs = std::max(1, std::atoi(next()));
    } else if (a == "--pv-order") {
      g_params.pv_order = static_cast<uint32_t>(std::clamp(std::atoi(next()), 1, 9));
    } else if (a == "--configs") {
      g_params.configs = next();
    } else if (a == "-h" || a == "--help") {
      std::printf(
          "usage: xsock-bench-xen-front [--mib N] [--runs R] [--pv-order K] "
          "[--configs local,front,front-v1,direct,direct-v1]\n"
          "  Streams N MiB (default 256) R times (default 3) through each configuration and\n"
          "  prints MB/s (median, min, max), CPU seconds per GiB and data-ring events per\n"
          "  MiB: local xsockd, the Xen front, and a frontend writing the PVCalls ring\n"
          "  itself, the Xen ones over the test double with data rings of order K\n"
          "  (default 4), each with the xsock extension's wake rule and as standard PVCalls\n"
          "  (-v1). Exit 1 if any transfer failed its check.\n");
      return 0;
    } else {
      std::fprintf(stderr, "xsock-bench-xen-front: unknown argument '%s' (try --help)\n",
                   a.c_str());
      return 2;
    }
  }
  if (g_params.bytes == 0) {
    std::fprintf(stderr, "xsock-bench-xen-front: --mib must be at least 1\n");
    return 2;
  }
  const char* catch_argv[] = {argv[0]};
  return Catch::Session().run(1, catch_argv);
}
