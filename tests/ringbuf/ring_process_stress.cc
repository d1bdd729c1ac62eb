// Two processes share a socket memfd laid out exactly as xsockd and libxsock.so lay it out
// (shared/socket_page.h) and stream pseudo-random bytes through both rings at once: the
// parent produces `out` and consumes `in`, the child the reverse, each in random chunk
// sizes from 1 byte to the ring size. The parent compares running hashes with the child's
// and checks its exit status. A deadline on both sides, an alarm() watchdog and
// PR_SET_PDEATHSIG keep every failure bounded.
//
// Options (after Catch2's own): --mib N (bytes per direction, MiB; meson passes the
// ring_stress_mib option), --ring-order K, --timeout SECONDS, --seed S.
#define CATCH_CONFIG_RUNNER
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <thread>

#include <catch2/catch.hpp>

#include "shared/socket_page.h"
#include "tests/ringbuf/ring_stress.h"
#include "tests/ringbuf/ring_test_support.h"

namespace xsock::ring::test {
namespace {

struct Options {
  uint64_t mib = 1024;
  uint32_t ring_order = 16;
  unsigned timeout_s = 240;
  uint64_t seed = 7;
};
Options g_options;

// Bookkeeping page after the socket area: the child's results, written before it exits
// (waitpid() orders them before the parent's reads), and an abort flag for both sides.
struct ControlPage {
  std::atomic<uint32_t> abort;
  uint64_t out_bytes;  // consumed by the child
  uint64_t out_hash;
  uint64_t in_bytes;  // produced by the child
  uint64_t in_hash;
  char failure[256];
};

// The shared mapping: [SocketPage][in][out][ControlPage].
class SharedSocketArea {
 public:
  explicit SharedSocketArea(uint32_t order) : order_(order) {
    len_ = SocketMemfdSize(order) + kPageSize;
    fd_ = memfd_create("xsock-ring-stress", MFD_CLOEXEC);
    if (fd_ < 0 || ftruncate(fd_, static_cast<off_t>(len_)) != 0) return;
    void* m = mmap(nullptr, len_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
    if (m == MAP_FAILED) return;
    base_ = m;
    new (base_) SocketPage{};
    new (control()) ControlPage{};
  }
  ~SharedSocketArea() {
    if (base_ != nullptr) munmap(base_, len_);
    if (fd_ >= 0) close(fd_);
  }
  SharedSocketArea(const SharedSocketArea&) = delete;
  SharedSocketArea& operator=(const SharedSocketArea&) = delete;

  bool ok() const { return base_ != nullptr; }
  RingRefs in() const { return InRing(base_, order_); }
  RingRefs out() const { return OutRing(base_, order_); }
  ControlPage* control() const {
    return std::launder(
        reinterpret_cast<ControlPage*>(static_cast<std::byte*>(base_) + SocketMemfdSize(order_)));
  }

 private:
  uint32_t order_;
  size_t len_ = 0;
  int fd_ = -1;
  void* base_ = nullptr;
};

constexpr uint64_t kOutSeed = 0x6F7574;  // "out"
constexpr uint64_t kInSeed = 0x696E;     // "in"

[[noreturn]] void RunChild(const SharedSocketArea& area, uint64_t total, pid_t parent) {
  // Never outlive the parent, never outlive the watchdog.
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(3);
  alarm(g_options.timeout_s + 10);

  ControlPage* ctl = area.control();
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(g_options.timeout_s);
  StreamConsumer out_consumer(area.out(), total, g_options.seed * 3 + 1);
  StreamProducer in_producer(area.in(), g_options.seed ^ kInSeed, total, g_options.seed * 5 + 2);
  const DriveResult r = Drive({&out_consumer, &in_producer}, deadline, &ctl->abort);

  ctl->out_bytes = out_consumer.bytes();
  ctl->out_hash = out_consumer.hash();
  ctl->in_bytes = in_producer.bytes();
  ctl->in_hash = in_producer.hash();
  std::snprintf(ctl->failure, sizeof ctl->failure, "%s", r.failure.c_str());
  _exit(r.ok ? 0 : 1);
}

// Reaps `pid`, killing it if it has not exited by `deadline`. Returns the wait status, or
// -1 if it had to be killed.
int ReapBy(pid_t pid, std::chrono::steady_clock::time_point deadline) {
  int status = 0;
  while (std::chrono::steady_clock::now() < deadline) {
    const pid_t got = waitpid(pid, &status, WNOHANG);
    if (got == pid) return status;
    if (got < 0 && errno != EINTR) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return -1;
}

TEST_CASE("two processes stream random chunks both ways through a shared socket page intact",
          "[stress]") {
  REQUIRE(g_options.ring_order >= kMinRingOrder);
  REQUIRE(g_options.ring_order <= kMaxRingOrder);
  const uint64_t total = g_options.mib << 20;
  SharedSocketArea area(g_options.ring_order);
  REQUIRE(area.ok());
  ControlPage* ctl = area.control();
  alarm(g_options.timeout_s + 30);  // last resort: SIGALRM ends this process

  const pid_t parent = getpid();
  const pid_t child = fork();
  REQUIRE(child >= 0);
  if (child == 0) RunChild(area, total, parent);

  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::seconds(g_options.timeout_s);
  StreamProducer out_producer(area.out(), g_options.seed ^ kOutSeed, total, g_options.seed * 7 + 3);
  StreamConsumer in_consumer(area.in(), total, g_options.seed * 11 + 4);
  int status = 0;
  bool reaped = false;
  auto child_alive = [&] {
    if (!reaped && waitpid(child, &status, WNOHANG) == child) reaped = true;
    return !reaped;
  };
  const DriveResult r = Drive({&out_producer, &in_consumer}, deadline, &ctl->abort, child_alive);
  if (!reaped) status = ReapBy(child, deadline + std::chrono::seconds(5));
  alarm(0);

  INFO("ring order " << g_options.ring_order << ", " << g_options.mib << " MiB each way");
  INFO("parent: " << r.failure << "; child: " << ctl->failure);
  REQUIRE(r.ok);
  REQUIRE(status != -1);
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
  CHECK(out_producer.bytes() == total);
  CHECK(ctl->out_bytes == total);
  CHECK(ctl->out_hash == out_producer.hash());
  CHECK(ctl->in_bytes == total);
  CHECK(in_consumer.bytes() == total);
  CHECK(in_consumer.hash() == ctl->in_hash);
}

}  // namespace
}  // namespace xsock::ring::test

int main(int argc, char** argv) {
  using xsock::ring::test::g_options;
  Catch::Session session;
  using Catch::clara::Opt;
  auto cli =
      session.cli() | Opt(g_options.mib, "MiB")["--mib"]("bytes each direction moves, in MiB") |
      Opt(g_options.ring_order, "order")["--ring-order"]("each ring holds 1 << order bytes") |
      Opt(g_options.timeout_s, "seconds")["--timeout"]("give up after this long") |
      Opt(g_options.seed, "seed")["--seed"]("stream and chunk-size seed");
  session.cli(cli);
  if (const int rc = session.applyCommandLine(argc, argv); rc != 0) return rc;
  return session.run();
}
