// The two ends of a stress stream, shared by the two-thread and two-process stress tests.
// Each end moves the deterministic stream of ring_test_support.h through a ring in random
// chunk sizes, alternating the zero-copy and copy APIs, and keeps a running hash of what
// it wrote or read. Steps never block, so one thread can drive several ends (a process
// that produces one direction and consumes the other, as xsockd does).
#pragma once

#include <sched.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "ringbuf/ring.h"
#include "tests/ringbuf/ring_test_support.h"

namespace xsock::ring::test {

// Error word value the producer sets after its last byte.
inline constexpr int32_t kStreamEnd = 1;

// One end of a stream.
class StreamEnd {
 public:
  virtual ~StreamEnd() = default;
  // Moves what it can without waiting: bytes moved (0: nothing possible now), or -1 with
  // failure() set.
  virtual int64_t Step() = 0;
  virtual bool done() const = 0;
  const std::string& failure() const { return failure_; }
  uint64_t bytes() const { return hash_.length(); }
  uint64_t hash() const { return hash_.Digest(); }

 protected:
  int64_t Fail(std::string why) {
    failure_ = std::move(why);
    return -1;
  }
  StreamHash hash_;
  std::string failure_;
};

// Writes `total` bytes of stream `seed`, then sets the error word to kStreamEnd.
class StreamProducer : public StreamEnd {
 public:
  StreamProducer(const RingRefs& refs, uint64_t seed, uint64_t total, uint64_t chunk_seed)
      : p_(refs), gen_(seed), rng_(chunk_seed), staging_(refs.size), total_(total) {}

  int64_t Step() override {
    if (done_) return 0;
    if (sent_ == total_) {
      p_.SetError(kStreamEnd);  // after the data: see Consumer::Error()
      done_ = true;
      return 0;
    }
    if (left_ == 0) NextChunk();
    return zero_copy_ ? StepZeroCopy() : StepCopy();
  }
  bool done() const override { return done_; }

 private:
  void NextChunk() {
    const uint64_t remaining = total_ - sent_;
    const uint32_t want = rng_.ChunkSize(p_.size());
    left_ = want < remaining ? want : static_cast<uint32_t>(remaining);
    zero_copy_ = rng_.Below(2) == 0;
    if (!zero_copy_) {
      gen_.Fill(staging_.data(), left_);
      hash_.Update(staging_.data(), left_);
      staged_ = 0;
    }
  }

  int64_t StepZeroCopy() {
    const Regions r = p_.Reserve(left_);
    if (r.corrupt) return Fail("producer: Reserve reported a corrupt consumer index");
    if (r.bytes == 0) return 0;
    // Sometimes fill only part of the reservation, as a short recv() into it would.
    uint32_t n = r.bytes;
    if (rng_.Below(4) == 0) n = 1 + static_cast<uint32_t>(rng_.Below(n));
    uint32_t todo = n;
    for (int i = 0; i < r.count && todo > 0; ++i) {
      auto* base = static_cast<std::byte*>(r.iov[i].iov_base);
      const uint32_t take = todo < r.iov[i].iov_len ? todo : r.iov[i].iov_len;
      gen_.Fill(base, take);
      hash_.Update(base, take);
      todo -= take;
    }
    p_.Commit(n);
    return Advance(n);
  }

  int64_t StepCopy() {
    const int64_t n = p_.Write(staging_.data() + staged_, left_);
    if (n < 0) return Fail("producer: Write reported a corrupt consumer index");
    if (n > left_) return Fail("producer: Write took more than asked");
    staged_ += static_cast<uint32_t>(n);
    return Advance(static_cast<uint32_t>(n));
  }

  int64_t Advance(uint32_t n) {
    left_ -= n;
    sent_ += n;
    return n;
  }

  Producer p_;
  StreamWriter gen_;
  Rng rng_;
  std::vector<std::byte> staging_;
  uint64_t total_;
  uint64_t sent_ = 0;
  uint32_t left_ = 0;  // of the current chunk
  uint32_t staged_ = 0;
  bool zero_copy_ = false;
  bool done_ = false;
};

// Reads until the ring is empty after the producer's kStreamEnd; fails on more than
// `total` bytes, an unexpected error word or a corrupt index.
class StreamConsumer : public StreamEnd {
 public:
  StreamConsumer(const RingRefs& refs, uint64_t total, uint64_t chunk_seed)
      : c_(refs), rng_(chunk_seed), staging_(refs.size), total_(total) {}

  int64_t Step() override {
    if (done_) return 0;
    const int32_t err = c_.Error();  // before looking at the ring: see Consumer::Error()
    if (left_ == 0) NextChunk();
    const int64_t n = peek_ ? StepPeek() : StepRead();
    if (n == 0) return Idle(err);
    if (n > 0 && bytes() > total_) return Fail("consumer: more bytes than were sent");
    return n;
  }
  bool done() const override { return done_; }

