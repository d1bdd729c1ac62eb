// Two threads, one producer and one consumer, move a pseudo-random stream through one ring
// in random chunk sizes; the consumer's running hash must equal the producer's. Meant to
// run under ThreadSanitizer too: every data-area access is ordered by the ring's
// acquire/release pairs, so any report is a ring bug.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <thread>

#include <catch2/catch.hpp>

#include "tests/ringbuf/ring_stress.h"
#include "tests/ringbuf/ring_test_support.h"

namespace xsock::ring::test {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr auto kTimeout = std::chrono::seconds(240);

void MoveStreamBetweenThreads(uint32_t ring_size, uint64_t total, uint64_t seed) {
  TestRing ring(ring_size);
  std::atomic<uint32_t> abort{0};
  const auto deadline = std::chrono::steady_clock::now() + kTimeout;
  StreamProducer producer(ring.refs(), seed, total, seed ^ 0xA5A5);
  StreamConsumer consumer(ring.refs(), total, seed ^ 0x5A5A);

  DriveResult produced;
  std::thread t([&] { produced = Drive({&producer}, deadline, &abort); });
  const DriveResult consumed = Drive({&consumer}, deadline, &abort);
  t.join();

  INFO("ring " << ring_size << " B, " << total << " B, seed " << seed);
  INFO("producer: " << produced.failure << "; consumer: " << consumed.failure);
  REQUIRE(produced.ok);
  REQUIRE(consumed.ok);
  CHECK(producer.bytes() == total);
  CHECK(consumer.bytes() == total);
  CHECK(consumer.hash() == producer.hash());
  CHECK(ring.error().load() == kStreamEnd);
  CHECK(ring.prod().load() == static_cast<uint32_t>(total));
  CHECK(ring.cons().load() == static_cast<uint32_t>(total));
}

TEST_CASE("two threads move 256 MiB through a 64 KiB ring in random chunks intact", "[stress]") {
  MoveStreamBetweenThreads(64 * 1024, 256 * kMiB, 1);
}

TEST_CASE("two threads move 4 MiB through a 64-byte ring in random chunks intact", "[stress]") {
  // A tiny ring makes almost every operation wrap and every index update contended.
  MoveStreamBetweenThreads(64, 4 * kMiB, 2);
}

TEST_CASE("two threads move a stream whose length is not a multiple of the ring size", "[stress]") {
  MoveStreamBetweenThreads(4096, 16 * kMiB + 12345, 3);
}

}  // namespace
}  // namespace xsock::ring::test
