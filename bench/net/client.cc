// xsock-bench-client: drives one benchmark connection to xsock-bench-server and reports
// one result, as a human-readable line on stderr and one JSON line on stdout.
//
//   --mode stream  one connection, fixed-size writes for --seconds or --bytes, then
//                  shutdown(SHUT_WR) and wait for the server's byte count: the rate counts
//                  bytes the server has read, not bytes sitting in buffers, and a count that
//                  differs from what was sent is reported as an error.
//   --mode rr      1-byte request, 1-byte response, --count times (or until --seconds);
//                  each echoed byte is checked.
#include <errno.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "bench/net/net_common.h"

namespace xsock::bench {
namespace {

constexpr char kUsage[] =
    "usage: xsock-bench-client --mode stream|rr --port PORT [options]\n"
    "  --host ADDR        server address (default 127.0.0.1)\n"
    "  --port PORT        server port (required)\n"
    "  --mode stream|rr   single-stream throughput, or 1-byte request/response\n"
    "  --seconds S        stream: duration (default 5 unless --bytes); rr: time cap\n"
    "  --bytes N          stream: stop after N bytes (whichever of --seconds/--bytes first)\n"
    "  --write-size N     stream: bytes per send() (default 65536)\n"
    "  --count N          rr: measured round trips (default 10000)\n"
    "  --warmup N         rr: unmeasured round trips first (default 100)\n"
    "  --latency-file F   rr: also write every round trip's latency (ns), one a line\n"
    "  --label TEXT       copied into the JSON output (e.g. the configuration's name)\n"
    "  --timeout S        give up (exit 3) after S seconds in total (default: 30 + --seconds)\n"
    "  --quiet            no human-readable line on stderr\n";

constexpr size_t kDefaultWriteSize = 64 * 1024;

struct Options {
  std::string host;
  uint16_t port = 0;
  std::string mode;
  double seconds = 0;  // 0: no time limit
  uint64_t bytes = 0;  // 0: no byte limit
  size_t write_size = kDefaultWriteSize;
  uint64_t count = 0;
  uint64_t warmup = 0;
  std::string label;
  std::string latency_file;
  bool quiet = false;
};

void OnWatchdog(int) {
  static const char kMsg[] = "xsock-bench-client: timed out\n";
  (void)!write(STDERR_FILENO, kMsg, sizeof(kMsg) - 1);
  _exit(3);
}

// Bounds the whole run, whatever the transport does: a benchmark must never hang.
void ArmWatchdog(double seconds) {
  signal(SIGALRM, OnWatchdog);
  alarm(static_cast<unsigned>(seconds) + 1);
}

[[noreturn]] void Fail(const std::string& what) { Die(what + ": " + std::strerror(errno)); }

int Connect(const Options& o) {
  socklen_t len = 0;
  const auto addr = MakeAddress(o.host, o.port, &len);
  if (!addr) Die("--host: not a numeric IPv4/IPv6 address: '" + o.host + "'");
  const int fd = socket(addr->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) Fail("socket");
  if (connect(fd, reinterpret_cast<const sockaddr*>(&*addr), len) != 0) {
    Fail("connect " + o.host + ":" + std::to_string(o.port));
  }
  return fd;
}

void SendMode(int fd, char mode) {
  if (!SendAll(fd, &mode, 1)) Fail("send mode byte");
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) out += c;
  }
  return out + "\"";
}

// CPU time (user + system) this process has used so far, in seconds.
double CpuSeconds() {
  rusage ru = {};
  getrusage(RUSAGE_SELF, &ru);
  auto sec = [](const timeval& tv) {
    return static_cast<double>(tv.tv_sec) + static_cast<double>(tv.tv_usec) / 1e6;
  };
  return sec(ru.ru_utime) + sec(ru.ru_stime);
}

std::string LabelSuffix(const Options& o) { return o.label.empty() ? "" : " " + o.label; }

