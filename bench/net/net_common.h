// Pieces shared by the benchmark's server and client: the wire convention between them,
// blocking I/O helpers and a small argument reader. Deliberately plain libc calls, so the
// client exercises exactly what an unmodified program would under LD_PRELOAD.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace xsock::bench {

// The client's first byte selects what the server does with the connection.
inline constexpr char kModeSink = 'S';    // read and discard; at EOF reply with the count
inline constexpr char kModeEchoRr = 'E';  // echo every byte back as it arrives

// In sink mode the server answers the client's SHUT_WR with the number of bytes it read
// (after the mode byte) as this many bytes, little-endian.
inline constexpr size_t kSinkCountBytes = 8;

// Monotonic time in nanoseconds.
uint64_t NowNs();

// Sends all of buf; retries EINTR and short writes. Returns false with errno set on error.
bool SendAll(int fd, const void* buf, size_t len);

// Reads exactly len bytes. Returns len, or fewer at EOF, or -1 with errno set.
ssize_t RecvAll(int fd, void* buf, size_t len);

// A numeric IPv4 or IPv6 address and port ("127.0.0.1", 5201). Empty on a bad address.
std::optional<sockaddr_storage> MakeAddress(const std::string& host, uint16_t port, socklen_t* len);

// Sets TCP_NODELAY, so 1-byte round trips are not held back by Nagle's algorithm.
void SetNoDelay(int fd);

// "--name value" options in argv order; a malformed command line is reported by the caller.
class Args {
 public:
  Args(int argc, char** argv) : args_(argv + 1, argv + argc) {}

  // The value after `name`, if present.
  std::optional<std::string> Get(const std::string& name) const;
  // True if the bare flag `name` is present.
  bool Has(const std::string& name) const;
  // The value after `name` as an unsigned number; `fallback` if absent. Exits with a
  // message naming the option if the value is not a number.
  uint64_t GetU64(const std::string& name, uint64_t fallback) const;
  double GetDouble(const std::string& name, double fallback) const;
  // Exits with a message if any argument is not in `known` (flags and value options).
  void RejectUnknown(const std::vector<std::string>& with_value,
                     const std::vector<std::string>& flags) const;

 private:
  std::vector<std::string> args_;
};

// Prints "PROGRAM: message" to stderr and exits with status 2.
[[noreturn]] void Die(const std::string& message);

}  // namespace xsock::bench
