// xsock-bench-connect: connect() calls per second to a loopback listener, the way an
// unmodified program makes them (socket, connect, close), so that running it with and
// without LD_PRELOAD=libxsock.so measures what the library's routing decision adds to a
// connect it does not route. The listener is a thread of this process that accepts and
// closes. The client side closes with SO_LINGER 0 (a reset, no TIME_WAIT), so runs of
// many thousands of connects do not run out of ephemeral ports.
//
// usage: xsock-bench-connect [--count N] [--warmup N] [--label L]
// One JSON line on stdout: {"label":..,"connects":N,"seconds":S,"per_second":R}.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "bench/net/net_common.h"

namespace {

using xsock::bench::Args;
using xsock::bench::Die;
using xsock::bench::NowNs;

int Listen(sockaddr_in* addr) {
  const int l = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (l < 0) Die(std::string("socket: ") + std::strerror(errno));
  *addr = {};
  addr->sin_family = AF_INET;
  addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof(*addr);
  if (bind(l, reinterpret_cast<sockaddr*>(addr), len) != 0 || listen(l, 1024) != 0 ||
      getsockname(l, reinterpret_cast<sockaddr*>(addr), &len) != 0) {
    Die(std::string("listener: ") + std::strerror(errno));
  }
  return l;
}

void ConnectOnce(const sockaddr_in& addr) {
  const int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) Die(std::string("socket: ") + std::strerror(errno));
  if (connect(s, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)) != 0) {
    Die(std::string("connect: ") + std::strerror(errno));
  }
  const linger reset = {1, 0};
  setsockopt(s, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
  close(s);
}

}  // namespace

int main(int argc, char** argv) {
  const Args args(argc, argv);
  args.RejectUnknown({"--count", "--warmup", "--label"}, {});
  const uint64_t count = args.GetU64("--count", 20000);
  const uint64_t warmup = args.GetU64("--warmup", 500);
  const std::string label = args.Get("--label").value_or("");
  if (count == 0) Die("--count: at least 1");

  sockaddr_in addr;
  const int l = Listen(&addr);
  std::thread acceptor([l, total = count + warmup] {
    for (uint64_t i = 0; i < total; ++i) {
      const int c = accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        Die(std::string("accept: ") + std::strerror(errno));
      }
      close(c);
    }
  });
  for (uint64_t i = 0; i < warmup; ++i) ConnectOnce(addr);
  const uint64_t start = NowNs();
  for (uint64_t i = 0; i < count; ++i) ConnectOnce(addr);
  const double seconds = static_cast<double>(NowNs() - start) / 1e9;
  acceptor.join();
  close(l);
  std::printf("{\"label\":\"%s\",\"connects\":%llu,\"seconds\":%.6f,\"per_second\":%.1f}\n",
              label.c_str(), static_cast<unsigned long long>(count), seconds,
              static_cast<double>(count) / seconds);
  return 0;
}