int RunStream(const Options& o) {
  const int fd = Connect(o);
  SendMode(fd, kModeSink);
  std::vector<char> buf(o.write_size);
  for (size_t i = 0; i < buf.size(); ++i) buf[i] = static_cast<char>(i * 131 + 7);

  const double cpu_start = CpuSeconds();
  const uint64_t start = NowNs();
  const uint64_t deadline =
      o.seconds > 0 ? start + static_cast<uint64_t>(o.seconds * 1e9) : UINT64_MAX;
  uint64_t sent = 0;
  while (NowNs() < deadline && (o.bytes == 0 || sent < o.bytes)) {
    const size_t len = o.bytes == 0 ? buf.size() : std::min<uint64_t>(buf.size(), o.bytes - sent);
    if (!SendAll(fd, buf.data(), len)) Fail("send");
    sent += len;
  }
  if (shutdown(fd, SHUT_WR) != 0) Fail("shutdown(SHUT_WR)");
  uint8_t count_bytes[kSinkCountBytes];
  const ssize_t got = RecvAll(fd, count_bytes, sizeof(count_bytes));
  if (got < 0) Fail("recv byte count");
  if (got != static_cast<ssize_t>(sizeof(count_bytes))) {
    Die("server closed before sending its byte count (" + std::to_string(got) + " of 8 bytes)");
  }
  const double elapsed = static_cast<double>(NowNs() - start) / 1e9;
  const double cpu_pct = (CpuSeconds() - cpu_start) / elapsed * 100;
  close(fd);

  uint64_t delivered = 0;
  for (size_t i = 0; i < kSinkCountBytes; ++i) delivered |= uint64_t{count_bytes[i]} << (8 * i);
  if (delivered != sent) {
    Die("server read " + std::to_string(delivered) + " bytes but " + std::to_string(sent) +
        " were sent");
  }
  const double bps = static_cast<double>(delivered) / elapsed;
  if (!o.quiet) {
    std::fprintf(stderr, "stream%s: %.1f MB/s (%.3f Gbit/s), %.1f MB in %.3f s\n",
                 LabelSuffix(o).c_str(), bps / 1e6, bps * 8 / 1e9,
                 static_cast<double>(delivered) / 1e6, elapsed);
  }
  std::printf(
      "{\"mode\":\"stream\",\"label\":%s,\"bytes\":%llu,\"seconds\":%.6f,"
      "\"bytes_per_sec\":%.0f,\"gbit_per_sec\":%.4f,\"write_size\":%zu,\"cpu_pct\":%.1f}\n",
      JsonString(o.label).c_str(), static_cast<unsigned long long>(delivered), elapsed, bps,
      bps * 8 / 1e9, o.write_size, cpu_pct);
  return 0;
}

// One request/response; returns its latency in nanoseconds.
uint64_t RoundTrip(int fd, uint64_t i) {
  const char request = static_cast<char>('a' + i % 26);
  const uint64_t t0 = NowNs();
  if (!SendAll(fd, &request, 1)) Fail("send request " + std::to_string(i));
  char response = 0;
  const ssize_t n = RecvAll(fd, &response, 1);
  const uint64_t t1 = NowNs();
  if (n < 0) Fail("recv response " + std::to_string(i));
  if (n == 0) Die("server closed the connection at round trip " + std::to_string(i));
  if (response != request) {
    Die("round trip " + std::to_string(i) + ": sent '" + std::string(1, request) + "', got byte " +
        std::to_string(static_cast<unsigned char>(response)));
  }
  return t1 - t0;
}

// In measurement order, so stalls can be correlated with time.
void WriteLatencies(const std::string& path, const std::vector<uint64_t>& latency_ns) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) Fail("--latency-file " + path);
  for (uint64_t v : latency_ns) std::fprintf(f, "%llu\n", static_cast<unsigned long long>(v));
  if (std::fclose(f) != 0) Fail("--latency-file " + path);
}

double PercentileUs(const std::vector<uint64_t>& sorted_ns, double p) {
  const size_t idx = std::min(sorted_ns.size() - 1,
                              static_cast<size_t>(p * static_cast<double>(sorted_ns.size())));
  return static_cast<double>(sorted_ns[idx]) / 1e3;
}

