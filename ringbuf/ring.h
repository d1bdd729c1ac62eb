// Single-producer/single-consumer byte ring over caller-provided memory.
//
// The ring knows nothing about sockets or processes: it is a pair of free-running 32-bit
// indices, an error word and a power-of-two data area, all of which may live in pages
// shared with an untrusted peer. See ringbuf/README.md for the layout, the table of
// acquire/release pairs and the trust model.
#pragma once

#include <sys/uio.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace xsock::ring {

// Where one direction's state lives. Every pointer may point into shared memory.
struct RingRefs {
  std::atomic<uint32_t>* cons = nullptr;  // written by the consumer only
  std::atomic<uint32_t>* prod = nullptr;  // written by the producer only
  // Written by one side only: the producer (Producer::SetError) or the consumer
  // (Consumer::SetError), as the layer above decides for each direction. PVCalls has the
  // backend write both: in_error as producer of in, out_error as consumer of out.
  std::atomic<int32_t>* error = nullptr;
  std::byte* data = nullptr;
  uint32_t size = 0;  // power of two, at least 2
};

constexpr bool IsValidSize(uint64_t size) {
  return size >= 2 && size <= (uint64_t{1} << 31) && (size & (size - 1)) == 0;
}

// Up to two contiguous pieces of the data area (the second one exists when the span wraps).
struct Regions {
  iovec iov[2] = {};
  int count = 0;
  uint32_t bytes = 0;
  // The peer's index was impossible (prod - cons > size). No region is returned then.
  bool corrupt = false;
};

namespace detail {
inline Regions Split(std::byte* data, uint32_t size, uint32_t start, uint32_t len) {
  Regions r;
  r.bytes = len;
  if (len == 0) return r;
  const uint32_t off = start & (size - 1);
  const uint32_t first = len < size - off ? len : size - off;
  r.iov[0] = {data + off, first};
  r.count = 1;
  if (first < len) {
    r.iov[1] = {data, static_cast<size_t>(len - first)};
    r.count = 2;
  }
  return r;
}
}  // namespace detail

// The producer's view. Its own index is cached privately: it is read from shared memory
// once, at construction, and afterwards only written. A side that shares the producer
// role with other processes (under a lock) constructs a fresh view for each operation.
class Producer {
 public:
  explicit Producer(const RingRefs& refs)
      : r_(refs), prod_(refs.prod->load(std::memory_order_relaxed)) {}

  // Free space, as regions to fill in place. Nothing is published until Commit().
  Regions Reserve(uint32_t max = UINT32_MAX) const {
    // Acquire pairs with the consumer's release-store of cons in Consumer::Release(): the
    // consumer has finished reading bytes before we may overwrite them.
    const uint32_t cons = r_.cons->load(std::memory_order_acquire);
    const uint32_t used = prod_ - cons;
    if (used > r_.size) {
      Regions bad;
      bad.corrupt = true;
      return bad;
    }
    uint32_t free = r_.size - used;
    if (free > max) free = max;
    return detail::Split(r_.data, r_.size, prod_, free);
  }

  // Publishes n bytes written into the regions of the last Reserve(). n must not exceed
  // what that Reserve() returned.
  void Commit(uint32_t n) {
    prod_ += n;
    // Release pairs with the consumer's acquire-load of prod in Consumer::Peek(): the bytes
    // are visible before the index that covers them.
    r_.prod->store(prod_, std::memory_order_release);
  }

  // Copies up to len bytes in. Returns the count copied, or -1 if the peer index is corrupt.
  int64_t Write(const void* src, size_t len) {
    const uint32_t want = len > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(len);
    const Regions r = Reserve(want);
    if (r.corrupt) return -1;
    const auto* p = static_cast<const std::byte*>(src);
    for (int i = 0; i < r.count; ++i) {
      std::memcpy(r.iov[i].iov_base, p, r.iov[i].iov_len);
      p += r.iov[i].iov_len;
    }
    if (r.bytes) Commit(r.bytes);
    return r.bytes;
  }

  // Producer-to-consumer error word (0: none). Written after the data it follows.
  void SetError(int32_t err) {
    // Release pairs with the consumer's acquire-load in Consumer::Error(): every byte
    // published before the error is visible to a consumer that sees the error.
    r_.error->store(err, std::memory_order_release);
  }

  // The error word when the consumer writes it (e.g. "the bytes you send are dropped").
  int32_t Error() const {
    // Acquire pairs with the consumer's release-store in Consumer::SetError().
    return r_.error->load(std::memory_order_acquire);
  }

  uint32_t prod() const { return prod_; }
  uint32_t size() const { return r_.size; }

 private:
  RingRefs r_;
  uint32_t prod_;
};

// The consumer's view; same caching rule as Producer.
class Consumer {
 public:
  explicit Consumer(const RingRefs& refs)
      : r_(refs), cons_(refs.cons->load(std::memory_order_relaxed)) {}

  // Filled bytes, as regions to read in place. Nothing is released until Release().
  Regions Peek(uint32_t max = UINT32_MAX) const {
    // Acquire pairs with the producer's release-store of prod in Producer::Commit().
    const uint32_t prod = r_.prod->load(std::memory_order_acquire);
    const uint32_t avail = prod - cons_;
    if (avail > r_.size) {
      Regions bad;
      bad.corrupt = true;
      return bad;
    }
    return detail::Split(r_.data, r_.size, cons_, avail < max ? avail : max);
  }

  // Gives n bytes of the last Peek() back to the producer.
  void Release(uint32_t n) {
    cons_ += n;
    // Release pairs with the producer's acquire-load of cons in Producer::Reserve().
    r_.cons->store(cons_, std::memory_order_release);
  }

  // Copies up to len bytes out. Returns the count copied, or -1 if the peer index is corrupt.
  int64_t Read(void* dst, size_t len) {
    const uint32_t want = len > UINT32_MAX ? UINT32_MAX : static_cast<uint32_t>(len);
    const Regions r = Peek(want);
    if (r.corrupt) return -1;
    auto* p = static_cast<std::byte*>(dst);
    for (int i = 0; i < r.count; ++i) {
      std::memcpy(p, r.iov[i].iov_base, r.iov[i].iov_len);
      p += r.iov[i].iov_len;
    }
    if (r.bytes) Release(r.bytes);
    return r.bytes;
  }

  // The producer's error word. Read it BEFORE Peek(): an error read first means every byte
  // published before it is visible to that Peek(), so "error set, then ring empty" is the
  // end of the stream. (An empty Peek() followed by a set error proves nothing: the last
  // bytes and the error may both have been published in between.)
  int32_t Error() const {
    // Acquire pairs with the producer's release-store in Producer::SetError().
    return r_.error->load(std::memory_order_acquire);
  }

  // Consumer-to-producer error word (0: none), for a direction whose consumer reports.
  void SetError(int32_t err) {
    // Release pairs with the producer's acquire-load in Producer::Error().
    r_.error->store(err, std::memory_order_release);
  }

  uint32_t cons() const { return cons_; }
  uint32_t size() const { return r_.size; }

 private:
  RingRefs r_;
  uint32_t cons_;
};

}  // namespace xsock::ring
