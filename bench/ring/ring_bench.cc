// Two-thread throughput of the SPSC ring: the benchmark thread writes fixed-size chunks
// with Producer::Write, a consumer thread reads them with Consumer::Read, both copying as
// libxsock.so does. Reported as bytes/s of the producer (the ring bounds how far it can
// run ahead, so that is the consumer's rate too).
#include <sched.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>

#include "ringbuf/ring.h"

namespace xsock::ring {
namespace {

constexpr uint32_t kRingBytes = 256 * 1024;  // the default socket ring (order 18)

// One direction, laid out as in shared/socket_page.h: each index on its own cache line.
struct alignas(64) Line {
  std::atomic<uint32_t> value{0};
};
struct alignas(64) ErrorLine {
  std::atomic<int32_t> value{0};
};
struct BenchRing {
  Line cons;
  Line prod;
  ErrorLine error;
  alignas(64) std::byte data[kRingBytes];

  RingRefs refs() { return {&cons.value, &prod.value, &error.value, data, kRingBytes}; }
};

// Spins a little, then yields: the machine may have fewer free cores than threads.
class Backoff {
 public:
  void Wait() {
    if (++idle_ < 64) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      return;
    }
    sched_yield();
  }
  void Reset() { idle_ = 0; }

 private:
  unsigned idle_ = 0;
};

void BM_RingThroughput(benchmark::State& state) {
  const auto chunk = static_cast<uint32_t>(state.range(0));
  auto ring = std::make_unique<BenchRing>();
  std::atomic<bool> stop{false};

  std::thread consumer([&] {
    Consumer c(ring->refs());
    std::vector<std::byte> dst(chunk);
    Backoff backoff;
    while (!stop.load(std::memory_order_relaxed)) {
      if (c.Read(dst.data(), chunk) > 0) {
        benchmark::DoNotOptimize(dst.data());
        backoff.Reset();
      } else {
        backoff.Wait();
      }
    }
  });

  Producer p(ring->refs());
  std::vector<std::byte> src(chunk, std::byte{0x5A});
  Backoff backoff;
  for (auto _ : state) {
    for (uint32_t off = 0; off < chunk;) {
      const int64_t n = p.Write(src.data() + off, chunk - off);
      if (n < 0) {
        state.SkipWithError("corrupt ring index");
        break;
      }
      if (n == 0) {
        backoff.Wait();
        continue;
      }
      backoff.Reset();
      off += static_cast<uint32_t>(n);
    }
  }
  stop.store(true);
  consumer.join();
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * chunk);
  state.SetLabel("256 KiB ring, Write/Read");
}

BENCHMARK(BM_RingThroughput)
    ->ArgName("chunk")
    ->Arg(64)
    ->Arg(1024)
    ->Arg(16 * 1024)
    ->Arg(64 * 1024)
    ->UseRealTime();

}  // namespace
}  // namespace xsock::ring

BENCHMARK_MAIN();