int RunRr(const Options& o) {
  const int fd = Connect(o);
  SetNoDelay(fd);
  SendMode(fd, kModeEchoRr);
  for (uint64_t i = 0; i < o.warmup; ++i) RoundTrip(fd, i);

  std::vector<uint64_t> latency_ns;
  latency_ns.reserve(o.count);
  const double cpu_start = CpuSeconds();
  const uint64_t start = NowNs();
  const uint64_t deadline =
      o.seconds > 0 ? start + static_cast<uint64_t>(o.seconds * 1e9) : UINT64_MAX;
  while (latency_ns.size() < o.count && (latency_ns.empty() || NowNs() < deadline)) {
    latency_ns.push_back(RoundTrip(fd, latency_ns.size()));
  }
  const double elapsed = static_cast<double>(NowNs() - start) / 1e9;
  const double cpu_pct = (CpuSeconds() - cpu_start) / elapsed * 100;
  close(fd);

  if (!o.latency_file.empty()) WriteLatencies(o.latency_file, latency_ns);
  const size_t n = latency_ns.size();
  double sum_ns = 0;
  for (uint64_t v : latency_ns) sum_ns += static_cast<double>(v);
  std::sort(latency_ns.begin(), latency_ns.end());
  const double tps = static_cast<double>(n) / elapsed;
  const double mean_us = sum_ns / static_cast<double>(n) / 1e3;
  const double p50 = PercentileUs(latency_ns, 0.50);
  const double p99 = PercentileUs(latency_ns, 0.99);
  const double max_us = static_cast<double>(latency_ns.back()) / 1e3;
  if (!o.quiet) {
    std::fprintf(stderr,
                 "rr%s: %.0f transactions/s, latency mean %.1f us, p50 %.1f us, p99 %.1f us "
                 "(%zu round trips in %.3f s)\n",
                 LabelSuffix(o).c_str(), tps, mean_us, p50, p99, n, elapsed);
  }
  std::printf(
      "{\"mode\":\"rr\",\"label\":%s,\"transactions\":%zu,\"seconds\":%.6f,\"tps\":%.1f,"
      "\"lat_mean_us\":%.2f,\"lat_p50_us\":%.2f,\"lat_p99_us\":%.2f,\"lat_max_us\":%.2f,\"cpu_"
      "pct\":%.1f}\n",
      JsonString(o.label).c_str(), n, elapsed, tps, mean_us, p50, p99, max_us, cpu_pct);
  return 0;
}

Options Parse(const Args& args) {
  args.RejectUnknown({"--host", "--port", "--mode", "--seconds", "--bytes", "--write-size",
                      "--count", "--warmup", "--label", "--timeout", "--latency-file"},
                     {"--quiet"});
  Options o;
  o.host = args.Get("--host").value_or("127.0.0.1");
  const uint64_t port = args.GetU64("--port", 0);
  if (port == 0 || port > 65535) Die("--port: required, 1..65535");
  o.port = static_cast<uint16_t>(port);
  o.mode = args.Get("--mode").value_or("");
  if (o.mode != "stream" && o.mode != "rr") Die("--mode: 'stream' or 'rr' required");
  o.bytes = args.GetU64("--bytes", 0);
  const double default_seconds = o.mode == "stream" && o.bytes == 0 ? 5.0 : 0.0;
  o.seconds = args.GetDouble("--seconds", default_seconds);
  o.write_size = args.GetU64("--write-size", kDefaultWriteSize);
  if (o.write_size == 0 || o.write_size > (64u << 20)) Die("--write-size: 1..64 MiB");
  o.count = args.GetU64("--count", 10000);
  if (o.count == 0) Die("--count: at least 1");
  o.warmup = args.GetU64("--warmup", 100);
  o.label = args.Get("--label").value_or("");
  o.latency_file = args.Get("--latency-file").value_or("");
  o.quiet = args.Has("--quiet");
  ArmWatchdog(args.GetDouble("--timeout", 30 + o.seconds));
  return o;
}

int Main(int argc, char** argv) {
  const Args args(argc, argv);
  if (args.Has("--help") || args.Has("-h")) {
    std::fputs(kUsage, stdout);
    return 0;
  }
  const Options o = Parse(args);
  return o.mode == "stream" ? RunStream(o) : RunRr(o);
}

}  // namespace
}  // namespace xsock::bench

int main(int argc, char** argv) { return xsock::bench::Main(argc, argv); }
