#include "bench/net/net_common.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>

namespace xsock::bench {

uint64_t NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(ts.tv_nsec);
}

bool SendAll(int fd, const void* buf, size_t len) {
  const auto* p = static_cast<const char*>(buf);
  while (len > 0) {
    const ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    p += n;
    len -= static_cast<size_t>(n);
  }
  return true;
}

ssize_t RecvAll(int fd, void* buf, size_t len) {
  auto* p = static_cast<char*>(buf);
  size_t got = 0;
  while (got < len) {
    const ssize_t n = recv(fd, p + got, len - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (n == 0) break;
    got += static_cast<size_t>(n);
  }
  return static_cast<ssize_t>(got);
}

std::optional<sockaddr_storage> MakeAddress(const std::string& host, uint16_t port,
                                            socklen_t* len) {
  sockaddr_storage ss = {};
  auto* v4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* v6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, host.c_str(), &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons(port);
    *len = sizeof(sockaddr_in);
    return ss;
  }
  if (inet_pton(AF_INET6, host.c_str(), &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons(port);
    *len = sizeof(sockaddr_in6);
    return ss;
  }
  return std::nullopt;
}

void SetNoDelay(int fd) {
  const int one = 1;
  // Best effort: a transport that ignores the option still gives a valid (slower) result.
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

std::optional<std::string> Args::Get(const std::string& name) const {
  for (size_t i = 0; i + 1 < args_.size(); ++i) {
    if (args_[i] == name) return args_[i + 1];
  }
  return std::nullopt;
}

bool Args::Has(const std::string& name) const {
  return std::find(args_.begin(), args_.end(), name) != args_.end();
}

uint64_t Args::GetU64(const std::string& name, uint64_t fallback) const {
  const auto value = Get(name);
  if (!value) return fallback;
  char* end = nullptr;
  errno = 0;
  const unsigned long long n = std::strtoull(value->c_str(), &end, 10);
  if (errno != 0 || end == value->c_str() || *end != '\0' || (*value)[0] == '-') {
    Die(name + ": not an unsigned number: '" + *value + "'");
  }
  return n;
}

double Args::GetDouble(const std::string& name, double fallback) const {
  const auto value = Get(name);
  if (!value) return fallback;
  char* end = nullptr;
  errno = 0;
  const double d = std::strtod(value->c_str(), &end);
  if (errno != 0 || end == value->c_str() || *end != '\0' || d < 0) {
    Die(name + ": not a non-negative number: '" + *value + "'");
  }
  return d;
}

void Args::RejectUnknown(const std::vector<std::string>& with_value,
                         const std::vector<std::string>& flags) const {
  auto known = [](const std::vector<std::string>& list, const std::string& a) {
    return std::find(list.begin(), list.end(), a) != list.end();
  };
  for (size_t i = 0; i < args_.size(); ++i) {
    if (known(flags, args_[i])) continue;
    if (known(with_value, args_[i])) {
      if (i + 1 == args_.size()) Die(args_[i] + ": missing value");
      ++i;
      continue;
    }
    Die("unknown argument '" + args_[i] + "' (try --help)");
  }
}

void Die(const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", program_invocation_short_name, message.c_str());
  std::exit(2);
}

}  // namespace xsock::bench