 private:
  void NextChunk() {
    left_ = rng_.ChunkSize(c_.size());
    peek_ = rng_.Below(2) == 0;
  }

  int64_t StepPeek() {
    const Regions r = c_.Peek(left_);
    if (r.corrupt) return Fail("consumer: Peek reported a corrupt producer index");
    if (r.bytes == 0) return 0;
    // Sometimes release only part, as a short send() from the regions would.
    uint32_t n = r.bytes;
    if (rng_.Below(4) == 0) n = 1 + static_cast<uint32_t>(rng_.Below(n));
    uint32_t todo = n;
    for (int i = 0; i < r.count && todo > 0; ++i) {
      const uint32_t take = todo < r.iov[i].iov_len ? todo : r.iov[i].iov_len;
      hash_.Update(r.iov[i].iov_base, take);
      todo -= take;
    }
    c_.Release(n);
    left_ -= n;
    return n;
  }

  int64_t StepRead() {
    const int64_t n = c_.Read(staging_.data(), left_);
    if (n < 0) return Fail("consumer: Read reported a corrupt producer index");
    if (n > left_) return Fail("consumer: Read returned more than asked");
    hash_.Update(staging_.data(), static_cast<size_t>(n));
    left_ -= static_cast<uint32_t>(n);
    return n;
  }

  // The ring was empty; `err` was read before looking, so it covers every byte.
  int64_t Idle(int32_t err) {
    if (err == 0) return 0;
    if (err != kStreamEnd) return Fail("consumer: unexpected error word " + std::to_string(err));
    if (bytes() != total_) {
      return Fail("consumer: stream ended after " + std::to_string(bytes()) + " of " +
                  std::to_string(total_) + " bytes");
    }
    done_ = true;
    return 0;
  }

  Consumer c_;
  Rng rng_;
  std::vector<std::byte> staging_;
  uint64_t total_;
  uint32_t left_ = 0;
  bool peek_ = false;
  bool done_ = false;
};

// Outcome of Drive(): ok, or why not.
struct DriveResult {
  bool ok = false;
  std::string failure;
};

// A driver that has moved nothing for this long is stuck (a deadlock, or a peer that
// stopped without failing); it fails then instead of waiting for its overall deadline.
inline constexpr std::chrono::seconds kStallLimit{60};

// Steps `ends` until all are done, spinning briefly and then yielding while none can move.
// Gives up at `deadline`, after kStallLimit without progress, when `abort` becomes non-zero
// (set by whichever driver fails first, so its peer stops too), or when `peer_alive`
// (polled while idle) says the other side is gone and one more round moved nothing.
inline DriveResult Drive(std::initializer_list<StreamEnd*> ends,
                         std::chrono::steady_clock::time_point deadline,
                         std::atomic<uint32_t>* abort,
                         const std::function<bool()>& peer_alive = nullptr) {
  using Clock = std::chrono::steady_clock;
  DriveResult result;
  auto fail = [&](std::string why) {
    abort->store(1, std::memory_order_relaxed);
    result.failure = std::move(why);
    return result;
  };
  uint64_t idle = 0;
  uint64_t rounds = 0;
  bool peer_gone = false;
  bool moved_since_check = false;
  Clock::time_point last_progress = Clock::now();
  for (;;) {
    bool all_done = true;
    bool moved = false;
    for (StreamEnd* e : ends) {
      const int64_t n = e->Step();
      if (n < 0) return fail(e->failure());
      moved |= n > 0;
      all_done &= e->done();
    }
    if (all_done) {
      result.ok = true;
      return result;
    }
    if (abort->load(std::memory_order_relaxed) != 0) return fail("aborted: the peer failed");
    if (++rounds % 4096 == 0 && Clock::now() > deadline) return fail("timed out");
    if (moved) {
      idle = 0;
      moved_since_check = true;
      continue;
    }
    if (peer_gone) return fail("the peer is gone and nothing moves");
    ++idle;
    if (idle < 64) {
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#endif
      continue;
    }
    sched_yield();
    if (idle % 256 == 0) {
      const Clock::time_point now = Clock::now();
      if (now > deadline) return fail("timed out");
      if (moved_since_check) {
        last_progress = now;
        moved_since_check = false;
      } else if (now - last_progress > kStallLimit) {
        return fail("stalled: nothing moved for " + std::to_string(kStallLimit.count()) + " s");
      }
      if (peer_alive && !peer_alive()) peer_gone = true;
    }
  }
}

}  // namespace xsock::ring::test
