// xsock-connect-check: connects a TCP socket to ADDR PORT and prints the outcome, "ok" or
// the errno name ("ECONNREFUSED"), as one line on stdout (one per --repeat). Blocking by
// default; with --nonblocking it expects EINPROGRESS (or an immediate result), polls for
// POLLOUT and reads SO_ERROR, as event-driven programs do. Exits 0 iff the outcome is --expect's.
// It writes nothing to stderr except usage errors, so a test can attribute every stderr
// line to the preload library.
#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdio>
#include <string>
#include <vector>

#include "tests/programs/common.h"

namespace {

using xsock::testprog::ErrnoName;

void Usage(FILE* out) {
  std::fprintf(out,
               "usage: xsock-connect-check [--nonblocking [--poll-in]] [--expect ok|ENAME]\n"
               "                           [--timeout S] [--repeat N] [--verbose] ADDR PORT\n"
               "\n"
               "Connects to ADDR PORT (IPv4 or IPv6 literal) and prints 'ok' or the errno name.\n"
               "\n"
               "  --nonblocking   nonblocking connect: EINPROGRESS, poll POLLOUT, SO_ERROR\n"
               "  --poll-in       poll for POLLIN|POLLOUT instead of POLLOUT alone\n"
               "  --expect X      outcome that makes the exit status 0 (default ok)\n"
               "  --timeout S     longest wait for a nonblocking connect (default 10);\n"
               "                  expiry is reported as ETIMEDOUT\n"
               "  --repeat N      make N connections one after the other (default 1); the\n"
               "                  outcome of each is printed, all must be the expected one\n"
               "  --verbose       also print each step (connect result, poll revents)\n"
               "\n"
               "exit: 0 outcome == expected, 1 otherwise, 2 usage\n");
}

std::string Revents(short r) {
  std::string s;
  auto add = [&](short bit, const char* name) {
    if (r & bit) s += s.empty() ? name : std::string("|") + name;
  };
  add(POLLIN, "POLLIN");
  add(POLLOUT, "POLLOUT");
  add(POLLERR, "POLLERR");
  add(POLLHUP, "POLLHUP");
  add(POLLRDHUP, "POLLRDHUP");
  add(POLLNVAL, "POLLNVAL");
  return s.empty() ? "0" : s;
}

// Returns 0 or the errno the connection attempt ended with.
int Connect(const xsock::testprog::Endpoint& peer, bool nonblocking, short poll_events,
            int timeout_ms, bool verbose) {
  const int fd =
      socket(peer.family(), SOCK_STREAM | SOCK_CLOEXEC | (nonblocking ? SOCK_NONBLOCK : 0), 0);
  if (fd < 0) return errno;
  int result = 0;
  if (connect(fd, peer.addr(), peer.len) != 0) result = errno;
  if (verbose) std::printf("connect: %s\n", result == 0 ? "0" : ErrnoName(result).c_str());
  if (nonblocking && result == EINPROGRESS) {
    pollfd p{fd, poll_events, 0};
    int n;
    do {
      n = poll(&p, 1, timeout_ms);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
      result = errno;
    } else if (n == 0) {
      result = ETIMEDOUT;
    } else {
      // xsock's channel raises readability and writability of a finished connect with two
      // kernel events, not one: after the first wake-up, wait for the other requested
      // event too (bounded by the same timeout), then report the settled mask.
      if ((p.revents & poll_events) != poll_events) {
        pollfd rest{fd, static_cast<short>(poll_events & ~p.revents), 0};
        while (poll(&rest, 1, timeout_ms) < 0 && errno == EINTR) {
        }
        pollfd now{fd, poll_events, 0};
        if (poll(&now, 1, 0) > 0) p.revents = now.revents;
      }
      if (verbose) std::printf("poll: %s\n", Revents(p.revents).c_str());
      socklen_t len = sizeof(result);
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &result, &len) != 0) result = errno;
      if (verbose) std::printf("SO_ERROR: %s\n", result == 0 ? "0" : ErrnoName(result).c_str());
    }
  }
  close(fd);
  return result;
}

}  // namespace

int main(int argc, char** argv) {
  bool nonblocking = false;
  bool verbose = false;
  std::string expect = "ok";
  int timeout_ms = 10000;
  uint64_t repeat = 1;
  short poll_events = POLLOUT;
  std::vector<std::string> positional;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--help" || arg == "-h") {
      Usage(stdout);
      return 0;
    } else if (arg == "--nonblocking") {
      nonblocking = true;
    } else if (arg == "--poll-in") {
      poll_events = POLLIN | POLLOUT;
    } else if (arg == "--verbose") {
      verbose = true;
    } else if (arg == "--expect" && has_value) {
      expect = argv[++i];
    } else if (arg == "--timeout" && has_value) {
      const auto t = xsock::testprog::ParseSize(argv[++i]);
      if (!t || *t > 3600) {
        std::fprintf(stderr, "xsock-connect-check: --timeout %s: not 0..3600 seconds\n", argv[i]);
        return 2;
      }
      timeout_ms = static_cast<int>(*t * 1000);
    } else if (arg == "--repeat" && has_value) {
      const auto n = xsock::testprog::ParseSize(argv[++i]);
      if (!n || *n < 1 || *n > 10000) {
        std::fprintf(stderr, "xsock-connect-check: --repeat %s: not 1..10000\n", argv[i]);
        return 2;
      }
      repeat = *n;
    } else if (!arg.empty() && arg[0] == '-') {
      std::fprintf(stderr, "xsock-connect-check: unknown or incomplete option '%s'\n", arg.c_str());
      Usage(stderr);
      return 2;
    } else {
      positional.push_back(arg);
    }
  }
  if (positional.size() != 2) {
    Usage(stderr);
    return 2;
  }
  const auto port = xsock::testprog::ParsePort(positional[1]);
  const auto peer = port ? xsock::testprog::ParseEndpoint(positional[0], *port) : std::nullopt;
  if (!peer) {
    std::fprintf(stderr, "xsock-connect-check: '%s %s' is not a numeric address and port\n",
                 positional[0].c_str(), positional[1].c_str());
    return 2;
  }

  bool all_expected = true;
  for (uint64_t i = 0; i < repeat; ++i) {
    const int err = Connect(*peer, nonblocking, poll_events, timeout_ms, verbose);
    const std::string outcome = err == 0 ? "ok" : ErrnoName(err);
    std::printf("%s\n", outcome.c_str());
    all_expected = all_expected && outcome == expect;
  }
  return all_expected ? 0 : 1;
}
