// Unit tests of the ring against a hostile peer: impossible indices must be reported as
// corrupt with no region returned, and no index a peer can write — fixed or changing
// under our feet — may lead to an access outside the data area. The data area and the
// copy buffers sit against guard pages (and are poisoned around under ASan), so an
// out-of-bounds copy faults rather than passing silently.
#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>

#include "ringbuf/ring.h"
#include "tests/ringbuf/ring_test_support.h"

namespace xsock::ring::test {
namespace {

constexpr uint32_t kOwnIndices[] = {
    0, 1, 63, 64, 4095, 0x7FFFFFFF, 0x80000000, UINT32_MAX - 64, UINT32_MAX - 1, UINT32_MAX};

// Fill levels prod - cons that a peer could produce, legal (<= size) or not: every value
// up to just past the limit, then the far ones.
std::vector<uint32_t> Distances(uint32_t size) {
  std::vector<uint32_t> d;
  for (uint32_t i = 0; i <= size + 2; ++i) d.push_back(i);
  for (const uint32_t v : {2 * size, 2 * size + 1, 0x7FFFFFFFu, 0x80000000u, 0x80000001u,
                           UINT32_MAX - size, UINT32_MAX - 1, UINT32_MAX}) {
    d.push_back(v);
  }
  return d;
}

bool IsCorruptAndEmpty(const Regions& r) {
  return r.corrupt && r.count == 0 && r.bytes == 0 && r.iov[0].iov_base == nullptr &&
         r.iov[0].iov_len == 0 && r.iov[1].iov_base == nullptr && r.iov[1].iov_len == 0;
}

bool AllBytesAre(const std::byte* p, size_t n, std::byte value) {
  return std::all_of(p, p + n, [value](std::byte b) { return b == value; });
}

TEST_CASE("producer reports corrupt when the consumer index puts the fill level above the size",
          "[ring][hostile]") {
  const uint32_t size = GENERATE(64u, 4096u);
  GuardedArea src(size);
  std::memset(src.data(), 0xAB, size);
  TestRing ring(size);
  for (const uint32_t prod : kOwnIndices) {
    for (const uint32_t used : Distances(size)) {
      INFO("ring " << size << ", prod " << prod << ", prod - cons " << used);
      ring.SetIndices(prod, prod - used);
      std::memset(ring.data(), 0, size);
      Producer p(ring.refs());

      const Regions r = p.Reserve();
      const int64_t wrote = p.Write(src.data(), size);
      if (used > size) {
        CHECK(IsCorruptAndEmpty(r));
        CHECK(wrote == -1);
        CHECK(AllBytesAre(ring.data(), size, std::byte{0}));  // nothing was copied in
        CHECK(ring.prod().load() == prod);
      } else {
        CHECK_FALSE(r.corrupt);
        CHECK(r.bytes == size - used);
        CHECK(RegionsInside(r, ring.data(), size));
        CHECK(wrote == size - used);
        CHECK(ring.prod().load() == prod + (size - used));
      }
    }
  }
}

TEST_CASE("consumer reports corrupt when the producer index is beyond cons plus the size",
          "[ring][hostile]") {
  const uint32_t size = GENERATE(64u, 4096u);
  GuardedArea dst(size);
  TestRing ring(size);
  for (const uint32_t cons : kOwnIndices) {
    for (const uint32_t avail : Distances(size)) {
      INFO("ring " << size << ", cons " << cons << ", prod - cons " << avail);
      ring.SetIndices(cons + avail, cons);
      Consumer c(ring.refs());
      std::memset(dst.data(), 0xCD, size);

      const Regions r = c.Peek();
      const int64_t got = c.Read(dst.data(), size);
      if (avail > size) {
        CHECK(IsCorruptAndEmpty(r));
        CHECK(got == -1);
        CHECK(AllBytesAre(dst.data(), size, std::byte{0xCD}));  // nothing was copied out
        CHECK(ring.cons().load() == cons);
      } else {
        CHECK_FALSE(r.corrupt);
        CHECK(r.bytes == avail);
        CHECK(RegionsInside(r, ring.data(), size));
        CHECK(got == avail);
        CHECK(ring.cons().load() == cons + avail);
      }
    }
  }
}

TEST_CASE("a corrupt reading does not stick once the peer index is sane again", "[ring][hostile]") {
  // Recovery policy belongs to the layer above (xsockd resets the socket); the ring itself
  // just reports each reading as it finds it.
  TestRing ring(64);
  Consumer c(ring.refs());
  ring.prod().store(65);
  CHECK(c.Peek().corrupt);
  ring.prod().store(3);
  const Regions r = c.Peek();
  CHECK_FALSE(r.corrupt);
  CHECK(r.bytes == 3);
}

TEST_CASE("any pair of indices yields corrupt or regions inside the data area", "[ring][hostile]") {
  // Random pairs, biased towards the edges, for both views; the views are built over the
  // shared indices as found, so a garbage own index is covered as well.
  const uint32_t size = GENERATE(2u, 64u, 4096u);
  Rng rng(size);
  TestRing ring(size);
  GuardedArea buf(size);
  std::memset(buf.data(), 0x11, size);
  for (int i = 0; i < 20000; ++i) {
    const uint32_t a = static_cast<uint32_t>(rng.Next());
    uint32_t b = static_cast<uint32_t>(rng.Next());
    switch (rng.Below(4)) {
      case 0:
        b = a + static_cast<uint32_t>(rng.Below(2 * uint64_t{size} + 2));
        break;
      case 1:
        b = a - static_cast<uint32_t>(rng.Below(2 * uint64_t{size} + 2));
        break;
      default:
        break;
    }
    INFO("ring " << size << ", prod " << b << ", cons " << a);
    ring.SetIndices(b, a);
    const bool legal = b - a <= size;
    Producer p(ring.refs());
    Consumer c(ring.refs());
    const Regions space = p.Reserve(static_cast<uint32_t>(rng.Below(2 * uint64_t{size})));
    const Regions data = c.Peek(static_cast<uint32_t>(rng.Below(2 * uint64_t{size})));
    REQUIRE(space.corrupt == !legal);
    REQUIRE(data.corrupt == !legal);
    REQUIRE((legal ? RegionsInside(space, ring.data(), size) : IsCorruptAndEmpty(space)));
    REQUIRE((legal ? RegionsInside(data, ring.data(), size) : IsCorruptAndEmpty(data)));
    // Exercise the copies too: an out-of-bounds one would fault on a guard page.
    const int64_t read = c.Read(buf.data(), size);
    const int64_t wrote = p.Write(buf.data(), size);
    REQUIRE((legal ? read == int64_t{b - a} : read == -1));
    REQUIRE((legal ? wrote >= 0 && wrote <= size : wrote == -1));
  }
}

// What one victim operation saw.
enum class Reading { kLegal, kCorrupt, kOutOfBounds };

struct HostileCounts {
  uint64_t legal = 0;
  uint64_t corrupt = 0;
  uint64_t out_of_bounds = 0;
};

// Runs `step` (one ring operation returning a Reading) over and over while another thread
// keeps storing values into `peer_index`: a peer that rewrites its index at any moment,
// including between any two reads the victim could make. Values are mostly own +/- d for
// d in [0, 2 * size + 1] (`ahead` says which sign makes d the fill level), so legal and
// just-illegal readings both occur, and now and then anything at all. Runs until both
// kinds were seen often (the peer may be descheduled for long stretches on a busy
// machine), bounded by an iteration cap.
template <typename Step>
HostileCounts RunAgainstHostilePeer(std::atomic<uint32_t>& peer_index,
                                    const std::atomic<uint32_t>& own_index, bool ahead,
                                    uint32_t size, uint64_t seed, Step step) {
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> stores{0};
  std::thread peer([&] {
    Rng rng(seed);
    while (!stop.load(std::memory_order_relaxed)) {
      const uint32_t own = own_index.load(std::memory_order_relaxed);
      const uint32_t d = static_cast<uint32_t>(rng.Below(2 * uint64_t{size} + 2));
      const uint32_t v =
          rng.Below(8) == 0 ? static_cast<uint32_t>(rng.Next()) : (ahead ? own + d : own - d);
      peer_index.store(v, std::memory_order_release);
      stores.fetch_add(1, std::memory_order_relaxed);
    }
  });
  HostileCounts counts;
  for (uint64_t i = 0; i < 20'000'000; ++i) {
    switch (step()) {
      case Reading::kLegal:
        ++counts.legal;
        break;
      case Reading::kCorrupt:
        ++counts.corrupt;
        break;
      case Reading::kOutOfBounds:
        ++counts.out_of_bounds;
        break;
    }
    if (i >= 100'000 && counts.legal >= 10'000 && counts.corrupt >= 10'000) break;
    if (i % 256 == 0) std::this_thread::yield();  // let the peer run on a busy machine
  }
  stop.store(true);
  peer.join();
  INFO("peer stores: " << stores.load());
  return counts;
}

TEST_CASE("a producer index rewritten during reads never leads to a copy outside the ring",
          "[ring][hostile]") {
  const uint32_t size = GENERATE(64u, 4096u);
  TestRing ring(size);
  GuardedArea dst(2 * size);  // the destination is guarded too
  Consumer c(ring.refs());
  Rng rng(size + 1);
  const HostileCounts counts =
      RunAgainstHostilePeer(ring.prod(), ring.cons(), /*ahead=*/true, size, size, [&] {
        const uint32_t want = static_cast<uint32_t>(rng.Below(2 * uint64_t{size} + 1));
        if (rng.Below(2) == 0) {
          const int64_t n = c.Read(dst.data(), want);
          if (n < 0) return Reading::kCorrupt;
          return n > want || n > size ? Reading::kOutOfBounds : Reading::kLegal;
        }
        const Regions r = c.Peek(want);
        if (r.corrupt) return IsCorruptAndEmpty(r) ? Reading::kCorrupt : Reading::kOutOfBounds;
        if (!RegionsInside(r, ring.data(), size) || r.bytes > want) return Reading::kOutOfBounds;
        for (int k = 0; k < r.count; ++k) {
          std::memcpy(dst.data(), r.iov[k].iov_base, r.iov[k].iov_len);
        }
        c.Release(r.bytes);
        return Reading::kLegal;
      });
  INFO("ring " << size << ": " << counts.legal << " legal, " << counts.corrupt << " corrupt");
  CHECK(counts.out_of_bounds == 0);
  CHECK(counts.corrupt > 0);  // the hostile values were in fact seen...
  CHECK(counts.legal > 0);    // ...and so were plausible ones
}

TEST_CASE("a consumer index rewritten during writes never leads to a copy outside the ring",
          "[ring][hostile]") {
  const uint32_t size = GENERATE(64u, 4096u);
  TestRing ring(size);
  GuardedArea src(2 * size);  // the source is guarded too
  std::memset(src.data(), 0x5A, 2 * size);
  Producer p(ring.refs());
  Rng rng(size + 2);
  const HostileCounts counts =
      RunAgainstHostilePeer(ring.cons(), ring.prod(), /*ahead=*/false, size, size * 3, [&] {
        const uint32_t want = static_cast<uint32_t>(rng.Below(2 * uint64_t{size} + 1));
        if (rng.Below(2) == 0) {
          const int64_t n = p.Write(src.data(), want);
          if (n < 0) return Reading::kCorrupt;
          return n > want || n > size ? Reading::kOutOfBounds : Reading::kLegal;
        }
        const Regions r = p.Reserve(want);
        if (r.corrupt) return IsCorruptAndEmpty(r) ? Reading::kCorrupt : Reading::kOutOfBounds;
        if (!RegionsInside(r, ring.data(), size) || r.bytes > want) return Reading::kOutOfBounds;
        for (int k = 0; k < r.count; ++k) std::memset(r.iov[k].iov_base, 0xA5, r.iov[k].iov_len);
        p.Commit(r.bytes);
        return Reading::kLegal;
      });
  INFO("ring " << size << ": " << counts.legal << " legal, " << counts.corrupt << " corrupt");
  CHECK(counts.out_of_bounds == 0);
  CHECK(counts.corrupt > 0);
  CHECK(counts.legal > 0);
}

}  // namespace
}  // namespace xsock::ring::test
