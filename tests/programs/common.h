// Helpers shared by the integration test programs: errno names, argument parsing, socket
// addresses, and the deterministic byte stream + order-sensitive hash that
// xsock-stream-check sends and verifies. Header-only: each program is one translation unit.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>

namespace xsock::testprog {

// "ECONNRESET" for ECONNRESET; "errno 4242" for values libc has no name for.
inline std::string ErrnoName(int err) {
  if (const char* name = strerrorname_np(err)) return name;
  return "errno " + std::to_string(err);
}

// Parses a non-negative integer with an optional binary suffix: 4096, 64K, 256M, 1G.
inline std::optional<uint64_t> ParseSize(const std::string& text) {
  if (text.empty() || text[0] < '0' || text[0] > '9') return std::nullopt;
  char* end = nullptr;
  errno = 0;
  const unsigned long long value = std::strtoull(text.c_str(), &end, 10);
  if (errno != 0) return std::nullopt;
  const std::string suffix(end);
  unsigned shift = 0;
  if (suffix.empty()) {
    shift = 0;
  } else if (suffix == "K" || suffix == "k" || suffix == "KiB") {
    shift = 10;
  } else if (suffix == "M" || suffix == "m" || suffix == "MiB") {
    shift = 20;
  } else if (suffix == "G" || suffix == "g" || suffix == "GiB") {
    shift = 30;
  } else {
    return std::nullopt;
  }
  if (shift != 0 && value > (UINT64_MAX >> shift)) return std::nullopt;
  return static_cast<uint64_t>(value) << shift;
}

// A TCP port number, 0..65535.
inline std::optional<uint16_t> ParsePort(const std::string& text) {
  const auto v = ParseSize(text);
  if (!v || *v > 65535 || text.find_first_not_of("0123456789") != std::string::npos) {
    return std::nullopt;
  }
  return static_cast<uint16_t>(*v);
}

// A numeric IPv4 or IPv6 address ("127.0.0.1", "::1", "[::1]") plus a port.
struct Endpoint {
  sockaddr_storage storage{};
  socklen_t len = 0;
  int family() const { return storage.ss_family; }
  const sockaddr* addr() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

inline std::optional<Endpoint> ParseEndpoint(std::string host, uint16_t port) {
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') {
    host = host.substr(1, host.size() - 2);
  }
  Endpoint ep;
  auto* in4 = reinterpret_cast<sockaddr_in*>(&ep.storage);
  if (inet_pton(AF_INET, host.c_str(), &in4->sin_addr) == 1) {
    in4->sin_family = AF_INET;
    in4->sin_port = htons(port);
    ep.len = sizeof(sockaddr_in);
    return ep;
  }
  auto* in6 = reinterpret_cast<sockaddr_in6*>(&ep.storage);
  if (inet_pton(AF_INET6, host.c_str(), &in6->sin6_addr) == 1) {
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    ep.len = sizeof(sockaddr_in6);
    return ep;
  }
  return std::nullopt;
}

// splitmix64: a fast generator whose whole output is fixed by the seed, so sender and
// verifier produce the same stream independently.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t seed) : state_(seed) {}
  uint64_t Next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform-enough integer in [lo, hi].
  uint64_t Between(uint64_t lo, uint64_t hi) { return lo + Next() % (hi - lo + 1); }

 private:
  uint64_t state_;
};

// The test stream: byte i is byte (i % 8) of the (i / 8)-th generator output. Filling
// buffers of any size in sequence yields the same bytes, whatever the chunking.
class ByteStream {
 public:
  explicit ByteStream(uint64_t seed) : gen_(seed) {}
  void Fill(unsigned char* out, size_t n) {
    // Rest of the current word, then whole words (little-endian, as the byte path), then
    // the start of the next word.
    while (n > 0 && left_ > 0) TakeByte(out, n);
    for (; n >= 8; out += 8, n -= 8) {
      const uint64_t w = gen_.Next();
      std::memcpy(out, &w, 8);
    }
    while (n > 0) {
      if (left_ == 0) {
        word_ = gen_.Next();
        left_ = 8;
      }
      TakeByte(out, n);
    }
  }

 private:
  void TakeByte(unsigned char*& out, size_t& n) {
    *out++ = static_cast<unsigned char>(word_);
    word_ >>= 8;
    --left_;
    --n;
  }

  SplitMix64 gen_;
  uint64_t word_ = 0;
  int left_ = 0;
};

// An order-sensitive 64-bit hash fed in pieces of any size: the result depends only on
// the concatenated bytes, so the sender's and the receiver's hash agree exactly when the
// receiver got the same bytes in the same order.
class StreamHash {
 public:
  void Update(const unsigned char* p, size_t n) {
    total_ += n;
    // Complete a partial word first, then whole words, then keep the tail.
    while (n > 0 && pending_ != 0) {
      word_ |= uint64_t{*p++} << (8 * pending_);
      --n;
      if (++pending_ == 8) Mix();
    }
    while (n >= 8) {
      std::memcpy(&word_, p, 8);
      pending_ = 8;
      Mix();
      p += 8;
      n -= 8;
    }
    while (n > 0) {
      word_ |= uint64_t{*p++} << (8 * pending_);
      --n;
      if (++pending_ == 8) Mix();
    }
  }
  uint64_t Digest() const {
    uint64_t h = state_ ^ (word_ * 0xFF51AFD7ED558CCDull) ^ (total_ * 0xC4CEB9FE1A85EC53ull);
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDull;
    h ^= h >> 33;
    return h;
  }
  uint64_t bytes() const { return total_; }

 private:
  void Mix() {
    state_ = (state_ ^ word_) * 0x9E3779B97F4A7C15ull;
    state_ = (state_ << 29) | (state_ >> 35);
    word_ = 0;
    pending_ = 0;
  }
  uint64_t state_ = 0x6A09E667F3BCC908ull;
  uint64_t word_ = 0;
  int pending_ = 0;
  uint64_t total_ = 0;
};

}  // namespace xsock::testprog
