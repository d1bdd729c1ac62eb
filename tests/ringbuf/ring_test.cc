// Unit tests of the SPSC byte ring (ringbuf/ring.h) with a well-behaved peer: empty and
// full rings, wrap of the free-running indices, every chunk size, the zero-copy and copy
// APIs and the error word. The data area sits against a guard page (see GuardedArea), so
// an overrun faults instead of passing silently.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "ringbuf/ring.h"
#include "tests/ringbuf/ring_test_support.h"

namespace xsock::ring::test {
namespace {

// An error word value a producer sets after its last byte (the channel uses kRingEof).
constexpr int32_t kStreamEndForTest = 1;

std::vector<std::byte> StreamBytes(StreamWriter& gen, size_t n) {
  std::vector<std::byte> v(n);
  gen.Fill(v.data(), n);
  return v;
}

// Concatenation of the regions' bytes, in order.
std::vector<std::byte> Gather(const Regions& r) {
  std::vector<std::byte> v;
  for (int i = 0; i < r.count; ++i) {
    const auto* p = static_cast<const std::byte*>(r.iov[i].iov_base);
    v.insert(v.end(), p, p + r.iov[i].iov_len);
  }
  return v;
}

// Writes `src` into the regions in order; returns the bytes written.
size_t Scatter(const Regions& r, const std::byte* src, size_t n) {
  size_t done = 0;
  for (int i = 0; i < r.count && done < n; ++i) {
    const size_t take = std::min(r.iov[i].iov_len, n - done);
    std::memcpy(r.iov[i].iov_base, src + done, take);
    done += take;
  }
  return done;
}

// How many regions a span of n bytes starting at free-running index `start` needs.
int ExpectedRegionCount(uint32_t start, uint32_t n, uint32_t size) {
  if (n == 0) return 0;
  return (start & (size - 1)) + uint64_t{n} > size ? 2 : 1;
}

// Start indices: at and around the data area's edges, around 2^31, and just before the
// 32-bit indices wrap.
// clang-format off
constexpr uint32_t kStarts[] = {0, 1, 31, 63, 64, 0x7FFFFFFF, 0x80000000,
                                UINT32_MAX - 64, UINT32_MAX - 32, UINT32_MAX - 1, UINT32_MAX};
// clang-format on

TEST_CASE("ring sizes are powers of two from 2 to 2^31", "[ring]") {
  CHECK_FALSE(IsValidSize(0));
  CHECK_FALSE(IsValidSize(1));
  CHECK(IsValidSize(2));
  CHECK_FALSE(IsValidSize(3));
  CHECK(IsValidSize(64));
  CHECK_FALSE(IsValidSize(96));
  CHECK(IsValidSize(uint64_t{1} << 31));
  CHECK_FALSE(IsValidSize((uint64_t{1} << 31) + 1));
  CHECK_FALSE(IsValidSize(uint64_t{1} << 32));
}

TEST_CASE("an empty ring offers all its space and no data", "[ring]") {
  for (const uint32_t start : kStarts) {
    INFO("start index " << start);
    TestRing ring(64);
    ring.SetIndices(start, start);
    Producer p(ring.refs());
    Consumer c(ring.refs());

    const Regions data = c.Peek();
    CHECK_FALSE(data.corrupt);
    CHECK(data.bytes == 0);
    CHECK(data.count == 0);
    std::byte buf[8] = {};
    CHECK(c.Read(buf, sizeof buf) == 0);
    CHECK(ring.cons().load() == start);

    const Regions space = p.Reserve();
    CHECK_FALSE(space.corrupt);
    CHECK(space.bytes == 64);
    CHECK(space.count == ExpectedRegionCount(start, 64, 64));
    CHECK(RegionsInside(space, ring.data(), 64));
    CHECK(static_cast<std::byte*>(space.iov[0].iov_base) == ring.data() + (start & 63));
  }
}

TEST_CASE("a full ring offers no space and all its data", "[ring]") {
  for (const uint32_t start : kStarts) {
    INFO("start index " << start);
    TestRing ring(64);
    ring.SetIndices(start, start);
    Producer p(ring.refs());
    Consumer c(ring.refs());
    StreamWriter gen(start);
    const auto bytes = StreamBytes(gen, 80);

    REQUIRE(p.Write(bytes.data(), 80) == 64);  // only what fits
    CHECK(ring.prod().load() == start + 64);
    const Regions space = p.Reserve();
    CHECK_FALSE(space.corrupt);
    CHECK(space.bytes == 0);
    CHECK(space.count == 0);
    CHECK(p.Write(bytes.data() + 64, 16) == 0);
    CHECK(ring.prod().load() == start + 64);

    const Regions data = c.Peek();
    CHECK_FALSE(data.corrupt);
    REQUIRE(data.bytes == 64);
    CHECK(data.count == ExpectedRegionCount(start, 64, 64));
    CHECK(Gather(data) == std::vector<std::byte>(bytes.begin(), bytes.begin() + 64));
  }
}

TEST_CASE("indices wrap past UINT32_MAX without losing or reordering bytes", "[ring]") {
  for (const uint32_t back : {0u, 1u, 7u, 31u, 32u, 63u, 64u, 100u, 1000u}) {
    const uint32_t start = UINT32_MAX - back;
    INFO("start index " << start);
    TestRing ring(64);
    ring.SetIndices(start, start);
    Producer p(ring.refs());
    Consumer c(ring.refs());
    StreamWriter gen(back), expect(back);
    constexpr uint32_t kTotal = 3000;
    uint32_t moved = 0;
    while (moved < kTotal) {
      const uint32_t n = std::min<uint32_t>(37, kTotal - moved);
      const auto in = StreamBytes(gen, n);
      REQUIRE(p.Write(in.data(), n) == n);
      CHECK(p.prod() - c.cons() == n);  // the fill level survives the wrap
      std::vector<std::byte> out(n);
      REQUIRE(c.Read(out.data(), n) == n);
      REQUIRE(out == StreamBytes(expect, n));
      moved += n;
    }
    CHECK(ring.prod().load() == start + kTotal);  // wrapped through zero
    CHECK(ring.cons().load() == start + kTotal);
    CHECK(ring.prod().load() < start);
  }
}

// Pushes the stream through the ring in rounds: fill with chunks of `chunk` bytes until
// full, then drain with chunks of `chunk` until empty; checks every count, every region
// and every byte. Returns a description of the first failure, or "".
std::string FillAndDrainInChunks(uint32_t size, uint32_t start, uint32_t chunk, bool zero_copy,
                                 int rounds) {
  TestRing ring(size);
  ring.SetIndices(start, start);
  Producer p(ring.refs());
  Consumer c(ring.refs());
  StreamWriter gen(chunk), expect(chunk);
  std::vector<std::byte> buf(chunk);

  for (int round = 0; round < rounds; ++round) {
    for (uint32_t fill = 0; fill < size;) {
      const uint32_t n = std::min(chunk, size - fill);
      gen.Fill(buf.data(), n);
      if (zero_copy) {
        const Regions r = p.Reserve(chunk);
        if (r.corrupt || r.bytes != n || !RegionsInside(r, ring.data(), size) ||
            r.count != ExpectedRegionCount(p.prod(), n, size)) {
          return "Reserve returned a wrong span at fill " + std::to_string(fill);
        }
        Scatter(r, buf.data(), n);
        p.Commit(n);
      } else if (p.Write(buf.data(), chunk) != n) {
        return "Write returned a wrong count at fill " + std::to_string(fill);
      }
      fill += n;
    }
    if (p.Reserve().bytes != 0) return "ring not full after filling it";

    for (uint32_t left = size; left > 0;) {
      const uint32_t n = std::min(chunk, left);
      std::vector<std::byte> want(n);
      expect.Fill(want.data(), n);
      if (zero_copy) {
        const Regions r = c.Peek(chunk);
        if (r.corrupt || r.bytes != n || !RegionsInside(r, ring.data(), size) ||
            r.count != ExpectedRegionCount(c.cons(), n, size)) {
          return "Peek returned a wrong span with " + std::to_string(left) + " left";
        }
        if (Gather(r) != want) return "Peek shows wrong bytes at " + std::to_string(c.cons());
        c.Release(n);
      } else {
        if (c.Read(buf.data(), chunk) != n) return "Read returned a wrong count";
        if (std::memcmp(buf.data(), want.data(), n) != 0) {
          return "Read returned wrong bytes at " + std::to_string(c.cons() - n);
        }
      }
      left -= n;
    }
    if (c.Peek().bytes != 0) return "ring not empty after draining it";
  }
  if (ring.prod().load() != start + uint32_t(rounds) * size) return "producer index off";
  if (ring.cons().load() != start + uint32_t(rounds) * size) return "consumer index off";
  return "";
}

TEST_CASE("every chunk size from 1 to the ring size moves content intact", "[ring]") {
  const uint32_t size = GENERATE(64u, 4096u);
  // A start near UINT32_MAX also puts the 32-bit wrap and an unaligned offset in play.
  const uint32_t start = GENERATE_COPY(0u, UINT32_MAX - size / 2);
  const bool zero_copy = GENERATE(false, true);
  INFO("ring " << size << " B, start index " << start << (zero_copy ? ", zero-copy" : ", copy"));
  for (uint32_t chunk = 1; chunk <= size; ++chunk) {
    const std::string failure = FillAndDrainInChunks(size, start, chunk, zero_copy, 3);
    INFO("chunk " << chunk << ": " << failure);
    REQUIRE(failure.empty());
  }
}

TEST_CASE("a reservation that crosses the end of the data area comes in two regions",
          "[ring][zero-copy]") {
  TestRing ring(64);
  ring.SetIndices(UINT32_MAX - 3, UINT32_MAX - 3);  // offset 60, four bytes before the end
  Producer p(ring.refs());
  Consumer c(ring.refs());

  const Regions r = p.Reserve(10);
  REQUIRE_FALSE(r.corrupt);
  REQUIRE(r.count == 2);
  CHECK(r.bytes == 10);
  CHECK(r.iov[0].iov_base == ring.data() + 60);
  CHECK(r.iov[0].iov_len == 4);
  CHECK(r.iov[1].iov_base == ring.data());
  CHECK(r.iov[1].iov_len == 6);

  const char text[] = "0123456789";
  Scatter(r, reinterpret_cast<const std::byte*>(text), 10);
  CHECK(c.Peek().bytes == 0);  // nothing is visible before Commit
  p.Commit(10);
  CHECK(ring.prod().load() == 6u);

  const Regions d = c.Peek();
  REQUIRE(d.count == 2);
  CHECK(d.iov[0].iov_base == ring.data() + 60);
  CHECK(d.iov[0].iov_len == 4);
  CHECK(d.iov[1].iov_base == ring.data());
  CHECK(d.iov[1].iov_len == 6);
  const auto got = Gather(d);
  CHECK(std::string(reinterpret_cast<const char*>(got.data()), got.size()) == "0123456789");
}

TEST_CASE("releasing part of a peek leaves the rest for the next peek", "[ring][zero-copy]") {
  TestRing ring(64);
  ring.SetIndices(60, 60);
  Producer p(ring.refs());
  Consumer c(ring.refs());
  REQUIRE(p.Write("abcdefghij", 10) == 10);

  c.Release(3);  // of the 10 peekable bytes
  CHECK(ring.cons().load() == 63u);
  const Regions d = c.Peek();
  REQUIRE(d.count == 2);
  CHECK(d.bytes == 7);
  CHECK(d.iov[0].iov_base == ring.data() + 63);
  CHECK(d.iov[0].iov_len == 1);
  const auto got = Gather(d);
  CHECK(std::string(reinterpret_cast<const char*>(got.data()), got.size()) == "defghij");

  const Regions capped = c.Peek(2);
  CHECK(capped.bytes == 2);
  CHECK(capped.count == 2);  // one byte before the end, one after
}

TEST_CASE("committing less than was reserved publishes only that much", "[ring][zero-copy]") {
  TestRing ring(64);
  Producer p(ring.refs());
  Consumer c(ring.refs());

  const Regions r = p.Reserve(32);
  REQUIRE(r.bytes == 32);
  std::memcpy(r.iov[0].iov_base, "hello", 5);
  p.Commit(5);  // as after a short recv() into the reservation

  CHECK(c.Peek().bytes == 5);
  const Regions next = p.Reserve(64);
  CHECK(next.bytes == 59);
  CHECK(next.iov[0].iov_base == ring.data() + 5);
}

TEST_CASE("a reservation is capped by max and by the free space", "[ring][zero-copy]") {
  TestRing ring(64);
  Producer p(ring.refs());
  CHECK(p.Reserve(0).bytes == 0);
  CHECK(p.Reserve(0).count == 0);
  CHECK(p.Reserve(17).bytes == 17);
  REQUIRE(p.Write(std::vector<std::byte>(50).data(), 50) == 50);
  CHECK(p.Reserve(17).bytes == 14);
  CHECK(p.Reserve().bytes == 14);
}

TEST_CASE("Write takes only what fits and Read returns only what is there", "[ring][copy]") {
  TestRing ring(64);
  ring.SetIndices(50, 50);
  Producer p(ring.refs());
  Consumer c(ring.refs());
  StreamWriter gen(9), expect(9);

  const auto first = StreamBytes(gen, 40);
  CHECK(p.Write(first.data(), 40) == 40);
  const auto second = StreamBytes(gen, 40);
  CHECK(p.Write(second.data(), 40) == 24);  // 64 - 40

  std::vector<std::byte> out(100);
  CHECK(c.Read(out.data(), 100) == 64);  // both regions of the wrapped span, in order
  out.resize(64);
  CHECK(out == StreamBytes(expect, 64));
  CHECK(c.Read(out.data(), 100) == 0);
  CHECK(ring.prod().load() == 114u);
  CHECK(ring.cons().load() == 114u);
}

TEST_CASE("Write and Read of zero bytes change nothing", "[ring][copy]") {
  TestRing ring(64);
  ring.SetIndices(10, 5);
  Producer p(ring.refs());
  Consumer c(ring.refs());
  CHECK(p.Write(nullptr, 0) == 0);
  CHECK(c.Read(nullptr, 0) == 0);
  CHECK(ring.prod().load() == 10u);
  CHECK(ring.cons().load() == 5u);
}

TEST_CASE("a view caches its own index and only ever writes it back", "[ring]") {
  TestRing ring(64);
  ring.SetIndices(20, 10);
  Producer p(ring.refs());
  Consumer c(ring.refs());
  CHECK(p.prod() == 20u);
  CHECK(c.cons() == 10u);
  // A rewrite of the producer's shared index is what the consumer sees...
  ring.prod().store(10);
  CHECK(c.Peek().bytes == 0);
  // ...but the producer keeps computing from, and publishing, its own copy.
  CHECK(p.Reserve().bytes == 54);
  REQUIRE(p.Write("x", 1) == 1);
  CHECK(ring.prod().load() == 21u);
}

TEST_CASE("the error word is zero until its writer sets it", "[ring][error]") {
  TestRing ring(64);
  Producer p(ring.refs());
  Consumer c(ring.refs());
  CHECK(c.Error() == 0);
  CHECK(p.Error() == 0);
  p.SetError(-104);
  CHECK(c.Error() == -104);
  c.SetError(-32);  // a direction whose consumer reports (PVCalls out_error)
  CHECK(p.Error() == -32);
  CHECK(ring.error().load() == -32);
}

TEST_CASE("an error read before peeking covers every byte published before it", "[ring][error]") {
  TestRing ring(64);
  Producer p(ring.refs());
  Consumer c(ring.refs());
  REQUIRE(p.Write("tail", 4) == 4);
  p.SetError(kStreamEndForTest);

  const int32_t err = c.Error();
  const Regions r = c.Peek();
  CHECK(err == kStreamEndForTest);
  CHECK(r.bytes == 4);  // not the end yet: the data comes first
}

TEST_CASE("an error seen after an empty peek can still have data behind it", "[ring][error]") {
  // The order a consumer must avoid: this interleaving is legal, so "empty, then error"
  // does not mean end of stream; only "error, then empty" does.
  TestRing ring(64);
  Producer p(ring.refs());
  Consumer c(ring.refs());
  CHECK(c.Peek().bytes == 0);
  REQUIRE(p.Write("late", 4) == 4);
  p.SetError(kStreamEndForTest);
  CHECK(c.Error() == kStreamEndForTest);
  CHECK(c.Peek().bytes == 4);
}

TEST_CASE("a consumer that reads the error word first never loses the last bytes",
          "[ring][error]") {
  // Producer and consumer race at the end of each stream; repeated so the race is hit.
  constexpr uint32_t kBytes = 2000;
  for (int run = 0; run < 100; ++run) {
    TestRing ring(64);
    std::atomic<bool> stop{false};
    bool producer_ok = true;
    std::thread producer([&] {
      Producer p(ring.refs());
      StreamWriter gen(run);
      std::byte buf[48];
      for (uint32_t sent = 0; sent < kBytes && producer_ok;) {
        const uint32_t n = std::min<uint32_t>(sizeof buf, kBytes - sent);
        gen.Fill(buf, n);
        for (uint32_t off = 0; off < n && producer_ok;) {
          const int64_t w = p.Write(buf + off, n - off);
          producer_ok = w >= 0 && !stop.load();
          if (w == 0) std::this_thread::yield();
          off += static_cast<uint32_t>(std::max<int64_t>(w, 0));
        }
        sent += n;
      }
      p.SetError(kStreamEndForTest);
    });

    Consumer c(ring.refs());
    StreamHash got;
    std::byte buf[64];
    int32_t err = 0;
    int64_t n = 0;
    for (uint64_t spins = 0; spins < 10'000'000; ++spins) {
      err = c.Error();  // first: see Consumer::Error()
      n = c.Read(buf, sizeof buf);
      if (n < 0) break;
      got.Update(buf, static_cast<size_t>(n));
      if (n == 0 && err != 0) break;
      if (n == 0) std::this_thread::yield();
    }
    stop.store(true);
    producer.join();

    StreamWriter gen(run);
    std::vector<std::byte> all(kBytes);
    gen.Fill(all.data(), kBytes);
    StreamHash want;
    want.Update(all.data(), kBytes);
    INFO("run " << run);
    REQUIRE(producer_ok);
    REQUIRE(n == 0);
    REQUIRE(err == kStreamEndForTest);
    REQUIRE(got.length() == kBytes);
    REQUIRE(got.Digest() == want.Digest());
  }
}

}  // namespace
}  // namespace xsock::ring::test
