// Helpers shared by the ring tests and stress tests: fault-on-overrun memory for the data
// area, a ring that owns its indices, a deterministic byte stream and a running hash that
// does not depend on how the stream is chunked.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <stdexcept>

#include "ringbuf/ring.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define XSOCK_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/asan_interface.h>
#define XSOCK_TEST_ASAN 1
#endif
#endif

namespace xsock::ring::test {

// `bytes` of memory that end exactly at an inaccessible guard page, with another guard page
// in front: any access past the end faults in every build, and so does any access before
// the start when `bytes` is a multiple of the page size. Under AddressSanitizer the slack
// between the front guard and the start is poisoned as well, so small areas are covered
// on both sides.
class GuardedArea {
 public:
  explicit GuardedArea(size_t bytes) : bytes_(bytes) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t body = (bytes + page - 1) / page * page;
    map_len_ = body + 2 * page;
    void* m = mmap(nullptr, map_len_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) throw std::runtime_error("mmap of guarded area failed");
    map_ = static_cast<std::byte*>(m);
    if (mprotect(map_ + page, body, PROT_READ | PROT_WRITE) != 0) {
      munmap(map_, map_len_);
      throw std::runtime_error("mprotect of guarded area failed");
    }
    data_ = map_ + page + (body - bytes);
    slack_ = map_ + page;
    slack_len_ = body - bytes;
#ifdef XSOCK_TEST_ASAN
    ASAN_POISON_MEMORY_REGION(slack_, slack_len_);
#endif
  }
  ~GuardedArea() {
#ifdef XSOCK_TEST_ASAN
    ASAN_UNPOISON_MEMORY_REGION(slack_, slack_len_);
#endif
    munmap(map_, map_len_);
  }
  GuardedArea(const GuardedArea&) = delete;
  GuardedArea& operator=(const GuardedArea&) = delete;

  std::byte* data() const { return data_; }
  size_t size() const { return bytes_; }

 private:
  size_t bytes_;
  std::byte* map_ = nullptr;
  size_t map_len_ = 0;
  std::byte* data_ = nullptr;
  std::byte* slack_ = nullptr;
  size_t slack_len_ = 0;
};

// Index words laid out as in shared/socket_page.h: each on its own cache line.
struct alignas(64) IndexLine {
  std::atomic<uint32_t> value{0};
};
struct alignas(64) ErrorLine {
  std::atomic<int32_t> value{0};
};

// One ring direction with private indices and a guarded data area.
class TestRing {
 public:
  explicit TestRing(uint32_t size) : area_(size) {
    if (!IsValidSize(size)) throw std::invalid_argument("ring size");
  }

  RingRefs refs() {
    return {&cons_.value, &prod_.value, &error_.value, area_.data(),
            static_cast<uint32_t>(area_.size())};
  }
  // Sets both shared indices, as a peer (or a fresh ring) would have left them.
  void SetIndices(uint32_t prod, uint32_t cons) {
    prod_.value.store(prod);
    cons_.value.store(cons);
  }
  std::atomic<uint32_t>& prod() { return prod_.value; }
  std::atomic<uint32_t>& cons() { return cons_.value; }
  std::atomic<int32_t>& error() { return error_.value; }
  std::byte* data() const { return area_.data(); }
  uint32_t size() const { return static_cast<uint32_t>(area_.size()); }

 private:
  IndexLine cons_;
  IndexLine prod_;
  ErrorLine error_;
  GuardedArea area_;
};

// True if every region lies inside [data, data + size) and the lengths add up to bytes.
inline bool RegionsInside(const Regions& r, const std::byte* data, uint32_t size) {
  if (r.count < 0 || r.count > 2) return false;
  uint64_t total = 0;
  for (int i = 0; i < r.count; ++i) {
    const auto* base = static_cast<const std::byte*>(r.iov[i].iov_base);
    if (base < data || r.iov[i].iov_len > size) return false;
    if (static_cast<size_t>(base - data) + r.iov[i].iov_len > size) return false;
    total += r.iov[i].iov_len;
  }
  return total == r.bytes && r.bytes <= size;
}

// splitmix64's finaliser: a bijection of 64-bit words that mixes every bit.
inline uint64_t Mix64(uint64_t x) {
  x ^= x >> 30;
  x *= 0xBF58476D1CE4E5B9ull;
  x ^= x >> 27;
  x *= 0x94D049BB133111EBull;
  x ^= x >> 31;
  return x;
}

// Small deterministic generator for chunk sizes and choices.
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t Next() { return Mix64(state_ += 0x9E3779B97F4A7C15ull); }
  // Uniform in [0, n), n > 0 (the modulo bias is irrelevant here).
  uint64_t Below(uint64_t n) { return Next() % n; }
  // In [1, max], log-uniform: small chunks are as common as large ones, and max itself
  // occurs, so both "one byte" and "the whole ring" paths run often.
  uint32_t ChunkSize(uint32_t max) {
    uint32_t bits = 0;
    while ((uint64_t{1} << (bits + 1)) <= max) ++bits;
    const uint64_t span = uint64_t{1} << Below(bits + 1);
    const uint64_t n = 1 + Below(span);
    return static_cast<uint32_t>(n > max ? max : n);
  }

 private:
  uint64_t state_;
};

// The deterministic test stream `seed`: byte i is byte (i % 8) of Mix64(seed + i / 8). It
// depends only on the position, so any chunking of writes produces the same stream.
class StreamWriter {
 public:
  explicit StreamWriter(uint64_t seed, uint64_t pos = 0) : seed_(seed), pos_(pos) {}

  void Fill(std::byte* dst, size_t n) {
    while (n > 0) {
      const uint64_t word = Mix64(seed_ + (pos_ >> 3));
      const size_t off = pos_ & 7;
      if (off == 0 && n >= 8) {  // the common case, with a fixed-size copy
        std::memcpy(dst, &word, 8);
        dst += 8;
        n -= 8;
        pos_ += 8;
        continue;
      }
      const size_t take = n < 8 - off ? n : 8 - off;
      std::memcpy(dst, reinterpret_cast<const std::byte*>(&word) + off, take);
      dst += take;
      n -= take;
      pos_ += take;
    }
  }
  uint64_t pos() const { return pos_; }

 private:
  uint64_t seed_;
  uint64_t pos_;
};

// Order-sensitive 64-bit running hash over a byte stream, independent of chunking: bytes
// are gathered into little-endian words and each full word is mixed into the state.
class StreamHash {
 public:
  void Update(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    length_ += n;
    while (carried_ != 0 && n > 0) {
      Take(*p++);
      --n;
    }
    while (n >= 8) {
      uint64_t w;
      std::memcpy(&w, p, 8);
      state_ = Mix64(state_ ^ w);
      p += 8;
      n -= 8;
    }
    while (n > 0) {
      Take(*p++);
      --n;
    }
  }
  // The hash of everything so far (the state is not changed).
  uint64_t Digest() const { return Mix64(Mix64(state_ ^ carry_) ^ length_); }
  uint64_t length() const { return length_; }

 private:
  void Take(unsigned char b) {
    carry_ |= uint64_t{b} << (8 * carried_);
    if (++carried_ == 8) {
      state_ = Mix64(state_ ^ carry_);
      carry_ = 0;
      carried_ = 0;
    }
  }

  uint64_t state_ = 0x243F6A8885A308D3ull;
  uint64_t carry_ = 0;
  unsigned carried_ = 0;
  uint64_t length_ = 0;
};

}  // namespace xsock::ring::test
